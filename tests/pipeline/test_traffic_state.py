"""The pipeline's traffic verification against a sandbox that reconciles like Cloud Run: `traffic` is
what was asked, `traffic_statuses` what serves, and they differ while `reconciling` is true."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import run_v2

from localenv.control import SandboxInfo
from stagecheck.clients.cloudrun import CloudRun, split_from_proto, split_from_statuses
from stagecheck.model import TrafficTarget
from stagecheck.settings import Settings
from stagecheck.traffic import serving_revisions
from tasks.traffic import apply_and_verify, split_result
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


def cloudrun_for(sandbox: SandboxInfo, service: str) -> CloudRun:
    return CloudRun(Settings(project=sandbox.project, region=sandbox.region, registry=sandbox.registry,
                             services=({"name": service},),  # type: ignore[arg-type]
                             endpoints={"run_api": sandbox.run_api, "logging_api": sandbox.logging_api,  # type: ignore[arg-type]
                                        "credentials_file": sandbox.credentials_file}))


async def test_a_shift_is_verified_against_traffic_statuses_not_traffic(
    sandbox: SandboxInfo, run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("verify")
    svc = deploy(run_clients, name, sample_image.ref, env={"V": "a"})
    rev_a = svc.latest_ready_revision.rsplit("/", 1)[-1]
    svc.template.containers[0].env[0].value = "b"
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    rev_b = svc.latest_ready_revision.rsplit("/", 1)[-1]
    run_clients.admin("PUT", f"/sandbox/v1/services/{name}/behavior", {"reconcile_delay_s": 1.5})
    cloudrun = cloudrun_for(sandbox, name)

    asked = [TrafficTarget(revision=rev_a, percent=100)]
    svc.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=rev_a, percent=100)]
    op = run_clients.services.update_service(service=svc)  # not awaited: read the service meanwhile
    mid = await cloudrun.get_service(name)
    assert mid is not None and mid.reconciling
    # a pipeline reading `traffic` would be fooled: it already says rev_a ...
    assert serving_revisions(split_from_proto(mid.traffic)) == {rev_a: 100}
    # ... while rev_b still serves, and the judgement from what serves says so
    assert serving_revisions(split_from_statuses(mid.traffic_statuses)) == {rev_b: 100}
    early = split_result("traffic", "Traffic shifted", asked, split_from_statuses(mid.traffic_statuses), "step",
                         reconciled=not mid.reconciling)
    assert early.status.value == "FAIL"
    settled = await cloudrun.wait_served(name, timeout_s=30)  # waits for reconciliation, not a fixed time
    assert not settled.reconciling and settled.observed_generation == settled.generation
    assert serving_revisions(split_from_statuses(settled.traffic_statuses)) == {rev_a: 100}
    op.result(polling=FAST_POLL, timeout=30)

    # the stage's own path: set, wait for the operation and the reconciliation, judge what serves
    stored, served, reconciled, _ = await apply_and_verify(cloudrun, name, [TrafficTarget(revision=rev_b, percent=100)],
                                                        timeout_s=30)
    assert reconciled and serving_revisions(served) == {rev_b: 100} == serving_revisions(stored)
