"""Cloud Run's traffic, ingress, load balancer and capacity rules, as the sandbox enforces them, driven
through the unmodified run_v2 / logging clients (docs/sandbox.md: Fidelity, "Traffic, ingress, load balancer
and capacity")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from localenv.control import SandboxInfo
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, logging_client_for, wait_for
from tests.sandbox.test_traffic import short, two_revisions

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
NO_INSTANCE = "The request was aborted because there was no available instance."




def served_by(url: str, n: int = 10, headers: dict[str, str] | None = None) -> set[str]:
    with httpx.Client(timeout=10, trust_env=False) as client:
        return {client.get(url, headers=headers).headers.get("x-sandbox-revision", "") for _ in range(n)}



# ---------------------------------------------------------------- reconciling


def test_traffic_statuses_keep_the_old_split_while_reconciling(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("recon")
    svc, rev_a, rev_b = two_revisions(run_clients, name, sample_image.ref)
    auth = run_clients.invoke_headers(svc.uri)
    assert served_by(f"{svc.uri}/health", headers=auth) == {rev_b}
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"reconcile_delay_s": 2.0})
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=rev_a, percent=100)]
    op = run_clients.services.update_service(service=svc)

    during = run_clients.services.get_service(name=svc.name)
    assert during.reconciling is True
    assert [(t.revision, t.percent) for t in during.traffic] == [(rev_a, 100)]  # what was asked ...
    assert [(t.revision, t.percent) for t in during.traffic_statuses] == [(rev_b, 100)]  # ... is not what serves
    assert during.observed_generation < during.generation
    assert served_by(f"{svc.uri}/health", 5, auth) == {rev_b}  # the proxy still routes by the old split
    assert not op.done()

    done = op.result(polling=FAST_POLL, timeout=60)  # the operation completes once reconciled
    assert done.reconciling is False and done.observed_generation == done.generation
    assert [(t.revision, t.percent) for t in done.traffic_statuses] == [(rev_a, 100)]
    assert served_by(f"{svc.uri}/health", headers=auth) == {rev_a}


# ---------------------------------------------------------------- failed revisions


@pytest.mark.parametrize("stale_target", ["sync_400", "operation_error"])
def test_a_stale_target_to_a_failed_revision_fails_the_next_update(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], fidelity: Callable[..., dict[str, str]],
    stale_target: str,
) -> None:
    """UNSURE shape (fidelity `stale_target`): refused on the call, or in the operation (code 13)."""
    fidelity(stale_target=stale_target)
    name = new_service("stale")
    svc = deploy(run_clients, name, sample_image.ref)
    good = short(svc.latest_ready_revision)
    bad = f"{name}-bad"
    # what gcloud run deploy --no-traffic --tag cand sends: the old revision pinned, the new one tag-only
    svc.template.revision = bad
    svc.template.containers[0].env = [run_v2.EnvVar(name="HEALTH_STATUS", value="bogus")]  # exits at start
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=good, percent=100),
                   run_v2.TrafficTarget(type_=REVISION, revision=bad, tag="cand")]
    with pytest.raises(gexc.GoogleAPICallError) as failed_deploy:
        run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    assert f"Revision '{bad}' is not ready and cannot serve traffic." in str(failed_deploy.value)
    rev = run_clients.revisions.get_revision(name=f"{svc.name}/revisions/{bad}")
    ready = next(c for c in rev.conditions if c.type_ == "Ready")
    assert ready.state == run_v2.Condition.State.CONDITION_FAILED
    assert ready.revision_reason == run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR
    assert "Container called exit(2)." in ready.message

    # the next deploy of a healthy template keeps the stale target (read-modify-write) and fails with
    # the OLD revision's error
    current = run_clients.services.get_service(name=svc.name)
    assert any(t.revision == bad for t in current.traffic)
    current.template.revision = f"{name}-next"
    current.template.containers[0].env = []
    with pytest.raises(gexc.GoogleAPICallError) as next_update:
        run_clients.services.update_service(service=current).result(polling=FAST_POLL, timeout=60)
    message = str(next_update.value)
    assert f"Revision '{bad}' is not ready and cannot serve traffic." in message
    assert "Container called exit(2)." in message
    after = run_clients.services.get_service(name=svc.name)
    if stale_target == "operation_error":
        # accepted, refused in the operation (code 13): `traffic` holds what was asked, `traffic_statuses` what
        # still serves (Lore-Hex/quill-router#781)
        assert isinstance(next_update.value, gexc.InternalServerError)
        assert any(t.revision == bad for t in after.traffic)
    else:
        assert isinstance(next_update.value, gexc.BadRequest)
    assert [(t.revision, t.percent) for t in after.traffic_statuses if t.percent] == [(good, 100)]

    # dropping the stale target makes the service updatable again
    after.template.revision = f"{name}-fixed"
    after.template.containers[0].env = []
    after.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=good, percent=100)]
    fixed = run_clients.services.update_service(service=after).result(polling=FAST_POLL, timeout=60)
    assert [(t.revision, t.percent) for t in fixed.traffic_statuses] == [(good, 100)]


# ---------------------------------------------------------------- ingress and the load balancer


def test_ingress_closes_run_app_urls_but_not_the_load_balancer(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("ingr")
    svc = deploy(run_clients, name, sample_image.ref)
    svc.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100),
                   run_v2.TrafficTarget(type_=REVISION, revision=short(svc.latest_ready_revision), tag="cur")]
    svc.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER  # type: ignore[assignment]
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    assert svc.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER
    tag_uri = next(t.uri for t in svc.traffic_statuses if t.tag == "cur")
    auth = run_clients.invoke_headers(svc.uri)
    with httpx.Client(timeout=10, trust_env=False, headers=auth) as client:
        assert client.get(f"{svc.uri}/health").status_code == 404  # run.app URL closed (404 as observed)
        assert client.get(f"{tag_uri}/health").status_code == 404  # tag URLs too
        resp = client.get(f"{run_clients.lb_url}/{name}/health")  # the load balancer still reaches it
        assert resp.status_code == 200 and resp.json()["service"] == name

    svc.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    with httpx.Client(timeout=10, trust_env=False, headers=auth) as client:
        assert client.get(f"{run_clients.lb_url}/{name}/health").status_code == 404  # external LB closed too
        # callers inside the VPC (behaviour `vpc_clients`): `internal` admits the run.app URLs, tag URLs included
        run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"vpc_clients": True})
        assert client.get(f"{svc.uri}/health").status_code == 200
        assert client.get(f"{tag_uri}/health").status_code == 200
        assert client.get(f"{run_clients.lb_url}/{name}/health").status_code == 404  # not the external LB
        run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"vpc_clients": False})

    svc.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    with httpx.Client(timeout=10, trust_env=False, headers=auth) as client:
        assert client.get(f"{svc.uri}/health").status_code == 200
        assert client.get(f"{tag_uri}/health").status_code == 200


def test_lb_url_mask_routes_to_a_tag_and_forwards_the_path_unchanged(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("mask")
    svc, rev_a, rev_b = two_revisions(run_clients, name, sample_image.ref)
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=rev_b, percent=100),
                   run_v2.TrafficTarget(type_=REVISION, revision=rev_a, tag="old")]
    svc.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER  # type: ignore[assignment]
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    lb = run_clients.lb_url
    auth = run_clients.invoke_headers(svc.uri)
    try:
        run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [
            {"url_mask": "<tag>.<service>.tags.example.test"},
            {"url_mask": "<tag>.paths.example.test/<service>"},
        ]})
        # host mask: the tag's revision answers, the path is forwarded as received
        assert served_by(f"{lb}/health", 5, {"Host": f"old.{name}.tags.example.test", **auth}) == {rev_a}
        with httpx.Client(timeout=10, trust_env=False, headers=auth) as client:
            resp = client.get(f"{lb}/health", headers={"Host": f"old.{name}.tags.example.test"})
            assert resp.status_code == 200 and resp.json()["revision"] == rev_a
            assert client.get(f"{lb}/health", headers={"Host": f"nope.{name}.tags.example.test"}).status_code == 503
            # path mask: the tag's revision gets /<service>/health unchanged (the sample serves no such path)
            resp = client.get(f"{lb}/{name}/health", headers={"Host": "old.paths.example.test"})
            assert resp.status_code == 404 and resp.headers["x-sandbox-revision"] == rev_a
    finally:
        run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [], "default_routes": True})


def test_url_map_strips_no_prefix_unless_a_rewrite_says_so(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("rw")
    svc = deploy(run_clients, name, sample_image.ref)
    lb = run_clients.lb_url
    try:
        with httpx.Client(timeout=10, trust_env=False, headers=run_clients.invoke_headers(svc.uri)) as client:
            run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [{"service": name, "path_prefix": "/shop"}]})
            resp = client.get(f"{lb}/shop/health")  # forwarded as /shop/health: the service has no such path
            assert resp.status_code == 404 and resp.headers["x-sandbox-revision"]
            run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [
                {"service": name, "path_prefix": "/shop", "path_prefix_rewrite": "/api"}]})
            resp = client.get(f"{lb}/shop/health")  # /shop replaced by /api: /api/health
            assert resp.status_code == 200 and resp.json()["service"] == name
            bad = client.put(f"{run_clients.admin_url}/sandbox/v1/lb",
                             json={"routes": [{"service": name, "path_prefix_rewrite": "/"}]})
            assert bad.status_code == 400 and "path_prefix" in bad.json()["error"]["message"]
    finally:
        run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [], "default_routes": True})


# ---------------------------------------------------------------- instances and capacity


def _entries(sandbox: SandboxInfo, service: str, log: str) -> list[Any]:
    client = logging_client_for(sandbox)
    log_filter = (f'logName="projects/{sandbox.project}/logs/run.googleapis.com%2F{log}" AND '
                  f'resource.labels.service_name="{service}"')
    return list(client.list_entries(filter_=log_filter, order_by="timestamp asc"))


def test_two_instances_serve_a_revision_and_log_their_instance_ids(
    run_clients: RunClients, sandbox: SandboxInfo, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("multi")
    svc = deploy(run_clients, name, sample_image.ref)

    def ready_ports() -> set[int]:
        status = run_clients.admin("GET", "/sandbox/v1/status")["instances"]
        instances = next(i for i in status if i["service"] == name)
        return {i["port"] for i in instances["instances"] if i["state"] == "READY"}

    # the revision is Ready with its first instance; the second warms up after it, in the background
    # (test_lifecycle.py::test_a_revision_is_ready_once_its_first_instance_is_while_the_second_still_warms_up)
    ports = wait_for(lambda: (found := ready_ports()) and len(found) == 2 and found, timeout=30)
    assert len(ports) == 2  # two containers, each on its own port
    with httpx.Client(timeout=10, trust_env=False, headers=run_clients.invoke_headers(svc.uri)) as client:
        for _ in range(10):
            assert client.get(f"{svc.uri}/health").status_code == 200

    requests = wait_for(lambda: (e := _entries(sandbox, name, "requests")) and len(e) >= 10 and e, timeout=15)
    request_ids = {e.labels["instanceId"] for e in requests}
    assert len(request_ids) == 2
    stdout = wait_for(lambda: [e for e in _entries(sandbox, name, "stdout") if "GET /health" in str(e.payload)],
                      timeout=15)
    assert {e.labels["instanceId"] for e in stdout} == request_ids  # the same instances wrote the app's lines


def test_requests_beyond_capacity_are_queued_then_429(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("cap")
    svc = deploy(run_clients, name, sample_image.ref, env={"SLOW_RESPONSE_S": "2"},
                 scaling=run_v2.RevisionScaling(max_instance_count=1), max_instance_request_concurrency=1)
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"queue_timeout_s": 0.5})
    slow: dict[str, int] = {}
    auth = run_clients.invoke_headers(svc.uri)

    def hold_the_slot() -> None:
        slow["status"] = httpx.get(f"{svc.uri}/slow", headers=auth, timeout=20, trust_env=False).status_code

    def in_flight() -> bool:
        status = run_clients.admin("GET", "/sandbox/v1/status")
        return any(i["service"] == name and i["in_flight"] == 1 for i in status["instances"])

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    try:
        wait_for(in_flight, timeout=10)
        started = time.monotonic()
        resp = httpx.get(f"{svc.uri}/health", headers=auth, timeout=10, trust_env=False)
        waited = time.monotonic() - started
        assert resp.status_code == 429 and NO_INSTANCE in resp.text
        assert waited >= 0.45  # held in the queue before the answer
    finally:
        holder.join(timeout=20)
    assert slow["status"] == 200

    # a queued request is served once the slot frees within the queue timeout
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"queue_timeout_s": 15})
    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    try:
        wait_for(in_flight, timeout=10)
        assert httpx.get(f"{svc.uri}/health", headers=auth, timeout=20, trust_env=False).status_code == 200
    finally:
        holder.join(timeout=20)
