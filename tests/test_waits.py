"""No unbounded wait: a long-running operation, a smoke command and a webhook that never finish are
given up at their bound, and the message names what was waited for and for how long."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api_core import operation
from google.cloud import run_v2
from google.longrunning import operations_pb2

from stagecheck.clients.cloudrun import CloudRun
from stagecheck.errors import StageError
from stagecheck.model import Status
from stagecheck.settings import Settings, SmokeCommand
from tasks.notify import post_summary
from tasks.smoke import run_command


async def test_an_operation_that_never_completes_hits_its_deadline() -> None:
    pending = operations_pb2.Operation(name="projects/p/locations/l/operations/op-1", done=False)
    refreshed: list[float] = []

    def refresh(retry: Any = None) -> operations_pb2.Operation:
        refreshed.append(time.monotonic())
        return pending

    op = operation.Operation(pending, refresh, cancel=lambda: None, result_type=run_v2.Service)
    cloudrun = CloudRun(Settings(project="demo-project", region="europe-west1", registry="r",
                                 services=({"name": "web"},)))  # type: ignore[arg-type]
    with pytest.raises(StageError) as info:
        await cloudrun.finish(op, "deploy web-00001-abc", timeout_s=0.5)
    assert str(info.value) == ("deploy web-00001-abc: operation op-1 still not done at its 0.5 s deadline "
                               "(the Cloud Run API kept answering done=false) "
                               "(check the service in the console before another release)")
    assert len(refreshed) >= 2  # it polled, and then gave up


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


async def test_a_smoke_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cmd = SmokeCommand(name="hang", command=f"sleep 120 & echo $! > {pidfile}; wait", timeout_s=1.0)
    # the guard only catches a hang: the command's own 1 s bound must end it (with its child) long before
    code, _, _ = await asyncio.wait_for(run_command(cmd, {}, tmp_path), timeout=60)
    assert code is None
    child = int(pidfile.read_text())
    assert _gone(child, within_s=10), "the smoke command's background child outlived its timeout"


async def test_smoke_timeout_is_reported_with_its_bound(tmp_path: Path) -> None:
    from tasks.smoke import run_smoke

    cmd = SmokeCommand(name="hang", command="sleep 120", timeout_s=0.5)
    result = await run_smoke.fn([cmd], {}, tmp_path)
    assert result.status is Status.FAIL
    assert result.criteria[0].observed == "timed out: no exit within 0.5 s (killed with its process group)"


async def test_a_webhook_that_never_answers_is_given_up_with_the_time_waited() -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(timeout=0.3, trust_env=False) as http:
            problem = await post_summary(http, f"http://127.0.0.1:{port}/hook", {"text": "x"})
    finally:
        for writer in held:
            writer.close()
        server.close()
    assert problem == "no answer from the webhook within 0.3 s (3 attempt(s))"


def test_the_temporary_prefect_server_start_is_bounded_and_its_process_stopped() -> None:
    from stagecheck.prefect_server import TemporaryServerError, start_temporary_server

    with pytest.raises(TemporaryServerError, match=r"did not answer /api/health within 0\.05 s") as info:
        start_temporary_server(timeout_s=0.05)
    port = str(info.value).split("127.0.0.1:")[1].split()[0]
    # the child it started is gone too: nothing listens on its port, no process carries its port argument
    assert not any(f"--port {port}" in _cmdline(p) for p in Path("/proc").iterdir() if p.name.isdigit() and _alive(int(p.name)))


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
