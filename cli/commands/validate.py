"""`stagecheck validate`: run the validation flow with a live stage display.

Exit 0 when every verdict passes, 1 when one fails, 2 on bad usage or configuration. With `--format json` the
verdicts and report paths are one JSON document on stdout and the progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from cli.commands.display import LiveDisplay
from stagecheck.redact import redact


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line naming the flag, not the whole usage
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


EPILOG = """environment:
  STAGECHECK_CONFIG        default of --config
  STAGECHECK_STATE_DIR     default of --state-dir (where the sandbox writes sandbox.json)
  STAGECHECK_CACHE_DIR     the syntax cache and the per-run checkouts (default ~/.cache/stagecheck)
  STAGECHECK_GIT_REMOTE    the remote a commit is fetched from (default: the clone's origin)
  STAGECHECK_FLOW_TIMEOUT_S  the flow's timeout, a backstop (default 30 hours)
  STAGECHECK_<KEY>, STAGECHECK_<SECTION>__<KEY>   any config key, e.g. STAGECHECK_PROBES__DEADLINE_S=90
  STAGECHECK_REGISTRY_USERNAME, STAGECHECK_REGISTRY_PASSWORD   a registry login that is not Google's
  PREFECT_API_URL, PREFECT_API_KEY, PREFECT_PROFILE   the Prefect API (default: the active profile's, else a
                           temporary local server); GOOGLE_APPLICATION_CREDENTIALS / ADC for Google Cloud
  DOCKER_HOST              the Docker Engine of the build stage

exit status:
  0  every verdict passed
  1  a verdict failed, or the run could not start (Prefect API, concurrency limits)
  2  bad usage or configuration (the flag or field named with its rule; nothing built or deployed)"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="stagecheck validate", description="Validate a release on Cloud Run staging.",
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    parser.add_argument("--config", default=os.environ.get("STAGECHECK_CONFIG", "stagecheck.toml"),
                        help="stagecheck.toml to use (default: %(default)s; with --repository: its path in there)")
    parser.add_argument("--repository", help="git URL or absolute path of the service repository to validate "
                                             "(default: the repository of the working directory)")
    parser.add_argument("--repository-credentials", metavar="BLOCK",
                        help="Prefect block with the repository's HTTPS token (a Secret's name, or type/name)")
    parser.add_argument("--service", action="append", default=[], help="only this service (repeatable)")
    parser.add_argument("--sandbox", action="store_true", help="target the local sandbox (sandbox.json endpoints)")
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"))
    parser.add_argument("--git-sha", help="commit to validate (default: HEAD)")
    parser.add_argument("--git-ref", help="branch or ref the commit came from (in the report; with --repository "
                                          "and no --git-sha: the ref to check out)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: the verdicts and report paths as JSON on stdout, the progress on stderr")
    parser.add_argument("--traffic", help="traffic steps, e.g. 10,50,100 (default: from the config)")
    parser.add_argument("--hold", help="seconds to hold each canary step")
    parser.add_argument("--bake", help="seconds to watch the release after the last step")
    parser.add_argument("--analysis", action=argparse.BooleanOptionalAction, default=None,
                        help="compare the candidate with the baseline under load during the bake (default: as the "
                             "config's [analysis] section says)")
    parser.add_argument("--dry-run", action="store_true", help="syntax and build only")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect's run logs too")
    parser.add_argument("--keep-server", action="store_true",
                        help="without PREFECT_API_URL: start a background Prefect server that later runs reuse "
                             "(see `stagecheck prefect-server`)")
    return parser.parse_args(argv)


class UsageError(Exception):
    """A flag is invalid; the message names the flag and its rule."""


# ValidationRequest field -> the flag that sets it
FLAGS = {"config": "--config", "services": "--service", "git_sha": "--git-sha", "traffic_steps": "--traffic",
         "canary_hold_s": "--hold", "bake_s": "--bake", "analysis": "--analysis", "state_dir": "--state-dir", "dry_run": "--dry-run",
         "sandbox": "--sandbox", "git_ref": "--git-ref", "repository": "--repository",
         "repository_credentials": "--repository-credentials"}


def parse_traffic(text: str) -> list[int]:
    """`10,50,100` -> [10, 50, 100], checked against the traffic plan's rules (UsageError naming --traffic)."""
    from pydantic import ValidationError

    from stagecheck.settings import TrafficPlan, describe_error

    try:
        steps = [int(part.strip()) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--traffic {text!r}: whole percents separated by commas, like 10,50,100") from None
    try:
        TrafficPlan(steps=tuple(steps))
    except ValidationError as exc:
        raise UsageError(f"--traffic {text}: {describe_error(exc.errors()[0])}") from None
    return steps


def parse_hold(text: str, flag: str = "--hold") -> float:
    """Seconds (a canary hold, the bake): a number from 0 to the wait bound (UsageError naming the flag)."""
    from stagecheck.settings import MAX_WAIT_S

    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: seconds, a number like 30") from None
    if not 0 <= value <= MAX_WAIT_S:  # also refuses nan and inf
        raise UsageError(f"{flag} {text}: seconds from 0 to {MAX_WAIT_S:g}")
    return value


def build_request(args: argparse.Namespace) -> Any:
    """The flow's ValidationRequest from the flags; UsageError naming the flag and its rule."""
    import re

    from pydantic import ValidationError

    from flows.params import ValidationRequest
    from stagecheck.settings import describe_error

    if args.git_sha is not None and not re.fullmatch(r"[0-9a-f]{7,40}", args.git_sha):
        raise UsageError(f"--git-sha {args.git_sha[:60]!r}: a commit SHA, 7 to 40 lowercase hex digits")
    if args.git_ref is not None and (not re.fullmatch(r"[A-Za-z0-9._/+-]{1,255}", args.git_ref) or ".." in args.git_ref):
        raise UsageError(f"--git-ref {args.git_ref[:60]!r}: a git ref, e.g. main or refs/heads/main")
    if args.repository is not None:
        from stagecheck.repository import RepositoryError, check_url

        try:
            check_url(args.repository)
        except RepositoryError as exc:
            raise UsageError(f"--repository: {str(exc).removeprefix('repository').lstrip(': ')}") from None
    steps = parse_traffic(args.traffic) if args.traffic is not None else None
    hold = parse_hold(args.hold) if args.hold is not None else None
    bake = parse_hold(args.bake, "--bake") if args.bake is not None else None
    try:
        return ValidationRequest(config=args.config, services=args.service, git_sha=args.git_sha,
                                 git_ref=args.git_ref, traffic_steps=steps, canary_hold_s=hold, bake_s=bake, analysis=args.analysis,
                                 dry_run=args.dry_run, sandbox=args.sandbox, state_dir=args.state_dir,
                                 repository=args.repository, repository_credentials=args.repository_credentials)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise UsageError(f"{FLAGS.get(field, field)}: {describe_error(err)}") from None


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    from cli.main import offline_defaults

    offline_defaults(os.environ)  # before Prefect is imported (also when called without cli.main)
    # without PREFECT_API_URL the run gets a temporary local server; give it time on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not args.verbose:  # the live display replaces Prefect's console log; the API still gets every log
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

    from stagecheck.settings import ConfigError, check_sources

    try:
        request = build_request(args)
        settings = None
        if not request.repository:  # else the config is in that repository: the run reads it at the commit
            settings = request.load()
            try:
                chosen = [settings.service(name) for name in request.services]
            except ConfigError as exc:
                raise UsageError(f"--service: {exc}") from None
            check_sources(settings, chosen or None)
    except (UsageError, ConfigError) as exc:
        print(f"stagecheck validate: {exc}", file=sys.stderr)
        return 2

    from stagecheck.prefect_server import TemporaryServerError

    try:
        server = temporary_api(args.state_dir, keep=args.keep_server)
    except TemporaryServerError as exc:
        print(f"stagecheck validate: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, request, settings)
    finally:
        if server is not None:
            _drain_prefect_workers()  # logs and events reach the server before it stops
            server.stop()


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for drain in (APILogWorker.drain_all, EventsWorker.drain_all):
        try:
            drain(timeout=10)
        except Exception:  # nothing started, or the server is already gone: nothing to flush
            pass


def temporary_api(state_dir: str = ".stagecheck", keep: bool = False) -> Any:
    """Without a configured Prefect API: the background server recorded in the state dir when one runs
    (started with `keep`), else a temporary server that dies with this process (SIGKILL included);
    Prefect's own temporary server would outlive a killed CLI. The temporary server is returned (to stop)."""
    from prefect.settings import get_current_settings

    current = get_current_settings()
    if current.api.url or not current.server.ephemeral.enabled:
        return None
    from prefect.context import refresh_global_settings_context

    from stagecheck.prefect_server import (
        find_background_server,
        start_background_server,
        start_temporary_server,
    )

    timeout = float(current.server.ephemeral.startup_timeout_seconds)
    background = start_background_server(state_dir, timeout)[0] if keep else find_background_server(state_dir)
    server = None
    if background is not None:
        os.environ["PREFECT_API_URL"] = background.api_url
        os.environ.setdefault("PREFECT_UI_URL", background.ui_url)  # the report's and the console's run link
    else:
        server = start_temporary_server(timeout)
        os.environ["PREFECT_API_URL"] = server.api_url
    refresh_global_settings_context()
    return server


def _run(args: argparse.Namespace, request: Any, settings: Any) -> int:
    import asyncio

    from flows.validate import validate
    from stagecheck.concurrency import ensure_service_limits
    from stagecheck.progress import current_progress

    # --format json: stdout carries only the JSON document, the progress goes to stderr
    out = sys.stderr if args.format == "json" else sys.stdout
    names = request.services or ([s.name for s in settings.services] if settings else [])
    try:  # this run's setup: the per-service limits its flow acquires with strict=True (a dry run takes none;
        if not request.dry_run and names:  # a run of another repository creates its services' limits itself)
            asyncio.run(ensure_service_limits(names))
    except Exception as exc:
        print(f"stagecheck validate: cannot set up the per-service concurrency limits: {exc}", file=sys.stderr)
        return 1

    display = LiveDisplay(out)
    where = f"{settings.project}/{settings.region}" if settings else f"{request.repository} ({request.config})"
    print(f"stagecheck: validating {', '.join(names) or 'every service'} of {where}"
          f"{' (sandbox)' if args.sandbox else ''}", file=out, flush=True)
    token = current_progress.set(display)
    try:
        with display:
            state: Any = asyncio.run(validate(**request.parameters(), return_state=True))  # type: ignore[arg-type]
    finally:
        current_progress.reset(token)
    display.print_summary()
    passed = state.is_completed() and bool(display.reports) and all(r.verdict.value == "pass"
                                                                     for r, _ in display.reports)
    if args.format == "json":
        print(json.dumps(verdict_document(display.reports, passed, None if display.reports
                                          else redact(str(state.message)))), flush=True)
    else:
        for link in dict.fromkeys(r.flow_run_url for r, _ in display.reports if r.flow_run_url):
            print(f"Prefect UI: {link}", flush=True)
    if not display.reports:  # the flow died before any report: say why
        print(f"stagecheck validate: run failed before reporting: {redact(str(state.message))}", file=sys.stderr)
        return 1
    return 0 if passed else 1


def verdict_document(reports: list[Any], passed: bool, reason: str | None) -> dict[str, Any]:
    """Pure: what `--format json` prints: the run's verdict, each service's verdict and report path, and why a
    run that reported nothing failed."""
    doc: dict[str, Any] = {"verdict": "pass" if passed else "fail", "services": [
        {"service": r.service, "verdict": r.verdict.value, "decided_by": r.decided_by, "git_sha": r.git_sha,
         "report": str(path)} for r, path in reports]}
    if reason is not None:
        doc["reason"] = reason
    return doc
