"""Traffic through the sandbox: weighted splits, tag URLs, the load balancer, request logs, proxy faults."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from google.cloud import logging as gcl
from google.cloud import run_v2
from google.oauth2 import service_account

from localenv.control import SandboxInfo
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


def short(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def two_revisions(clients: RunClients, name: str, image: str) -> tuple[run_v2.Service, str, str]:
    """A service with revisions A (older) and B (latest), all traffic on B."""
    svc = deploy(clients, name, image, env={"V": "a"})
    rev_a = short(svc.latest_ready_revision)
    svc.template.containers[0].env[0].value = "b"
    svc = clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    return svc, rev_a, short(svc.latest_ready_revision)


def test_fifty_fifty_split_and_tag_urls(run_clients: RunClients, sample_image, new_service: Callable[[str], str]) -> None:
    svc, rev_a, rev_b = two_revisions(run_clients, new_service("split"), sample_image.ref)
    svc.traffic = [
        run_v2.TrafficTarget(type_=REVISION, revision=rev_a, percent=50, tag="old"),
        run_v2.TrafficTarget(type_=LATEST, percent=50),
        run_v2.TrafficTarget(type_=REVISION, revision=rev_b, tag="new"),
    ]
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    statuses = {(t.revision, t.percent, t.tag) for t in svc.traffic_statuses}
    assert statuses == {(rev_a, 50, "old"), (rev_b, 50, ""), (rev_b, 0, "new")}

    n = 200
    counts: Counter[str] = Counter()
    started = time.monotonic()
    with httpx.Client(timeout=10, trust_env=False, headers=run_clients.invoke_headers(svc.uri)) as client:
        for _ in range(n):
            resp = client.get(f"{svc.uri}/health")
            assert resp.status_code == 200
            assert resp.json()["revision"] == resp.headers["x-sandbox-revision"]
            counts[resp.headers["x-sandbox-revision"]] += 1
    elapsed = time.monotonic() - started
    print(f"\nproxy throughput: {n / elapsed:.0f} requests/s over {n} sequential requests (sample image)")
    assert set(counts) == {rev_a, rev_b}
    sigma = math.sqrt(n * 0.5 * 0.5)
    assert abs(counts[rev_a] - n / 2) <= 4 * sigma, counts

    tag_uris = {t.tag: t.uri for t in svc.traffic_statuses if t.tag}
    assert set(tag_uris) == {"old", "new"} and len(set(tag_uris.values())) == 2
    with httpx.Client(timeout=10, trust_env=False, headers=run_clients.invoke_headers(svc.uri)) as client:
        for tag, revision in (("old", rev_a), ("new", rev_b)):
            seen = {client.get(f"{tag_uris[tag]}/health").headers["x-sandbox-revision"] for _ in range(20)}
            assert seen == {revision}

    # dropping the tag closes its URL
    svc.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100)]
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    assert [t.tag for t in svc.traffic_statuses] == [""]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tag_uris['old']}/health", timeout=5, trust_env=False)


def test_load_balancer_routes_by_path_and_host(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    shop = deploy(run_clients, new_service("shop"), sample_image.ref)
    cart = deploy(run_clients, new_service("cart"), sample_image.ref)
    shop_id, cart_id = short(shop.name), short(cart.name)
    lb = run_clients.lb_url
    shop_auth, cart_auth = run_clients.invoke_headers(shop.uri), run_clients.invoke_headers(cart.uri)
    try:
        with httpx.Client(timeout=10, trust_env=False) as client:
            # defaults: /<service>/... (an explicit rewrite of /<service> to /) and Host <service>.<anything>
            resp = client.get(f"{lb}/{shop_id}/health", headers=shop_auth)
            assert resp.status_code == 200 and resp.json()["service"] == shop_id
            resp = client.get(f"{lb}/health", headers={"Host": f"{cart_id}.staging.example", **cart_auth})
            assert resp.status_code == 200 and resp.json()["service"] == cart_id
            assert client.get(f"{lb}/no-such-service/health", headers=shop_auth).status_code == 404

            routes = [
                {"service": shop_id, "path_prefix": "/api"},
                {"service": cart_id, "path_prefix": "/cart", "path_prefix_rewrite": "/"},
                {"service": cart_id, "host": "checkout.example.test"},
            ]
            assert run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": routes, "default_routes": False})["routes"]
            resp = client.get(f"{lb}/api/health", headers=shop_auth)  # not stripped: the service answers /api/health
            assert resp.status_code == 200 and resp.json()["service"] == shop_id
            resp = client.get(f"{lb}/cart/health", headers=cart_auth)
            assert resp.status_code == 200 and resp.json()["service"] == cart_id
            resp = client.get(f"{lb}/health", headers={"Host": "checkout.example.test", **cart_auth})
            assert resp.status_code == 200 and resp.json()["service"] == cart_id
            assert client.get(f"{lb}/{shop_id}/health", headers=shop_auth).status_code == 404  # defaults are off

            bad = httpx.put(f"{run_clients.admin_url}/sandbox/v1/lb", json={"routes": [{"service": "x", "path_prefix": "nope"}]},
                            timeout=10, trust_env=False)
            assert bad.status_code == 400 and "path_prefix" in bad.json()["error"]["message"]
    finally:
        run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [], "default_routes": True})


def test_proxy_faults_hit_only_their_route_and_every_request_is_logged(
    run_clients: RunClients, sandbox: SandboxInfo, sample_image, new_service: Callable[[str], str]
) -> None:
    svc = deploy(run_clients, new_service("faulty"), sample_image.ref)
    service_id = short(svc.name)
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": f"proxy.service.{service_id}", "count": 2, "status": 503})
    with httpx.Client(timeout=10, trust_env=False, headers=run_clients.invoke_headers(svc.uri)) as client:
        direct = [client.get(f"{svc.uri}/health?n={i}").status_code for i in range(3)]
        via_lb = client.get(f"{run_clients.lb_url}/{service_id}/health").status_code
    assert direct == [503, 503, 200]
    assert via_lb == 200

    credentials = service_account.Credentials.from_service_account_file(sandbox.credentials_file)
    logging_client = gcl.Client(project=sandbox.project, credentials=credentials, _use_grpc=False,
                                client_options={"api_endpoint": sandbox.logging_api})
    log_filter = (f'logName="projects/{sandbox.project}/logs/run.googleapis.com%2Frequests" AND '
                  f'resource.labels.service_name="{service_id}"')
    entries = list(logging_client.list_entries(filter_=log_filter, order_by=gcl.ASCENDING))
    statuses = [e.http_request["status"] for e in entries]
    assert statuses == [503, 503, 200, 200]
    assert all(e.resource.labels["revision_name"] == short(svc.latest_ready_revision) for e in entries)
