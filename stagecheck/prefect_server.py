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
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stagecheck.prefect_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)

    import uvicorn

    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=args.port,
                log_level="error", lifespan="on", timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
