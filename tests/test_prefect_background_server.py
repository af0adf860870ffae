"""The background Prefect server: started once, recorded in the state dir, found and reused by later
runs, stoppable, and gone by itself when unused — never leaked (every test stops what it started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagecheck.prefect_server import (
    RECORD,
    BackgroundServer,
    find_background_server,
    read_background_server,
    start_background_server,
    stop_background_server,
)

REPO = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _await(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    try:
        yield state
    finally:  # never leak a server, even when the test fails
        record = read_background_server(state)
        if record is not None:
            stop_background_server(state)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def test_a_background_server_is_started_once_found_by_later_runs_and_stopped(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECHECK_REGISTRY_PASSWORD", "canary-7f3a")  # a run's secret: not kept by the server
    server, started = start_background_server(state_dir, timeout_s=240)
    assert started and _alive(server.pid)
    assert b"canary-7f3a" not in Path(f"/proc/{server.pid}/environ").read_bytes()
    assert json.loads((state_dir / RECORD).read_text())["pid"] == server.pid
    again, started_again = start_background_server(state_dir, timeout_s=240)
    assert (again, started_again) == (server, False)  # found, not started twice
    assert find_background_server(state_dir) == server

    # a validate run without PREFECT_API_URL points Prefect at it and starts no temporary server
    probe = ("import os, sys; from cli.commands.validate import temporary_api; "
             "own = temporary_api(sys.argv[1]); print(own, os.environ['PREFECT_API_URL'])")
    found = subprocess.run([sys.executable, "-c", probe, str(state_dir)], cwd=REPO, capture_output=True, text=True,
                           timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")})
    assert found.stdout.split() == ["None", server.api_url], found.stderr

    status = _cli("prefect-server", "status", "--state-dir", str(state_dir))
    assert status.returncode == 0 and server.api_url in status.stdout and "healthy" in status.stdout
    stopped = _cli("prefect-server", "stop", "--state-dir", str(state_dir))
    assert stopped.returncode == 0 and f"stopped pid {server.pid}" in stopped.stdout
    _await(lambda: not _alive(server.pid), 30, "the stopped server's process is gone")
    assert not (state_dir / RECORD).exists()
    status = _cli("prefect-server", "status", "--state-dir", str(state_dir))
    assert status.returncode == 1 and "no background Prefect server recorded" in status.stdout


def test_a_background_server_serves_the_prefect_ui_talking_to_its_own_api(state_dir: Path) -> None:
    import httpx

    server, _ = start_background_server(state_dir, timeout_s=240)
    page = httpx.get(server.ui_url + "/", timeout=30, trust_env=False)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<html" in page.text.lower()
    ui_settings = httpx.get(server.ui_url + "/ui-settings", timeout=30, trust_env=False).json()
    assert ui_settings["api_url"] == server.api_url  # the UI in a browser reaches this server's API
    status = _cli("prefect-server", "status", "--state-dir", str(state_dir))
    assert f"Prefect UI: {server.ui_url}" in status.stdout


def test_an_unused_background_server_stops_by_itself_and_forgets_its_record(state_dir: Path) -> None:
    server, _ = start_background_server(state_dir, timeout_s=240, idle_s=2.0)
    _await(lambda: not _alive(server.pid), 120, "the idle server stopped by itself")
    _await(lambda: not (state_dir / RECORD).exists(), 10, "its record removed")


def test_a_stale_or_foreign_record_is_never_trusted(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = BackgroundServer(pid=dead.pid, port=9, idle_s=60, started_at=time.time())
    (state_dir / RECORD).write_text(json.dumps(stale.__dict__))
    assert read_background_server(state_dir) is None and not (state_dir / RECORD).exists()
    (state_dir / RECORD).write_text(json.dumps({**stale.__dict__, "pid": os.getpid()}))  # alive, not a server
    assert find_background_server(state_dir) is None and not (state_dir / RECORD).exists()
    (state_dir / RECORD).write_text("{not json")
    assert read_background_server(state_dir) is None and not (state_dir / RECORD).exists()
    assert _cli("prefect-server", "stop", "--state-dir", str(state_dir)).stdout.strip() == \
        "no background Prefect server recorded"
    bad = _cli("prefect-server", "start", "--idle-minutes", "0", "--state-dir", str(state_dir))
    assert bad.returncode == 2 and "--idle-minutes" in bad.stderr
