"""Instance lifecycle (cold starts, scale to zero, crashes) and the `stagecheck sandbox` control."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from google.cloud import run_v2

from localenv.control import read_info, stop
from tests.fixtures_sandbox import RunClients, clients_for, deploy, logging_client_for, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def instances_of(clients: RunClients, service_id: str) -> list[dict[str, Any]]:
    return [i for i in clients.admin("GET", "/sandbox/v1/status")["instances"] if i["service"] == service_id]


def test_cold_start_is_held_then_429_then_200(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("cold")
    # no scale to zero while the deploy returns and the first request is made (on a busy machine that can take
    # longer than the short idle delay set below, and the first request would meet a cold start)
    behavior = run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior",
                                 {"cold_start_hold_s": 0.3, "scale_to_zero_after_s": 600})
    assert behavior == {"cold_start_hold_s": 0.3, "scale_to_zero_after_s": 600, "reconcile_delay_s": 0.2,
                        "warm_instances": 2, "queue_timeout_s": 60.0, "vpc_clients": False}
    svc = deploy(run_clients, name, sample_image.ref, env={"STARTUP_DELAY_S": "1.5"})
    assert httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=10, trust_env=False).status_code == 200
    assert run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior",
                             {"scale_to_zero_after_s": 0.5})["scale_to_zero_after_s"] == 0.5

    # idle past scale_to_zero_after_s: the instance stops
    wait_for(lambda: all(i["state"] == "STOPPED" for i in instances_of(run_clients, name)), timeout=10)

    started = time.monotonic()
    first = httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=10, trust_env=False)
    held = time.monotonic() - started
    # Cloud Run holds the request, then: 429 "no available instance" while the instance still starts
    assert first.status_code == 429
    assert first.text == "The request was aborted because there was no available instance."
    assert 0.25 <= held < 1.5  # held for cold_start_hold_s, then answered
    ok = wait_for(lambda: (r := httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=10, trust_env=False)).status_code == 200 and r,
                  timeout=15)
    assert ok.json()["revision"] == svc.latest_ready_revision.rsplit("/", 1)[-1]

    # a service with minInstanceCount=1 is never scaled to zero
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"scale_to_zero_after_s": 0.2})
    svc.template.scaling = run_v2.RevisionScaling(min_instance_count=1)
    svc.template.containers[0].env = []
    svc = run_clients.services.update_service(service=svc).result(timeout=60)
    time.sleep(0.8)  # several reaper periods (0.2 s) past the idle delay: nothing may stop it meanwhile
    assert [i["state"] for i in instances_of(run_clients, name) if i["revision"] in svc.latest_ready_revision] == ["READY"]


def test_a_cold_request_is_held_until_served_when_the_switch_says_so(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], fidelity: Any
) -> None:
    """Fidelity `cold_request="hold_until_served"`: no 429 after the cold-start hold; the request waits for the
    starting instance (up to the request timeout) and is answered by it."""
    name = new_service("coldhold")
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior",
                      {"cold_start_hold_s": 0.3, "scale_to_zero_after_s": 0.5})
    svc = deploy(run_clients, name, sample_image.ref, env={"STARTUP_DELAY_S": "1.5"})
    fidelity(cold_request="hold_until_served")
    wait_for(lambda: all(i["state"] == "STOPPED" for i in instances_of(run_clients, name)), timeout=10)

    started = time.monotonic()
    first = httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=30, trust_env=False)
    held = time.monotonic() - started
    assert first.status_code == 200 and first.json()["revision"] == svc.latest_ready_revision.rsplit("/", 1)[-1]
    assert held >= 1.0  # held past the 0.3 s hold, through the instance's 1.5 s start


def test_a_revision_is_ready_once_its_first_instance_is_while_the_second_still_warms_up(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    """Cloud Run's revision is Ready once one instance passed its startup probe; the sandbox's second warm
    instance starts after it, in the background (a rollout that waited for it was Ready a startup late)."""
    name = new_service("warmup")
    svc = deploy(run_clients, name, sample_image.ref, env={"STARTUP_DELAY_S": "4"})
    revision = svc.latest_ready_revision.rsplit("/", 1)[-1]

    def states() -> list[str]:
        return sorted(i["state"] for r in instances_of(run_clients, name) if r["revision"] == revision
                      for i in r["instances"])

    assert states() == ["READY", "STARTING"]  # at Ready: one serves, the other is 4 s from listening
    wait_for(lambda: states() == ["READY", "READY"], timeout=30)


def test_a_crashed_instance_restarts_on_the_next_request(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("crash")
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"cold_start_hold_s": 10})
    svc = deploy(run_clients, name, sample_image.ref, env={"CRASH_AFTER_S": "1"})
    wait_for(lambda: all(i["state"] == "STOPPED" for i in instances_of(run_clients, name)), timeout=10)
    resp = httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=15, trust_env=False)  # cold start within the hold
    assert resp.status_code == 200


# ---------------------------------------------------------------- control: up / status / down


def process_gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped by whoever adopted it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "sandbox", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def own_state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    stop(tmp_path)  # whatever a test left running


def test_up_is_idempotent_and_down_leaves_nothing(own_state_dir: Path, docker_env, sample_image) -> None:
    env = {"DOCKER_HOST": docker_env.docker_host}
    common = ["--state-dir", str(own_state_dir)]
    assert cli("status", *common, env=env).returncode == 3

    up = cli("up", *common, "--port", "0", "--lb-port", "0", "--registry", docker_env.registry, env=env)
    assert up.returncode == 0, up.stderr
    info = read_info(own_state_dir)
    recorded = json.loads((own_state_dir / "sandbox.json").read_text())
    for key in ("run_api", "logging_api", "project", "region", "registry", "docker_host", "lb_url", "admin_url",
                "pid", "instance_id", "credentials_file", "outsider_credentials_file"):
        assert recorded[key]
    key = json.loads(Path(info.credentials_file).read_text())
    assert key["type"] == "service_account" and key["token_uri"] == f"{info.run_api}/token"
    assert Path(info.credentials_file).stat().st_mode & 0o077 == 0  # a private key: owner only
    assert info.docker_host == docker_env.docker_host

    again = cli("up", *common, "--port", "0", "--lb-port", "0", env=env)
    assert again.returncode == 0 and "already running" in again.stdout
    assert read_info(own_state_dir).pid == info.pid

    clients = clients_for(info)
    deploy(clients, "lifecycle-svc", sample_image.ref)

    def status_with_both_warm_instances() -> Any:  # the second warm instance starts after Ready
        status = cli("status", *common, env=env)
        return status if "containers: 2" in status.stdout else None

    status = wait_for(status_with_both_warm_instances, timeout=30, interval=0.5)
    assert status.returncode == 0
    assert "lifecycle-svc" in status.stdout and "containers: 2" in status.stdout  # two warm instances

    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        label: dict[str, str | list[str] | bool] = {"label": f"stagecheck.sandbox={info.instance_id}"}
        assert len(client.containers.list(all=True, filters=label)) == 2
        down = cli("down", *common, env=env)
        assert down.returncode == 0, down.stderr
        assert client.containers.list(all=True, filters=label) == []
    finally:
        client.close()
    assert not (own_state_dir / "sandbox.json").exists()
    assert not Path(info.credentials_file).exists() and not Path(info.outsider_credentials_file).exists()
    assert cli("status", *common, env=env).returncode == 3
    assert process_gone(info.pid)


def test_down_cleans_up_after_a_dead_server(own_state_dir: Path, docker_env, sample_image) -> None:
    from localenv.control import start

    info = start(own_state_dir, docker_host=docker_env.docker_host, registry=docker_env.registry)
    clients = clients_for(info)
    deploy(clients, "orphan-svc", sample_image.ref)
    os.kill(info.pid, signal.SIGKILL)  # no chance to clean up
    wait_for(lambda: process_gone(info.pid), timeout=10)
    assert cli("status", "--state-dir", str(own_state_dir)).returncode == 3

    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        label: dict[str, str | list[str] | bool] = {"label": f"stagecheck.sandbox={info.instance_id}"}
        wait_for(lambda: len(client.containers.list(all=True, filters=label)) == 2, timeout=30)  # both warm ones
        stop(own_state_dir)
        assert client.containers.list(all=True, filters=label) == []
    finally:
        client.close()


def test_up_without_a_docker_engine_is_one_clear_line(own_state_dir: Path) -> None:
    result = cli("up", "--state-dir", str(own_state_dir), "--docker-host", f"unix://{own_state_dir}/no.sock")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"stagecheck sandbox: no Docker Engine at unix://{own_state_dir}/no.sock: run `make up`"
    ]


def test_container_output_and_lifecycle_are_logged_as_cloud_run_does(
    run_clients: RunClients, sandbox: Any, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    import google.cloud.logging as gcl

    name = new_service("logs")
    svc = deploy(run_clients, name, sample_image.ref, env={"TRACEBACK_EVERY_S": "0.3"})
    revision = svc.latest_ready_revision.rsplit("/", 1)[-1]
    client = logging_client_for(sandbox)

    def entries() -> list[Any]:
        return list(client.list_entries(filter_=f'resource.labels.revision_name="{revision}"', order_by=gcl.ASCENDING))

    found = wait_for(lambda: (e := entries()) and sum(
        1 for x in e if x.payload == "KeyError: 'discount_code'") >= 1 and e, timeout=15, interval=1.0)
    stderr = [e for e in found if e.log_name.endswith("run.googleapis.com%2Fstderr")]
    # one plain-text entry per line, at DEFAULT (never ERROR), each with the instance it came from
    assert stderr[0].payload == "Traceback (most recent call last):"
    assert {e.severity for e in stderr} == {"DEFAULT"}
    assert all(isinstance(e.payload, str) for e in stderr)
    assert all(e.labels["instanceId"] for e in stderr)
    # the revision runs two instances: each writes its traceback lines, labelled with its own id
    instance = stderr[0].labels["instanceId"]
    own = [e.payload for e in stderr if e.labels["instanceId"] == instance]
    assert own[0] == "Traceback (most recent call last):" and "KeyError: 'discount_code'" in own
    # structured stdout lines are jsonPayload with their severity lifted
    starting = next(e for e in found if isinstance(e.payload, dict) and "starting" in e.payload.get("message", ""))
    assert starting.severity == "INFO" and starting.labels["instanceId"] == stderr[0].labels["instanceId"]
    # the revision's Ready change is a system_event audit entry
    audit = [e for e in found if e.log_name.endswith("cloudaudit.googleapis.com%2Fsystem_event")]
    assert len(audit) == 1 and audit[0].severity == "INFO"
    assert audit[0].payload["status"]["message"].startswith(
        f"Ready condition status changed to True for Revision {revision} with message: Deploying revision succeeded in")
