"""`stagecheck validate` as a process: the temporary Prefect server it starts dies with it (SIGKILL
included), and on an offline machine it prints no telemetry errors."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from cli.main import OFFLINE_DEFAULTS, offline_defaults
from tests.pipeline.conftest import Scenario


def _cli_env() -> dict[str, str]:
    # no Prefect API configured: the CLI starts its own temporary server; telemetry left at its defaults
    drop = ("PREFECT_API", *OFFLINE_DEFAULTS)
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _dry_run_config(scenario: Scenario) -> Path:
    scenario.add_service("svc")
    path = scenario.config([{"name": "dryrun", "source_dir": "svc"}])
    scenario.commit("sample")
    return path


def _session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of a session, as 'pid cmdline'."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(f"{entry.name} {cmdline}")
    return alive


def _lines(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _await_line(lines: queue.Queue[str], needle: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no line with {needle!r} within {timeout} s; output so far:\n{''.join(seen)}")


def test_sigkill_leaves_no_process_behind(scenario: Scenario, sandbox: Any) -> None:
    config = _dry_run_config(scenario)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "validate", "--config", str(config), "--sandbox",
         "--state-dir", sandbox.state_dir, "--dry-run"],
        cwd=scenario.root, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own session: every process it starts is findable by session id
    try:
        lines = _lines(proc.stdout)  # type: ignore[arg-type]
        # printed once the temporary server answers and the limits exist: the run is under way
        _await_line(lines, "stagecheck: validating", timeout=180)
        before = _session_processes(proc.pid)
        assert len(before) >= 2, before  # the CLI and the temporary Prefect server it started
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while (left := _session_processes(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == [], f"processes outlived the SIGKILLed CLI: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for line in _session_processes(proc.pid):  # never leave anything behind, even when the test fails
            os.kill(int(line.split()[0]), signal.SIGKILL)


def test_dry_run_prints_no_telemetry_error_and_stops_its_server(scenario: Scenario, sandbox: Any) -> None:
    config = _dry_run_config(scenario)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "validate", "--config", str(config), "--sandbox",
         "--state-dir", sandbox.state_dir, "--dry-run", "--verbose"],  # --verbose: Prefect's console logs shown
        cwd=scenario.root, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "dryrun: PASS" in out
    assert "telemetry" not in out.lower(), out
    assert _session_processes(proc.pid) == []


def test_offline_defaults_keep_an_explicit_user_value() -> None:
    environ = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    offline_defaults(environ)
    assert environ == {"PREFECT_SERVER_ANALYTICS_ENABLED": "true", "DO_NOT_TRACK": "1"}
    environ = {}
    offline_defaults(environ)
    assert environ == {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def test_format_json_prints_only_the_verdict_document_on_stdout(scenario: Scenario, sandbox: Any,
                                                                 tmp_path: Path) -> None:
    """Another repository, named by path and ref: stdout is one JSON document (verdict, report path), the progress
    is on stderr."""
    import json

    config = _dry_run_config(scenario)
    sha, branch = subprocess.run(["git", "-C", str(scenario.root), "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.split()
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "validate", "--repository", str(scenario.root), "--git-ref", branch,
         "--config", config.name, "--sandbox", "--state-dir", sandbox.state_dir, "--dry-run", "--format", "json"],
        cwd=tmp_path, env=_cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads(proc.stdout)
    (service,) = document["services"]
    assert document["verdict"] == "pass" and service["verdict"] == "pass" and service["service"] == "dryrun"
    assert service["git_sha"] == sha and Path(service["report"]).is_file()
    assert Path(service["report"]).is_relative_to(tmp_path)  # out of the run's deleted tree of the repository
    assert "dryrun: PASS" in proc.stderr
