"""The registry login path: a registry that wants Google credentials as Artifact Registry does
(`oauth2accesstoken` + an access token; 401 otherwise). A second `docker-registry` started by the test on
another loopback port, behind the sandbox's gate (sandbox/registry_gate.py), which checks the access tokens
the sandbox issued; the shared registry on 127.0.0.1:5000 is not touched. A release with
`registry_login = "google"` pushes there with the API calls' identity, and the sandbox pulls with the
Cloud Run service agent's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures_sandbox import RunClients
from tests.pipeline.test_e2e import created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def second_registry(tmp_path: Path) -> Iterator[str]:
    """A plain registry of the test's own on a free loopback port; stopped (by its pid) afterwards."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    with open(tmp_path / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v2/", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "registry.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture
def gated(second_registry: str, run_clients: RunClients, sandbox: Any, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch, docker_client: Any) -> Iterator[dict[str, str]]:
    """The sandbox's gate in front of the second registry, and a state dir whose sandbox.json names it as the
    registry; registry_login = "google" (its host is not an Artifact Registry name). Local tags removed after."""
    gate = run_clients.admin("POST", "/sandbox/v1/registry-gates", {"upstream": second_registry})["registry"]
    info = json.loads((Path(sandbox.state_dir) / "sandbox.json").read_text())
    _, _, path = str(info["registry"]).partition("/")
    state = tmp_path / "state"
    state.mkdir()
    (state / "sandbox.json").write_text(json.dumps({**info, "registry": f"{gate}/{path}".rstrip("/")}))
    monkeypatch.setenv("STAGECHECK_REGISTRY_LOGIN", "google")
    deployer = json.loads(Path(sandbox.credentials_file).read_text())["client_email"]
    yield {"gate": gate, "state_dir": str(state), "deployer": f"serviceAccount:{deployer}"}
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{gate}/"):
                docker_client.images.remove(tag, force=True)


async def test_a_release_pushes_to_a_registry_that_wants_oauth2accesstoken(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any,  # noqa: F811
        gated: dict[str, str]) -> None:
    gate = gated["gate"]
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        refused = await http.get(f"http://{gate}/v2/")
        assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert (await http.get(f"http://{gate}/v2/", auth=("oauth2accesstoken", "not-a-token"))).status_code == 401

    service = created("arlogin")
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
    scenario.commit("to a registry that wants Google credentials")
    run = await run_flow(scenario, config, state_dir=gated["state_dir"])
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    assert serving(run_clients, service) == {report["revision"]["name"]: 100}
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert svc.template.containers[0].image.startswith(f"{gate}/")
    callers = run_clients.admin("GET", "/sandbox/v1/registry-gates")[gate]["callers"]
    assert gated["deployer"] in callers  # the push and the manifest reads: the API calls' identity
    assert any("@serverless-robot-prod.iam.gserviceaccount.com" in c for c in callers)  # the pull: the agent
