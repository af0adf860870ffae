"""`stagecheck serve`: a local Prefect server, the validation deployments and a worker.

    stagecheck serve [up]   start the server (SQLite under STATE_DIR/prefect), create the `process`
                            work pool and the per-service concurrency limits, register the
                            deployments of prefect.yaml, start a worker; print the UI address (make serve)
    stagecheck serve down   stop the worker and the server, by pid (make down)
    stagecheck serve status what runs, where
    stagecheck serve register   only the setup + registration, on the Prefect API of the active Prefect
                            profile (PREFECT_API_URL, or `prefect profile use` / `prefect cloud login`)

The deployments are prefect.yaml's entries (the file `prefect deploy --all` reads), registered to run from
this clone on a `process` pool: the pool is --pool, else PREFECT_DEFAULT_WORK_POOL_NAME, else `stagecheck`.
`--param KEY=VALUE` (JSON values, as `prefect deploy --param`) changes the default parameters of the
validation deployments: `make serve` points them at the local sandbox that way.

Processes are detached (they outlive `make serve`) and recorded with pid and start time in
STATE_DIR/prefect/*.json, so `down` stops exactly them and never an unrelated process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from deployments.automations import Registered, register_automations
from deployments.definitions import (
    DEFAULT_POOL,
    PREFECT_YAML,
    RECOVERY_ENTRYPOINT,
    REPO_ROOT,
    Definition,
    DefinitionError,
    load_definitions,
    register,
    service_names,
)
from localenv.processes import (
    ProcessRecord,
    is_running,
    last_line,
    read_record,
    spawn_detached,
    stop_process,
    wait_until,
    write_record,
)

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
SERVER_READY_TIMEOUT_S = 120.0  # a cold start (migrations) takes 5-30 s on a busy 2-CPU machine
WORKER_READY_TIMEOUT_S = 60.0
WORKER_QUERY_SECONDS = 5.0


class ServeError(Exception):
    """Something the person running `stagecheck serve` must fix; the message says what."""


class ServeUsageError(ServeError):
    """Bad input: a flag or the prefect.yaml (exit 2)."""


@dataclass(frozen=True)
class Layout:
    """Where the local Prefect keeps its state: STATE_DIR/prefect/."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir.resolve() / "prefect"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def database(self) -> Path:
        return self.root / "prefect.db"

    @property
    def server_record(self) -> Path:
        return self.root / "server.json"

    @property
    def worker_record(self) -> Path:
        return self.root / "worker.json"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def worker_log(self) -> Path:
        return self.root / "worker.log"

    @property
    def info(self) -> Path:
        return self.root / "serve.json"


def api_url(port: int, host: str = HOST) -> str:
    return f"http://{host}:{port}/api"


def prefect_env(layout: Layout, url: str, base: Mapping[str, str], database_url: str | None = None,
                **extra: str) -> dict[str, str]:
    """Pure: the environment of the server, the worker and the flow runs it starts (the server's database:
    SQLite under the layout, or `database_url`, e.g. a team server's PostgreSQL)."""
    env = dict(base)
    no_proxy = {p for p in env.get("NO_PROXY", "").split(",") if p} | {"127.0.0.1", "localhost"}
    env.update(
        PREFECT_HOME=str(layout.home),
        PREFECT_API_URL=url,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=database_url or f"sqlite+aiosqlite:///{layout.database}",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        NO_PROXY=",".join(sorted(no_proxy)),
        **extra,
    )
    return env


def _env_argv(env: Mapping[str, str], changed_from: Mapping[str, str]) -> list[str]:
    """`env K=V ...` for the variables that differ from the current process's (spawn_detached
    inherits the caller's environment; `env` execs in place, so the recorded pid is the program's)."""
    return ["env", *(f"{k}={v}" for k, v in env.items() if changed_from.get(k) != v)]


def _prefect_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        resp = httpx.get(f"{url}/health", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.text.strip() == "true"


# ------------------------------------------------------------------ server


def start_server(layout: Layout, port: int, *, timeout_s: float = SERVER_READY_TIMEOUT_S,
                 database_url: str | None = None) -> ProcessRecord:
    """Start `prefect server start` on 127.0.0.1:port (or reuse ours if it already runs there)."""
    url = api_url(port)
    existing = read_record(layout.server_record)
    if existing is not None and is_running(existing) and healthy(url):
        return existing
    if healthy(url):
        raise ServeError(f"another Prefect server already answers on {url} (not started from {layout.root}); "
                         "stop it or pick another port with --port")
    layout.home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(layout, url, os.environ, database_url)
    argv = _env_argv(env, os.environ) + _prefect_argv("server", "start", "--host", HOST, "--port", str(port))
    record = spawn_detached("prefect-server", argv, layout.server_log)
    write_record(layout.server_record, record)
    ready = wait_until(lambda: healthy(url, timeout=1.0) or not is_running(record), timeout_s)
    if not ready or not is_running(record):
        stop_process(record)
        raise ServeError(f"the Prefect server did not become healthy on {url} within {timeout_s:g} s: "
                         f"{last_line(layout.server_log) or 'no output'} (log: {layout.server_log})")
    return record


def start_worker(layout: Layout, url: str, pool: str = DEFAULT_POOL, *, name: str = "stagecheck-local",
                 query_seconds: float = WORKER_QUERY_SECONDS, worker_type: str = "process",
                 limit: int | None = None) -> ProcessRecord:
    """Start `prefect worker start --pool POOL --type process` (or `worker_type`, e.g. docker; or reuse ours);
    `limit`: at most that many flow runs at once on this worker (`--limit`; the others stay for other workers)."""
    existing = read_record(layout.worker_record)
    if existing is not None and is_running(existing):
        return existing
    env = prefect_env(layout, url, os.environ, PREFECT_WORKER_QUERY_SECONDS=f"{query_seconds:g}",
                      PREFECT_WORKER_PREFETCH_SECONDS="1")
    argv = _env_argv(env, os.environ) + _prefect_argv("worker", "start", "--pool", pool, "--type", worker_type,
                                                       "--name", name,
                                                       *(("--limit", str(limit)) if limit is not None else ()))
    record = spawn_detached("prefect-worker", argv, layout.worker_log)
    write_record(layout.worker_record, record)
    return record


async def wait_worker_online(pool: str, record: ProcessRecord, log: Path,
                             timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
    """Until the pool reports READY (a worker heartbeat arrived); ServeError if the worker died."""
    from prefect import get_client
    from prefect.client.schemas.objects import WorkPoolStatus

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            if not is_running(record):
                raise ServeError(f"the worker exited: {last_line(log) or 'no output'} (log: {log})")
            work_pool = await client.read_work_pool(pool)
            if work_pool.status == WorkPoolStatus.READY:
                return
            if time.monotonic() > deadline:
                raise ServeError(f"no worker came online for pool {pool!r} within {timeout_s:g} s (log: {log})")
            await asyncio.sleep(0.2)


# ------------------------------------------------------------------ stopping


def stop_worker(record: ProcessRecord) -> None:
    """A running `prefect worker start` does not exit on SIGTERM alone: SIGTERM, then SIGINT, then SIGKILL."""
    stop_process(record, signals=(signal.SIGTERM, signal.SIGINT, signal.SIGKILL), wait_s=5.0)


def down(layout: Layout) -> list[str]:
    """Stop what `up` started for this state dir; returns what was stopped."""
    stopped = []
    for path, stop in ((layout.worker_record, stop_worker), (layout.server_record, stop_process)):
        record = read_record(path)
        if record is not None:
            if is_running(record):
                stop(record)
                stopped.append(f"{record.name} (pid {record.pid})")
            path.unlink(missing_ok=True)
    layout.info.unlink(missing_ok=True)
    return stopped


# ------------------------------------------------------------------ setup on an API


async def ensure_pool(pool: str) -> None:
    """Create the `process` work pool with the process worker's default job template, if missing."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(
                name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
                description="stagecheck validations, run as local processes"))


@dataclass(frozen=True)
class SetupResult:
    deployment_ids: list[UUID]  # one per definition, in order
    limits: list[str]
    without_services: list[str]  # validation deployments whose config named no service (missing, unreadable)
    recovery_id: UUID | None = None  # the recovery deployment (run by the crash trigger)
    automations: Registered | None = None  # prefect.yaml's `automations:` (failed verdicts -> notification)


async def setup(definitions: tuple[Definition, ...] | list[Definition], *, pool: str = DEFAULT_POOL,
                repo_root: Path = REPO_ROOT) -> SetupResult:
    """On the configured API: the work pool, the per-service limits, the deployments."""
    from stagecheck.concurrency import ensure_service_limits

    await ensure_pool(pool)
    services = {d.name: service_names(d, repo_root) for d in definitions if d.validates}
    limits = await ensure_service_limits([name for names in services.values() for name in names])
    ids = await register(definitions, work_pool=pool, repo_root=repo_root)
    recovery = [i for d, i in zip(definitions, ids, strict=True) if d.entrypoint == RECOVERY_ENTRYPOINT]
    automations = await register_automations(repo_root / PREFECT_YAML.name)
    return SetupResult(deployment_ids=ids, limits=limits,
                       without_services=[name for name, names in services.items() if not names],
                       recovery_id=recovery[0] if recovery else None, automations=automations)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """Pure: `KEY=VALUE` pairs (a JSON value, else the text) as `prefect deploy --param` reads them; ServeError
    naming a pair without `=`."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ServeUsageError(f"--param {pair!r}: KEY=VALUE, e.g. sandbox=true")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def definitions_for(path: Path, params: dict[str, Any]) -> tuple[Definition, ...]:
    """prefect.yaml's deployments, the validation ones with `params` over their default parameters."""
    from flows.params import ValidationRequest

    unknown = sorted(set(params) - set(ValidationRequest.model_fields))
    if unknown:
        raise ServeUsageError(f"--param {unknown[0]}: not a parameter of the validation flow "
                         f"({', '.join(ValidationRequest.model_fields)})")
    return tuple(d.with_parameters(params) if d.validates else d for d in load_definitions(path))


def default_pool() -> str:
    """PREFECT_DEFAULT_WORK_POOL_NAME (the active profile's, as `prefect deploy` reads it), else `stagecheck`."""
    from prefect.settings import get_current_settings

    return get_current_settings().deployments.default_work_pool_name or DEFAULT_POOL


def run_with_api(url: str, coro_factory):  # type: ignore[no-untyped-def]
    """Run an async setup step against `url` (the settings of this process may point elsewhere)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return asyncio.run(coro_factory())


# ------------------------------------------------------------------ CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stagecheck serve", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""environment:
  STAGECHECK_STATE_DIR             default of --state-dir
  PREFECT_DEFAULT_WORK_POOL_NAME   default of --pool (else stagecheck)
  PREFECT_API_URL, PREFECT_API_KEY, PREFECT_PROFILE   `register`: the API (default: the active profile's)

exit status:
  0  done
  1  the Prefect server, API or worker failed (the log named)
  2  bad usage, or an unusable prefect.yaml or --param (named)""")
    parser.add_argument("action", nargs="?", default="up", choices=["up", "down", "status", "register"])
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--prefect-file", type=Path, default=PREFECT_YAML,
                        help="the deployments (default: prefect.yaml at the repository root)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a default parameter of the validation deployments (repeatable; JSON values)")
    parser.add_argument("--pool", default=None,
                        help=f"process work pool (default: PREFECT_DEFAULT_WORK_POOL_NAME, else {DEFAULT_POOL})")
    parser.add_argument("--no-worker", action="store_true", help="do not start a worker")
    return parser.parse_args(argv)


def _describe(definition: Definition) -> str:
    """Pure: one line on a registered deployment: its schedules (on/off) and triggers."""
    schedules = ", ".join(f"{s.get('cron') or s.get('interval') or s.get('rrule')} "
                          f"({'on' if s.get('active', True) else 'off'})" for s in definition.schedules or [])
    triggers = len(definition.triggers or [])
    return f"{schedules or 'no schedule'}, {triggers} trigger{'s' if triggers != 1 else ''}"


def _up(args: argparse.Namespace, layout: Layout) -> int:
    definitions = definitions_for(args.prefect_file, parse_params(args.param))
    pool = args.pool or default_pool()
    url = api_url(args.port)
    print(f"stagecheck serve: starting the Prefect server on {url} (state: {layout.root}) ...", flush=True)
    start_server(layout, args.port)
    done = run_with_api(url, lambda: setup(definitions, pool=pool))
    _print_setup(definitions, done, pool)
    if not args.no_worker:
        worker = start_worker(layout, url, pool)
        run_with_api(url, lambda: wait_worker_online(pool, worker, layout.worker_log))
        print(f"  worker on pool {pool!r} (pid {worker.pid}, log {layout.worker_log})")
    ui = url.removesuffix("/api")
    layout.info.write_text(json.dumps({"api_url": url, "ui_url": ui, "pool": pool}) + "\n")
    first = next((d.name for d in definitions if d.validates), definitions[0].name)
    print(f"\nPrefect UI: {ui}\n  run from the UI: Deployments -> stagecheck-validate/<name> -> Run -> Custom run\n"
          f"  CLI: PREFECT_API_URL={url} prefect deployment run 'stagecheck-validate/{first}'\n"
          "  stop: make down", flush=True)
    return 0


def _print_setup(definitions: tuple[Definition, ...], done: SetupResult, pool: str) -> None:
    print(f"  work pool {pool!r} (process); concurrency limits: {', '.join(done.limits) or 'none'}")
    for definition, deployment_id in zip(definitions, done.deployment_ids, strict=True):
        print(f"  deployment {definition.name} ({definition.entrypoint}): {_describe(definition)} [{deployment_id}]")
    if done.automations is not None:
        for name in done.automations.names:
            print(f"  automation {name!r}")
        for why in done.automations.skipped:
            print(f"  note: {why}")
    for name in done.without_services:
        definition = next(d for d in definitions if d.name == name)
        where = definition.parameters.get("repository") or definition.parameters.get("config")
        print(f"  note: {name!r}: no services read from {where}; its runs create their services' limits",
              file=sys.stderr)


def _status(layout: Layout) -> int:
    lines = []
    for path in (layout.server_record, layout.worker_record):
        record = read_record(path)
        if record is not None:
            lines.append(f"{record.name}: {'running' if is_running(record) else 'dead'} (pid {record.pid}, log {record.log})")
    with contextlib.suppress(OSError, ValueError):
        lines.append(f"UI: {json.loads(layout.info.read_text())['ui_url']}")
    print("\n".join(lines) if lines else f"nothing started from {layout.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    layout = Layout(Path(args.state_dir))
    try:
        if args.action == "down":
            stopped = down(layout)
            print("stagecheck serve: stopped " + (", ".join(stopped) if stopped else "nothing (not running)"))
            return 0
        if args.action == "status":
            return _status(layout)
        if args.action == "register":
            from prefect.settings import get_current_settings

            url = get_current_settings().api.url  # the active profile's, or PREFECT_API_URL
            if not url:
                raise ServeUsageError("no Prefect API: set PREFECT_API_URL, or `prefect profile use` a profile that has "
                                 "one (or `prefect cloud login`)")
            definitions = definitions_for(args.prefect_file, parse_params(args.param))
            pool = args.pool or default_pool()
            done = run_with_api(url, lambda: setup(definitions, pool=pool))
            _print_setup(definitions, done, pool)
            return 0
        return _up(args, layout)
    except (ServeUsageError, DefinitionError) as exc:  # bad input: the file or a flag, named
        print(f"stagecheck serve: {exc}", file=sys.stderr)
        return 2
    except ServeError as exc:
        print(f"stagecheck serve: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"stagecheck serve: the Prefect API did not answer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
