"""`stagecheck validate --keep-server`: the run leaves a background Prefect server recorded in the
state dir, and the next run without PREFECT_API_URL uses it instead of starting a temporary server.
The test stops the server it caused, whatever happens (other CLI tests share the state dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from stagecheck.prefect_server import RECORD, _gone, find_background_server, stop_background_server
from tests.pipeline.conftest import Scenario
from tests.pipeline.test_cli_process import _await_line, _cli_env, _dry_run_config, _lines, _session_processes


def test_keep_server_leaves_a_background_server_the_next_run_uses(scenario: Scenario, sandbox: Any,
                                                                  tmp_path: Path) -> None:
    config = _dry_run_config(scenario)
    env = {**_cli_env(), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    cmd = [sys.executable, "-m", "cli.main", "validate", "--config", str(config), "--sandbox",
           "--state-dir", sandbox.state_dir, "--dry-run"]
    try:
        first = subprocess.run([*cmd, "--keep-server"], cwd=scenario.root, env=env, capture_output=True, text=True,
                               timeout=400, start_new_session=True)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "dryrun: PASS" in first.stdout
        server = find_background_server(sandbox.state_dir)
        assert server is not None, "no background server recorded after --keep-server"
        # the run's page in the UI that server serves, printed for the reader
        assert f"Prefect UI: {server.ui_url}/flow-runs/flow-run/" in first.stdout, first.stdout

        second = subprocess.Popen(cmd, cwd=scenario.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        try:
            lines = _lines(second.stdout)  # type: ignore[arg-type]
            _await_line(lines, "stagecheck: validating", timeout=240)  # past the server choice: the run is under way
            mine = _session_processes(second.pid)
            assert not [p for p in mine if "stagecheck.prefect_server" in p], mine  # no temporary server of its own
            assert second.wait(timeout=300) == 0
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        assert find_background_server(sandbox.state_dir) == server  # still the same, still up
    finally:
        stop_background_server(sandbox.state_dir)
    assert not (Path(sandbox.state_dir) / RECORD).exists()
    assert _gone(server.pid)  # stopped means ended
    assert os.environ.get("PREFECT_API_URL") != server.api_url  # nothing of it leaked into this process
