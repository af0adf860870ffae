"""Cloud Run Admin API v2 of the sandbox, driven by the unmodified google-cloud-run REST clients."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import docker
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED


def short(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def field_violations(exc: gexc.GoogleAPICallError) -> list[str]:
    return [v["field"] for d in exc.details if isinstance(d, dict) for v in d.get("fieldViolations", [])]


def test_create_service_then_reach_it(run_clients: RunClients, sample_image, new_service: Callable[[str], str]) -> None:
    name = new_service("create")
    started = time.monotonic()
    svc = deploy(run_clients, name, sample_image.ref)
    elapsed = time.monotonic() - started
    print(f"\ncreate_service -> operation done: {elapsed:.2f} s")

    revision = short(svc.latest_ready_revision)
    assert re.fullmatch(rf"{name}-00001-[a-z]{{3}}", revision)
    assert svc.latest_created_revision == svc.latest_ready_revision
    assert svc.terminal_condition.state == SUCCEEDED
    assert not svc.reconciling
    assert svc.uri.startswith("http://127.0.0.1:")
    assert [(t.revision, t.percent) for t in svc.traffic_statuses] == [(revision, 100)]

    resp = httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=10, trust_env=False)
    assert resp.status_code == 200
    assert resp.json()["revision"] == revision
    assert resp.headers["x-sandbox-revision"] == revision

    listed = [s.name for s in run_clients.services.list_services(parent=run_clients.parent)]
    assert svc.name in listed


def test_update_makes_new_revision_and_lists_them_paged(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("update")
    first = deploy(run_clients, name, sample_image.ref, env={"GREETING": "one"})

    first.template.containers[0].env[0].value = "two"
    first.template.containers[0].image = sample_image.digest_ref
    second = run_clients.services.update_service(service=first).result(polling=FAST_POLL, timeout=60)
    rev2 = short(second.latest_ready_revision)
    assert re.fullmatch(rf"{name}-00002-[a-z]{{3}}", rev2)
    assert int(second.generation) == 2 and int(second.observed_generation) == 2
    assert httpx.get(f"{second.uri}/health", headers=run_clients.invoke_headers(second.uri), timeout=10, trust_env=False).json()["revision"] == rev2

    # a traffic-only change makes no revision
    second.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=rev2, percent=100, tag="current")]
    third = run_clients.services.update_service(service=second).result(polling=FAST_POLL, timeout=60)
    assert third.latest_created_revision == second.latest_created_revision
    assert [(t.revision, t.percent, t.tag) for t in third.traffic_statuses] == [(rev2, 100, "current")]
    assert third.traffic_statuses[0].uri.startswith("http://127.0.0.1:")

    pager = run_clients.revisions.list_revisions(request=run_v2.ListRevisionsRequest(parent=first.name, page_size=1))
    pages = list(pager.pages)
    assert len(pages) == 2 and all(len(p.revisions) == 1 for p in pages)
    names = [short(r.name) for p in pages for r in p.revisions]
    assert names == [rev2, short(first.latest_ready_revision)]  # newest first

    revision = run_clients.revisions.get_revision(name=second.latest_ready_revision)
    assert revision.service == first.name
    assert revision.containers[0].image == sample_image.digest_ref
    assert [(e.name, e.value) for e in revision.containers[0].env] == [("GREETING", "two")]
    ready = next(c for c in revision.conditions if c.type_ == "Ready")
    assert ready.state == SUCCEEDED

    # the first revision serves nothing any more: it can be deleted
    deleted = run_clients.revisions.delete_revision(name=first.latest_ready_revision).result(
        polling=FAST_POLL, timeout=30)
    assert deleted.name == first.latest_ready_revision
    assert [short(r.name) for r in run_clients.revisions.list_revisions(parent=first.name)] == [rev2]
    with pytest.raises(gexc.NotFound):
        run_clients.revisions.get_revision(name=first.latest_ready_revision, retry=None, timeout=10)


def test_template_revision_name_is_honoured_and_unique(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("named")
    svc = deploy(run_clients, name, sample_image.ref, revision=f"{name}-blue")
    assert short(svc.latest_ready_revision) == f"{name}-blue"

    svc.template.containers[0].env = [run_v2.EnvVar(name="X", value="1")]  # same revision name again
    with pytest.raises(gexc.Conflict):
        run_clients.services.update_service(service=svc)

    svc.template.revision = "other-prefix"
    with pytest.raises(gexc.BadRequest) as bad:
        run_clients.services.update_service(service=svc)
    assert "service.template.revision" in field_violations(bad.value)


def test_env_secret_placeholder_and_memory_limit_reach_the_container(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], docker_env
) -> None:
    name = new_service("env")
    secret_env = run_v2.EnvVar(name="DB_PASSWORD", value_source=run_v2.EnvVarSource(
        secret_key_ref=run_v2.SecretKeySelector(secret="db-password", version="3")))
    container = run_v2.Container(image=sample_image.ref, env=[run_v2.EnvVar(name="MODE", value="staging"), secret_env],
                                 resources=run_v2.ResourceRequirements(limits={"memory": "256Mi", "cpu": "1"}))
    op = run_clients.services.create_service(parent=run_clients.parent, service_id=name,
                                             service=run_v2.Service(template=run_v2.RevisionTemplate(containers=[container])))
    svc = op.result(polling=FAST_POLL, timeout=60)

    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        # the revision's two warm instances, each its own container (the second starts once it is Ready)
        containers = wait_for(lambda: (found := client.containers.list(
            filters={"label": f"stagecheck.service={name}"})) and len(found) == 2 and found, timeout=30)
        ports = set()
        for found in containers:
            env = dict(item.split("=", 1) for item in found.attrs["Config"]["Env"])
            assert env["MODE"] == "staging"
            assert env["DB_PASSWORD"] == "sandbox-secret:db-password:3"
            assert env["K_REVISION"] == short(svc.latest_ready_revision)
            assert found.attrs["HostConfig"]["Memory"] == 256 * 2**20
            assert found.attrs["HostConfig"]["NetworkMode"] == "host"
            assert env["PORT"] != "8080"  # an allocated port; the instance listens on it
            ports.add(env["PORT"])
        assert len(ports) == 2
        assert httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=10,
                         trust_env=False).status_code == 200
    finally:
        client.close()


def test_errors_map_to_google_exceptions(run_clients: RunClients, sample_image, new_service: Callable[[str], str]) -> None:
    services = run_clients.services
    with pytest.raises(gexc.NotFound):
        services.get_service(name=run_clients.service_name("does-not-exist"), retry=None, timeout=10)
    with pytest.raises(gexc.Forbidden) as denied:
        services.get_service(name="projects/someone-else/locations/europe-west1/services/x", retry=None, timeout=10)
    assert denied.value.code == 403

    name = new_service("errors")
    svc = deploy(run_clients, name, sample_image.ref)
    with pytest.raises(gexc.Conflict):
        deploy(run_clients, name, sample_image.ref)

    template = run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref)])
    for bad_id in ("Upper", "9starts-with-digit", "trailing-", "x" * 50):
        with pytest.raises(gexc.BadRequest) as bad:
            services.create_service(parent=run_clients.parent, service_id=bad_id, service=run_v2.Service(template=template))
        assert field_violations(bad.value) == ["service_id"], bad_id

    rev = short(svc.latest_ready_revision)
    cases: list[tuple[list[run_v2.TrafficTarget], str]] = [
        ([run_v2.TrafficTarget(type_=LATEST, percent=60)], "service.traffic"),
        ([run_v2.TrafficTarget(type_=REVISION, revision=f"{name}-00009-zzz", percent=100)], "service.traffic[0].revision"),
        ([run_v2.TrafficTarget(type_=LATEST, percent=100, tag="a"),
          run_v2.TrafficTarget(type_=REVISION, revision=rev, tag="a")], "service.traffic[1].tag"),
    ]
    for traffic, expected_field in cases:
        current = services.get_service(name=svc.name)
        current.traffic = traffic
        with pytest.raises(gexc.BadRequest) as bad:
            services.update_service(service=current)
        assert field_violations(bad.value) == [expected_field]

    with pytest.raises(gexc.BadRequest):  # the revision serves all traffic
        run_clients.revisions.delete_revision(name=svc.latest_ready_revision)


def test_failing_revisions_keep_traffic_on_the_previous_one(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("fail")
    good = deploy(run_clients, name, sample_image.ref)
    good_rev = short(good.latest_ready_revision)

    # 1) the container exits at startup
    good.template.containers[0].env = [run_v2.EnvVar(name="CRASH_ON_START", value="1")]
    op = run_clients.services.update_service(service=good)
    with pytest.raises(gexc.InternalServerError) as failed:
        op.result(polling=FAST_POLL, timeout=60)
    assert "Container called exit(1)." in failed.value.message
    # the operation ends with code 13 (INTERNAL), Cloud Run's words first (a Terraform report, cloud-run-facts §7)
    assert failed.value.code == 500 and failed.value.grpc_status_code is not None
    assert failed.value.grpc_status_code.value[0] == 13
    assert failed.value.message.startswith("Revision '") and "is not ready and cannot serve traffic." in failed.value.message
    svc = run_clients.services.get_service(name=good.name)
    crashed = run_clients.revisions.get_revision(name=svc.latest_created_revision)
    ready = next(c for c in crashed.conditions if c.type_ == "Ready")
    assert ready.state == run_v2.Condition.State.CONDITION_FAILED
    assert "failed to start and listen on the port" in ready.message
    assert svc.terminal_condition.state == run_v2.Condition.State.CONDITION_FAILED
    assert short(svc.latest_ready_revision) == good_rev
    assert httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=10, trust_env=False).json()["revision"] == good_rev

    # 2) the container never listens: a short startup probe gives up quickly
    svc.template.containers[0].env = [run_v2.EnvVar(name="STARTUP_DELAY_S", value="60")]
    svc.template.containers[0].startup_probe = run_v2.Probe(
        tcp_socket=run_v2.TCPSocketAction(port=8080), period_seconds=1, failure_threshold=2, timeout_seconds=1)
    started = time.monotonic()
    op = run_clients.services.update_service(service=svc)
    with pytest.raises(gexc.InternalServerError) as failed:
        op.result(polling=FAST_POLL, timeout=60)
    assert time.monotonic() - started < 15
    assert "failed to start and listen on the port defined provided by the PORT=8080" in failed.value.message
    after = run_clients.services.get_service(name=good.name)
    assert short(after.latest_ready_revision) == good_rev
    assert [t.revision for t in after.traffic_statuses] == [good_rev]
    assert httpx.get(f"{after.uri}/health", headers=run_clients.invoke_headers(after.uri), timeout=10, trust_env=False).json()["revision"] == good_rev


def test_delete_service_stops_its_containers(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], docker_env
) -> None:
    name = new_service("delete")
    svc = deploy(run_clients, name, sample_image.ref)
    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        wait_for(lambda: len(client.containers.list(filters={"label": f"stagecheck.service={name}"})) == 2,
                 timeout=30)  # two warm instances
        deleted = run_clients.services.delete_service(name=svc.name).result(polling=FAST_POLL, timeout=30)
        assert deleted.name == svc.name
        assert client.containers.list(all=True, filters={"label": f"stagecheck.service={name}"}) == []
    finally:
        client.close()
    with pytest.raises(gexc.NotFound):
        run_clients.services.get_service(name=svc.name, retry=None, timeout=10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{svc.uri}/health", headers=run_clients.invoke_headers(svc.uri), timeout=5, trust_env=False)


def test_injected_api_faults_reach_the_client(run_clients: RunClients) -> None:
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": "Services.ListServices", "count": 1, "status": 503})
    with pytest.raises(gexc.ServiceUnavailable):
        list(run_clients.services.list_services(parent=run_clients.parent, retry=None, timeout=10))
    list(run_clients.services.list_services(parent=run_clients.parent, retry=None, timeout=10))  # consumed
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": "Services.GetService", "count": 1, "status": 429})
    with pytest.raises(gexc.TooManyRequests):
        run_clients.services.get_service(name=run_clients.service_name("any"), retry=None, timeout=10)


def test_deleting_a_service_mid_rollout_ends_its_operation(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], docker_env
) -> None:
    name = new_service("midway")
    container = run_v2.Container(image=sample_image.ref, env=[run_v2.EnvVar(name="STARTUP_DELAY_S", value="30")])
    op = run_clients.services.create_service(
        parent=run_clients.parent, service_id=name,
        service=run_v2.Service(template=run_v2.RevisionTemplate(containers=[container])))
    run_clients.services.delete_service(name=run_clients.service_name(name)).result(polling=FAST_POLL, timeout=30)
    with pytest.raises(gexc.Aborted):
        op.result(polling=FAST_POLL, timeout=30)
    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        assert client.containers.list(all=True, filters={"label": f"stagecheck.service={name}"}) == []
    finally:
        client.close()
