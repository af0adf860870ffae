"""No secret in any output. Canary values are planted in a credential-named env var (which the
service also writes into its error log lines), in a probe header, in the registry password and in the
webhook URL; a passing and a failing release run through the real CLI against the sandbox, and every
output is searched for the canaries: the console (stdout/stderr), the run logs, state messages and
artifacts read back through the Prefect API, the JSON reports, and the webhook bodies received."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stagecheck.redact import MASK
from stagecheck.secret_values import REGISTRY_PASSWORD_ENV, registry_auth, secret_values
from stagecheck.settings import load_settings

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


class Receiver:
    """A webhook on 127.0.0.1 that keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                receiver.bodies.append(self.rfile.read(length).decode("utf-8", errors="replace"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_secret_values_are_collected_from_config_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "stagecheck.toml"
    config.write_text('project = "p-1234"\nregion = "europe-west1"\nregistry = "127.0.0.1:5000"\n[probes.headers]\nX-Api-Key = "hdr-value"\n'
                      '[[services]]\nname = "web"\nenv = { DB_PASSWORD = "pw-value", GREETING = "hello" }\n')
    settings = load_settings(config, environ={})
    environ = {REGISTRY_PASSWORD_ENV: "reg-value", "STAGECHECK_WEBHOOK_URL": "http://127.0.0.1:1/hook/abcd"}
    assert secret_values(settings, environ) == {"pw-value", "hdr-value", "reg-value", "http://127.0.0.1:1/hook/abcd"}
    assert registry_auth(environ) == ("stagecheck", "reg-value") and registry_auth({}) is None
    assert "hdr-value" not in repr(settings.probes)


def _cli(scenario: Any, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "validate", "--config", "stagecheck.toml", "--sandbox",
         "--state-dir", str(scenario.sandbox.state_dir), "--verbose"],
        cwd=scenario.root, env=env, capture_output=True, text=True, timeout=400)


async def _prefect_outputs(since: datetime) -> list[str]:
    """Logs, state messages, parameters and artifacts of every validation run since `since`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    texts: list[str] = []
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
        ids = [run.id for run in runs]
        assert len(ids) >= 2, "both releases ran as flow runs on this Prefect server"
        for run in runs:
            texts.append(json.dumps(run.parameters, default=str))
            texts.append(str(run.state.message if run.state else ""))
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
        messages: list[str] = []
        while page := await client.read_logs(log_filter=log_filter, limit=200, offset=len(messages)):
            messages += [log.message for log in page]
        assert any("verdict FAIL" in m for m in messages), "the runs logged through the API"
        texts += messages
        artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        assert artifacts
        texts += [json.dumps(a.data, default=str) + str(a.description) for a in artifacts]
    return texts


async def test_no_canary_in_any_output_of_a_passing_and_a_failing_release(
        prefect_api: None, scenario: Any, run_clients: Any, receiver: Receiver, sample_image: Any) -> None:
    from prefect.settings import PREFECT_API_URL

    from tests.fixtures_sandbox import unique_name

    token = uuid.uuid4().hex[:10]
    canaries = {
        "env": f"canary-env-{token}",
        "header": f"canary-header-{token}",
        "registry": f"canary-registry-{token}",
        "webhook": f"canary-webhook-{token}",
    }
    service = unique_name("sec")
    scenario.add_service("svc")
    headers = f'[probes.headers]\nX-Api-Key = "{canaries["header"]}"\n'
    env = {"DB_PASSWORD": canaries["env"], "GREETING": "hello"}
    scenario.config([{"name": service, "source_dir": "svc", "env": env}], steps="[100]", extra=headers,
                    bake_s=0)  # no bake: the failing release is decided by the logs gate
    scenario.commit("pass")
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    cli_env.update({"PREFECT_API_URL": str(PREFECT_API_URL.value()), REGISTRY_PASSWORD_ENV: canaries["registry"],
                    "STAGECHECK_WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}/hook/{canaries['webhook']}"})
    since = datetime.now(UTC)
    try:
        passing = _cli(scenario, cli_env)
        assert passing.returncode == 0, passing.stdout + passing.stderr
        # the failing release: the service writes the password into its error log lines
        failing_env = {**env, "ERROR_RATE": "5", "ERROR_MESSAGE": f"db login failed with {canaries['env']} ({{id}})"}
        scenario.config([{"name": service, "source_dir": "svc", "env": failing_env}], steps="[100]", extra=headers,
                        bake_s=0)
        (scenario.root / "svc" / "VERSION").write_text("2\n")
        scenario.commit("fail")
        failing = _cli(scenario, cli_env)
        assert failing.returncode == 1, failing.stdout + failing.stderr
        assert f"{service}: FAIL (gate: logs)" in failing.stdout
    finally:
        try:
            run_clients.services.delete_service(name=run_clients.service_name(service)).result(timeout=60)
        except Exception:
            pass

    reports = [p.read_text() for p in sorted((scenario.root / "reports").glob("*.json"))]
    logs_stage = next(s for s in json.loads((scenario.root / "reports" / f"{service}-latest.json").read_text())["stages"]
                      if s["name"] == "logs")
    # the canary reached the pipeline (the error lines carried it) and was masked there
    assert "db login failed with" in json.dumps(logs_stage) and MASK in json.dumps(logs_stage)
    assert len(receiver.bodies) == 1 and service in receiver.bodies[0]  # the failure was notified
    outputs = {
        "console (passing)": passing.stdout + passing.stderr,
        "console (failing)": failing.stdout + failing.stderr,
        "JSON reports": "\n".join(reports),
        "webhook bodies": "\n".join(receiver.bodies),
        "Prefect API (logs, states, parameters, artifacts)": "\n".join(await _prefect_outputs(since)),
    }
    leaks = [f"{what}: {name}" for what, text in outputs.items() for name, value in canaries.items() if value in text]
    assert leaks == []
