"""The ID-token audience at a tag URL is unsure (no source says whether a tag URL takes a token for the service
URL or for itself): the probe stage sends the service URL first, retries a 401 at a tag URL once with the tag URL
as audience, and says which one worked. Against the sandbox both ways (fidelity `tag_audience`), with tokens
minted by google-auth from the sandbox's key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from stagecheck.clients.identity import IdTokens
from stagecheck.model import Status
from stagecheck.probe_auth import tag_audience_retry, url_origin
from stagecheck.prober import ProbeTarget
from stagecheck.settings import ProbeAuth, ProbePolicy, UrlKind
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, unique_name

POLICY = ProbePolicy(deadline_s=20, consecutive_successes=2, initial_backoff_s=0.1, max_backoff_s=0.5,
                     success_interval_s=0.05)


def test_only_a_401_at_a_tag_url_is_retried_with_the_tag_url_as_audience() -> None:
    tag = "https://sc-abc1234---svc-xyz.a.run.app/health"
    service = "https://svc-xyz.a.run.app"
    assert url_origin(tag) == "https://sc-abc1234---svc-xyz.a.run.app"
    assert tag_audience_retry(UrlKind.TAGGED, tag, service, 401, POLICY) == "https://sc-abc1234---svc-xyz.a.run.app"
    assert tag_audience_retry(UrlKind.TAGGED, tag, service, 403, POLICY) is None  # the token was fine: no permission
    assert tag_audience_retry(UrlKind.SERVICE, f"{service}/health", service, 401, POLICY) is None
    assert tag_audience_retry(UrlKind.TAGGED, tag, url_origin(tag) + "/", 401, POLICY) is None  # already tried
    none = POLICY.model_copy(update={"auth": ProbeAuth.NONE})
    assert tag_audience_retry(UrlKind.TAGGED, tag, service, 401, none) is None


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.parametrize(("switch", "accepted"), [("service_url", "the service URL"), ("tag_url", "the tag URL")])
async def test_the_tagged_probe_passes_whichever_audience_the_tag_url_takes_and_says_which(
    run_clients: RunClients, sample_image: Any, sandbox: Any, fidelity: Any, switch: str, accepted: str,
) -> None:
    from tasks.probe import probe_urls

    name = unique_name("tagaud")
    try:
        svc = deploy(run_clients, name, sample_image.ref)
        body = run_v2.Service(name=svc.name, traffic=[
            run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                                 percent=100),
            run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                                 revision=svc.latest_ready_revision.rsplit("/", 1)[-1], tag="sc-abc1234")])
        svc = run_clients.services.update_service(request=run_v2.UpdateServiceRequest(
            service=body, update_mask=field_mask_pb2.FieldMask(paths=["traffic"]))).result(polling=FAST_POLL,
                                                                                           timeout=60)
        tag_uri = next(t.uri for t in svc.traffic_statuses if t.tag == "sc-abc1234")
        fidelity(tag_audience=switch)
        target = ProbeTarget(url=f"{tag_uri}/health", kind=UrlKind.TAGGED, audience=svc.uri)
        async with httpx.AsyncClient(trust_env=False) as http:
            result = await probe_urls.fn(http, "probe-tagged", [target], POLICY, tokens=IdTokens(sandbox.credentials_file),
                                         service=name)
    finally:
        run_clients.services.delete_service(name=run_clients.service_name(name)).result(polling=FAST_POLL, timeout=60)
    assert result.status is Status.PASS, result.summary
    [row] = [c for c in result.criteria if c.name == "ID-token audience at the tag URL"]
    assert row.status is Status.PASS and row.observed.startswith(f"{tag_uri}/health accepted {accepted}")
