"""`stagecheck validate`: run the validation flow with a live stage display.

Exit 0 when every verdict passes, 1 when one fails, 2 on bad usage or configuration."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from stagecheck.model import ServiceReport, StageResult, Status
from stagecheck.redact import redact
from stagecheck.report import merge_not_run

MARK = {Status.PASS: "PASS", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "SKIP"}


class LiveDisplay:
    """Prints a line when a stage starts and when it ends; a table per service at the end."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.started: dict[tuple[str, str], float] = {}
        self.reports: list[tuple[ServiceReport, Path]] = []
        self.color = out.isatty() and not os.environ.get("NO_COLOR")

    def _c(self, status: Status, text: str) -> str:
        if not self.color:
            return text
        code = {Status.PASS: "32", Status.WARN: "33", Status.FAIL: "31", Status.SKIP: "90"}[status]
        return f"\033[{code}m{text}\033[0m"

    def _line(self, text: str) -> None:
        # write, not print: inside a flow run Prefect may capture print() into its logs
        self.out.write(redact(text) + "\n")
        self.out.flush()

    def stage_started(self, service: str, stage: str) -> None:
        self.started[(service, stage)] = time.monotonic()
        self._line(f"  .. {service:<20} {stage:<16} running")

    def stage_finished(self, service: str, result: StageResult) -> None:
        summary = result.summary if len(result.summary) < 110 else result.summary[:107] + "..."
        self._line(f"  {self._c(result.status, MARK[result.status])} {service:<20} {result.name:<16} "
                   f"{result.duration_s:6.1f}s  {summary}")

    def service_finished(self, report: ServiceReport, path: Path) -> None:
        self.reports.append((report, path))

    def table(self) -> str:
        lines = []
        for report, path in self.reports:
            verdict = Status.PASS if report.verdict.value == "pass" else Status.FAIL
            head = f"{report.service}: {self._c(verdict, report.verdict.value.upper())}"
            if report.decided_by:
                head += f" (gate: {report.decided_by})"
            lines += ["", head, f"  {'stage':<16} {'status':<6} {'time':>7}  summary"]
            for stage in report.stages:
                summary = stage.summary if len(stage.summary) < 90 else stage.summary[:87] + "..."
                lines.append(f"  {stage.name:<16} {self._c(stage.status, MARK[stage.status]):<6} "
                             f"{stage.duration_s:6.1f}s  {summary}")
            if report.rollback.needed or report.rollback.message:
                lines.append(f"  rollback: {report.rollback.message}")
            for reason in merge_not_run(report.reasons):
                lines.append(f"  reason: {reason}")
            for warning in report.warnings:
                lines.append(f"  warning: {warning}")
            lines.append(f"  report: {path}")
        return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stagecheck validate", description="Validate a release on Cloud Run staging.")
    parser.add_argument("--config", default=os.environ.get("STAGECHECK_CONFIG", "stagecheck.toml"),
                        help="stagecheck.toml to use (default: %(default)s)")
    parser.add_argument("--service", action="append", default=[], help="only this service (repeatable)")
    parser.add_argument("--sandbox", action="store_true", help="target the local sandbox (sandbox.json endpoints)")
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"))
    parser.add_argument("--git-sha", help="commit to validate (default: HEAD)")
    parser.add_argument("--traffic", help="traffic steps, e.g. 10,50,100 (default: from the config)")
    parser.add_argument("--hold", type=float, help="seconds to hold each canary step")
    parser.add_argument("--dry-run", action="store_true", help="syntax and build only")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Prefect's run logs too")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # without PREFECT_API_URL the run gets a temporary local server; give it time on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not args.verbose:  # the live display replaces Prefect's console log; the API still gets every log
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

    from flows.params import ValidationRequest
    from stagecheck.settings import ConfigError

    try:
        steps = [int(x) for x in args.traffic.split(",")] if args.traffic else None
        request = ValidationRequest(config=args.config, services=args.service, git_sha=args.git_sha,
                                    traffic_steps=steps, canary_hold_s=args.hold, dry_run=args.dry_run,
                                    sandbox=args.sandbox, state_dir=args.state_dir)
        settings = request.load()
        for name in request.services:
            settings.service(name)
    except ValueError as exc:
        print(f"stagecheck validate: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"stagecheck validate: {exc}", file=sys.stderr)
        return 2

    import asyncio

    from flows.validate import validate
    from stagecheck.concurrency import ensure_service_limits
    from stagecheck.progress import current_progress

    try:  # this run's setup: the per-service limits its flow acquires with strict=True
        asyncio.run(ensure_service_limits(request.services or [s.name for s in settings.services]))
    except Exception as exc:
        print(f"stagecheck validate: cannot set up the per-service concurrency limits: {exc}", file=sys.stderr)
        return 1

    display = LiveDisplay()
    names = ", ".join(request.services or [s.name for s in settings.services])
    print(f"stagecheck: validating {names} on {settings.project}/{settings.region}"
          f"{' (sandbox)' if args.sandbox else ''}", flush=True)
    token = current_progress.set(display)
    try:
        state: Any = asyncio.run(validate(request, return_state=True))  # type: ignore[arg-type]
    finally:
        current_progress.reset(token)
    print(redact(display.table()))
    if not display.reports:  # the flow died before any report: say why
        print(f"stagecheck validate: run failed before reporting: {redact(str(state.message))}", file=sys.stderr)
        return 1
    return 0 if state.is_completed() and all(r.verdict.value == "pass" for r, _ in display.reports) else 1
