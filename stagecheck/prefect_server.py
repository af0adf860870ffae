"""A temporary local Prefect server for one CLI run, which dies with the CLI however the CLI ends.

Without `PREFECT_API_URL`, Prefect starts a temporary server by itself (`SubprocessASGIServer` in
prefect/server/api/server.py: `python -m uvicorn ... prefect.server.api.server:create_app`) and stops
it from an `atexit` hook. A CLI killed with SIGKILL never runs that hook, and the uvicorn child keeps
running, orphaned. So `stagecheck validate` starts the same server itself, as a child with a lifeline:

- the child's stdin is a pipe whose write end exists only in the CLI; when the CLI dies, by any
  means, the kernel closes it, the child reads EOF and shuts down (SIGTERM to itself, then a hard
  exit after a grace period if the graceful shutdown hangs);
- on Linux the child also asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG),
  and checks that its parent is still the CLI after asking (no window between fork and prctl).

Run as `python -m stagecheck.prefect_server --port N --parent PID` (by `start_temporary_server`).

Starting that server costs seconds of CPU (importing the Prefect server is most of it) and, on a busy
machine, tens of seconds of wall time, on every run. So a *background* server can be kept instead
(`stagecheck prefect-server start`, or `stagecheck validate --keep-server`): the same server, in its
own session with no lifeline, recorded in the state dir (`prefect-server.json`: pid, port); every later
`stagecheck validate` without `PREFECT_API_URL` finds it there and uses it. It stops on
`stagecheck prefect-server stop`, or by itself after `idle_s` without an API request (health checks
aside), and removes its record when it stops.

Run as `python -m stagecheck.prefect_server --port N --record PATH --idle-s S` (by `start_background_server`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

GRACE_S = 10.0  # a graceful shutdown that takes longer than this ends in os._exit
PR_SET_PDEATHSIG = 1


class TemporaryServerError(RuntimeError):
    """The temporary Prefect server did not come up (the message says what was waited for, how long)."""


@dataclass
class TemporaryServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self, timeout_s: float = GRACE_S) -> None:
        """Close the lifeline (the child shuts down), then wait; kill it if it outlives `timeout_s`."""
        if self.process.poll() is not None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_temporary_server(timeout_s: float, attempts: int = 3) -> TemporaryServer:
    """Start the server on a free port and wait (at most `timeout_s`) until `/api/health` answers."""
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop("PREFECT_API_URL", None)
    for key, value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false")):
        env.setdefault(key, value)  # offline: no telemetry errors; an explicit user value is kept
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    for _ in range(attempts):
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "stagecheck.prefect_server", "--port", str(port), "--parent", str(os.getpid())],
            stdin=subprocess.PIPE, env=env)
        server = TemporaryServer(process, port)
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                last = f"the server process exited with code {code}"
                break
            try:
                if httpx.get(f"{server.api_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            server.stop()
            raise TemporaryServerError(
                f"the temporary Prefect server on 127.0.0.1:{port} did not answer /api/health within "
                f"{timeout_s:g} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
        if process.returncode != 3:  # 3: the port was taken meanwhile; anything else is final
            break
    raise TemporaryServerError(f"the temporary Prefect server did not start: {last}")


# ------------------------------------------------------------------ the background server

RECORD = "prefect-server.json"
IDLE_S = 1800.0  # a background server nobody used for this long stops by itself


@dataclass(frozen=True)
class BackgroundServer:
    """A background Prefect server as recorded in the state dir."""

    pid: int
    port: int
    idle_s: float
    started_at: float  # time.time()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The Prefect UI it serves (a run's page: `{ui_url}/flow-runs/flow-run/<id>`)."""
        return f"http://127.0.0.1:{self.port}"


def ui_environment(port: int) -> dict[str, str]:
    """Pure: what makes a background server serve the Prefect UI on its own port, talking to its own API."""
    return {"PREFECT_UI_ENABLED": "1", "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_UI_URL": f"http://127.0.0.1:{port}"}


def _record_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / RECORD


def _is_ours(pid: int) -> bool:
    """Is `pid` alive and a stagecheck background server (not a recycled pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc: trust the live pid
    return b"stagecheck.prefect_server" in cmdline and b"--record" in cmdline


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=5.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def read_background_server(state_dir: str | Path) -> BackgroundServer | None:
    """The recorded server if its process is still ours (a stale record is removed)."""
    path = _record_path(state_dir)
    try:
        data = json.loads(path.read_text())
        server = BackgroundServer(int(data["pid"]), int(data["port"]), float(data["idle_s"]),
                                  float(data["started_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # not a record of ours: never trusted
        return None
    if not _is_ours(server.pid):
        path.unlink(missing_ok=True)
        return None
    return server


def find_background_server(state_dir: str | Path) -> BackgroundServer | None:
    """The recorded background server, if it is alive and answers /api/health."""
    server = read_background_server(state_dir)
    return server if server is not None and _healthy(server.api_url) else None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One starter/stopper at a time per state dir (two CLIs starting at once get one server)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "prefect-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_background_server(state_dir: str | Path, timeout_s: float, idle_s: float = IDLE_S,
                            attempts: int = 3) -> tuple[BackgroundServer, bool]:
    """The state dir's background server, started (and recorded) when none runs; (server, started)."""
    state = Path(state_dir)
    with _locked(state):
        running = read_background_server(state)
        if running is not None:
            deadline = time.monotonic() + timeout_s  # it may still be starting (another CLI just started it)
            while time.monotonic() < deadline and _is_ours(running.pid):
                if _healthy(running.api_url):
                    return running, False
                time.sleep(0.2)
            raise TemporaryServerError(f"the background Prefect server (pid {running.pid}, recorded in "
                                       f"{_record_path(state)}) does not answer /api/health")
        # long-lived: it keeps none of the run's own settings or secrets (STAGECHECK_*) in its environment
        # it serves the Prefect UI too (ui_environment, per port): the run's report is read there
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("STAGECHECK_")},
               "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        for key, value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false")):
            env.setdefault(key, value)
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        for _ in range(attempts):
            port = _free_port()
            with open(state / "prefect-server.log", "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "stagecheck.prefect_server", "--port", str(port),
                     "--record", str(_record_path(state)), "--idle-s", f"{idle_s:g}"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**env, **ui_environment(port)},
                    start_new_session=True)
            server = BackgroundServer(process.pid, port, idle_s, time.time())
            _record_path(state).write_text(json.dumps(asdict(server)))
            while time.monotonic() < deadline:
                code = process.poll()
                if code is not None:
                    last = f"the server process exited with code {code} (log: {state / 'prefect-server.log'})"
                    _record_path(state).unlink(missing_ok=True)
                    break
                if _healthy(server.api_url):
                    return server, True
                time.sleep(0.1)
            else:
                _stop_pid(process.pid, GRACE_S)
                process.wait()
                _record_path(state).unlink(missing_ok=True)
                raise TemporaryServerError(
                    f"the background Prefect server on 127.0.0.1:{port} did not answer /api/health within "
                    f"{timeout_s:g} s")
            if process.returncode != 3:
                break
        raise TemporaryServerError(f"the background Prefect server did not start: {last}")


def _gone(pid: int) -> bool:
    """Has process `pid` ended (gone, or a zombie)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        return False
    return stat[stat.rindex(")") + 2] == "Z"


def _stop_pid(pid: int, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL when it outlives `timeout_s`; returns when the process has ended."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for last in (False, True):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _gone(pid):
                return
            time.sleep(0.1)
        if last or not _is_ours(pid):  # exiting (its command line already gone) or a recycled pid: no kill
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_background_server(state_dir: str | Path, timeout_s: float = GRACE_S + 5) -> BackgroundServer | None:
    """Stop the state dir's background server; the server stopped, or None when none ran."""
    state = Path(state_dir)
    with _locked(state):
        server = read_background_server(state)
        if server is None:
            return None
        _stop_pid(server.pid, timeout_s)
        _record_path(state).unlink(missing_ok=True)
        return server


# ------------------------------------------------------------------ the child


def _die_with_parent(parent: int) -> None:
    """Shut down when the parent is gone: kernel signal (Linux) and EOF on the stdin lifeline."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the lifeline alone
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        _shutdown()

    threading.Thread(target=watch, name="parent-lifeline", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: _shutdown())


_shutting_down = threading.Event()


def _shutdown() -> None:
    if _shutting_down.is_set():
        return
    _shutting_down.set()
    # a graceful stop (uvicorn handles SIGINT); a hard exit if it does not finish in time
    threading.Timer(GRACE_S, lambda: os._exit(1)).start()
    os.kill(os.getpid(), signal.SIGINT)


class _IdleWatch:
    """ASGI wrapper around the Prefect app: notes the last API request (health checks aside) and shuts
    the server down after `idle_s` without one, counted from when it first answered (its starter's
    health check)."""

    def __init__(self, app: Any, idle_s: float) -> None:
        self.app, self.idle_s = app, idle_s
        self.last = time.monotonic()
        self.busy = 0  # requests in progress (a long one is no idleness)
        self.watching = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.watching:  # serving: the idle clock starts now
            self.watching, self.last = True, time.monotonic()
            threading.Thread(target=self._watch, name="idle-watch", daemon=True).start()
        if scope["type"] != "http" or scope.get("path", "").endswith("/health"):
            await self.app(scope, receive, send)
            return
        self.busy += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.busy -= 1
            self.last = time.monotonic()

    def _watch(self) -> None:
        while not _shutting_down.wait(min(5.0, max(0.1, self.idle_s / 10))):
            if self.busy == 0 and time.monotonic() - self.last >= self.idle_s:
                _shutdown()
                return


class _WithUI:
    """ASGI: `/api` (and the lifespan) to Prefect's server app, every other HTTP path to its UI app."""

    def __init__(self, app: Any, ui: Any) -> None:
        self.app, self.ui = app, ui

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not (path == "/api" or path.startswith("/api/")):
            await self.ui(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _forget(record: Path) -> None:
    """Remove the record if it still names this process."""
    try:
        if int(json.loads(record.read_text())["pid"]) == os.getpid():
            record.unlink(missing_ok=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stagecheck.prefect_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, help="temporary: die with this process")
    parser.add_argument("--record", type=Path, help="background: the state dir's record of this server")
    parser.add_argument("--idle-s", type=float, default=IDLE_S, help="background: stop after this long unused")
    args = parser.parse_args(argv)
    if (args.parent is None) == (args.record is None):
        parser.error("give --parent (temporary server) or --record (background server)")

    import uvicorn

    if args.parent is not None:
        _die_with_parent(args.parent)
        uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=args.port,
                    log_level="error", lifespan="on", timeout_graceful_shutdown=5)
        return 0
    from prefect.server.api.server import create_app, create_ui_app

    signal.signal(signal.SIGTERM, lambda *_: _shutdown())
    # an ephemeral app (the light set of server services) does not serve the UI: its UI app comes beside it
    app = _WithUI(create_app(), create_ui_app(ephemeral=False))
    try:  # Prefect's app behind the idle watch
        uvicorn.run(_IdleWatch(app, args.idle_s), host="127.0.0.1", port=args.port,
                    log_level="error", lifespan="on", timeout_graceful_shutdown=5)
    finally:
        _forget(args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
