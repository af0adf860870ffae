"""`stagecheck serve`: a local Prefect server, the validation deployments and a worker.

    stagecheck serve [up]   start the server (SQLite under STATE_DIR/prefect), create the `process`
                            work pool and the per-service concurrency limits, register the
                            deployments, start a worker; print the UI address (make serve)
    stagecheck serve down   stop the worker and the server, by pid (make down)
    stagecheck serve status what runs, where
    stagecheck serve register   only the setup + registration, on the Prefect API in PREFECT_API_URL
                            (a team server or Prefect Cloud; the worker is theirs)

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
from uuid import UUID

import httpx

from deployments.automations import Registered, register_automations
from deployments.definitions import (
    DEFAULT_POOL,
    DEFAULT_TARGETS_FILE,
    RECOVERY_DEPLOYMENT,
    RECOVERY_FLOW_NAME,
    REPO_ROOT,
    DefinitionError,
    Target,
    load_targets,
    register,
    register_recovery,
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
                 query_seconds: float = WORKER_QUERY_SECONDS, worker_type: str = "process") -> ProcessRecord:
    """Start `prefect worker start --pool POOL --type process` (or `worker_type`, e.g. docker; or reuse ours)."""
    existing = read_record(layout.worker_record)
    if existing is not None and is_running(existing):
        return existing
    env = prefect_env(layout, url, os.environ, PREFECT_WORKER_QUERY_SECONDS=f"{query_seconds:g}",
                      PREFECT_WORKER_PREFETCH_SECONDS="1")
    argv = _env_argv(env, os.environ) + _prefect_argv("worker", "start", "--pool", pool, "--type", worker_type,
                                                       "--name", name)
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
    deployment_ids: list[UUID]
    limits: list[str]
    without_services: list[str]  # targets whose config named no service (missing or unreadable)
    recovery_id: UUID | None = None  # the recovery deployment (run by the crash trigger)
    automations: Registered | None = None  # prefect.yaml's `automations:` (failed verdicts -> notification)


async def setup(targets: tuple[Target, ...], *, pool: str = DEFAULT_POOL, repo_root: Path = REPO_ROOT) -> SetupResult:
    """On the configured API: the work pool, the per-service limits, the deployments."""
    from stagecheck.concurrency import ensure_service_limits

    await ensure_pool(pool)
    services = {target.name: service_names(target, repo_root) for target in targets}
    limits = await ensure_service_limits([name for names in services.values() for name in names])
    ids = await register(targets, work_pool=pool, repo_root=repo_root)
    recovery_id = await register_recovery(work_pool=pool, repo_root=repo_root)
    automations = await register_automations(repo_root / "prefect.yaml")
    return SetupResult(deployment_ids=ids, limits=limits,
                       without_services=[name for name, names in services.items() if not names],
                       recovery_id=recovery_id, automations=automations)


def run_with_api(url: str, coro_factory):  # type: ignore[no-untyped-def]
    """Run an async setup step against `url` (the settings of this process may point elsewhere)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return asyncio.run(coro_factory())


# ------------------------------------------------------------------ CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stagecheck serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="up", choices=["up", "down", "status", "register"])
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--targets", type=Path, default=DEFAULT_TARGETS_FILE, help="deployment targets (TOML)")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="process work pool (default: %(default)s)")
    parser.add_argument("--no-worker", action="store_true", help="do not start a worker")
    return parser.parse_args(argv)


def _up(args: argparse.Namespace, layout: Layout) -> int:
    targets = load_targets(args.targets)
    url = api_url(args.port)
    print(f"stagecheck serve: starting the Prefect server on {url} (state: {layout.root}) ...", flush=True)
    start_server(layout, args.port)
    done = run_with_api(url, lambda: setup(targets, pool=args.pool))
    _print_setup(targets, done, args.pool)
    for target, deployment_id in zip(targets, done.deployment_ids, strict=True):
        schedule = (f"cron {target.cron} {target.timezone} ({'on' if target.schedule_active else 'off'})"
                    if target.cron else "no schedule")
        merge = "merge-triggered" if target.triggered_by_merges else "no merge trigger"
        print(f"  deployment {target.full_name}: {schedule}, {merge} [{deployment_id}]")
    if not args.no_worker:
        worker = start_worker(layout, url, args.pool)
        run_with_api(url, lambda: wait_worker_online(args.pool, worker, layout.worker_log))
        print(f"  worker on pool {args.pool!r} (pid {worker.pid}, log {layout.worker_log})")
    ui = url.removesuffix("/api")
    layout.info.write_text(json.dumps({"api_url": url, "ui_url": ui, "pool": args.pool}) + "\n")
    print(f"\nPrefect UI: {ui}\n  run from the UI: Deployments -> stagecheck-validate/<target> -> Run -> Custom run\n"
          f"  CLI: PREFECT_API_URL={url} prefect deployment run 'stagecheck-validate/{targets[0].name}'\n"
          "  stop: make down", flush=True)
    return 0


def _print_setup(targets: tuple[Target, ...], done: SetupResult, pool: str) -> None:
    print(f"  work pool {pool!r} (process); concurrency limits: {', '.join(done.limits) or 'none'}")
    print(f"  deployment {RECOVERY_FLOW_NAME}/{RECOVERY_DEPLOYMENT}: runs when a validation crashes "
          f"[{done.recovery_id}]")
    if done.automations is not None:
        for name in done.automations.names:
            print(f"  automation {name!r}")
        for why in done.automations.skipped:
            print(f"  note: {why}")
    for name in done.without_services:
        target = next(t for t in targets if t.name == name)
        print(f"  warning: target {name!r}: no services found in {target.request.config} (missing or invalid?); "
              "its runs fail at the lock until the services' limits exist", file=sys.stderr)


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
            url = os.environ.get("PREFECT_API_URL")
            if not url:
                raise ServeError("PREFECT_API_URL is not set: point it at your Prefect server or Cloud workspace")
            targets = load_targets(args.targets)
            done = run_with_api(url, lambda: setup(targets, pool=args.pool))
            _print_setup(targets, done, args.pool)
            for target, deployment_id in zip(targets, done.deployment_ids, strict=True):
                print(f"  registered {target.full_name} [{deployment_id}]")
            return 0
        return _up(args, layout)
    except (ServeError, DefinitionError) as exc:
        print(f"stagecheck serve: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"stagecheck serve: the Prefect API did not answer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
