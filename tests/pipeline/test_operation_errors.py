"""A failed operation is final (code 13 is no transient answer: Prefect does not run the stage again); inspect
remembers what serves (`traffic_statuses`), not what was asked; a restore is judged by what serves even when its
operation carries the error of an earlier failed revision. Against the sandbox through the real run_v2 client,
each unsure rule both ways (sandbox/fidelity.py)."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from stagecheck.clients.cloudrun import (
    DEPLOY_MASK,
    TRAFFIC_MASK,
    CloudRun,
    OperationFailed,
    split_from_proto,
    split_from_statuses,
)
from stagecheck.model import Status, TrafficTarget
from stagecheck.traffic import serving_revisions
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
pytestmark = [pytest.mark.docker, pytest.mark.sandbox]




def with_a_failed_revision(run_clients: RunClients, service: str, image: str, registry: str) -> tuple[str, str]:
    """`old` serving 100 %, then a deploy whose revision `bad` fails (its image is missing), tagged `cand` at 0 %
    as a `--no-traffic --tag` deploy leaves it: (old, bad)."""
    old = f"{service}-00001-old"
    deploy(run_clients, service, image, revision=old)
    bad = f"{service}-00002-bad"
    body = run_v2.Service(
        name=run_clients.service_name(service),
        template=run_v2.RevisionTemplate(revision=bad, containers=[run_v2.Container(image=f"{registry}/missing:none")]),
        traffic=[run_v2.TrafficTarget(type_=REVISION, revision=old, percent=100),
                 run_v2.TrafficTarget(type_=REVISION, revision=bad, tag="cand")])
    op = run_clients.services.update_service(request=run_v2.UpdateServiceRequest(
        service=body, update_mask=field_mask_pb2.FieldMask(paths=list(DEPLOY_MASK))))
    with pytest.raises(gexc.InternalServerError) as failed:  # code 13, as Cloud Run ends a failed rollout
        op.result(polling=FAST_POLL, timeout=60)
    assert failed.value.message.startswith(f"Revision '{bad}' is not ready and cannot serve traffic.")
    return old, bad


async def _task_run_states(flow_run_id: Any) -> dict[str, list[tuple[str, str]]]:
    """Task run name -> the (state name, message) it went through, oldest first (read through the Prefect API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {str(r.name): [(s.name or "", s.message or "") for s in sorted(
            await client.read_task_run_states(r.id), key=lambda s: s.timestamp)] for r in runs}


@pytest.mark.parametrize("stale_target", ["sync_400", "operation_error"])
async def test_a_canary_step_refused_for_a_revision_that_is_not_ready_is_not_retried(
    prefect_api: None, cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, sandbox: Any, service: str,
    fidelity: Any, stale_target: str,
) -> None:
    """Either shape of the refusal (a 400 on the call, or an operation ending with code 13) fails the step once:
    the old retry policy took code 13 (google-api-core's InternalServerError) for a transient 500."""
    from prefect import flow

    from stagecheck.retry_policy import ApiRetries, with_api_retries
    from tasks.traffic import shift_traffic

    fidelity(stale_target=stale_target)
    old, bad = with_a_failed_revision(run_clients, service, sample_image.ref, sandbox.registry)
    step = with_api_retries(shift_traffic, ApiRetries(retries=2, delay_s=(0.05,)))

    @flow(name="one-canary-step")
    async def one_step() -> Any:
        split = [TrafficTarget(revision=bad, percent=50, tag="cand"), TrafficTarget(revision=old, percent=50)]
        return await step(cloudrun, service, split, 30, "50 %", return_state=True)  # type: ignore[misc]

    state = await one_step(return_state=True)
    states = await _task_run_states(state.state_details.flow_run_id)
    [(name, seen)] = states.items()
    names = [n for n, _ in seen]
    assert names[-1] == "Failed" and "Retrying" not in names and "AwaitingRetry" not in names, (name, seen)
    assert f"Revision '{bad}' is not ready and cannot serve traffic." in seen[-1][1]
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert serving_revisions(split_from_statuses(svc.traffic_statuses)) == {old: 100}


@pytest.mark.parametrize("terminal", ["stays_failed", "clears"])
async def test_inspect_remembers_what_serves_and_the_restore_is_judged_by_it(
    cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, sandbox: Any, service: str, fidelity: Any,
    terminal: str,
) -> None:
    """A traffic update refused in its operation leaves `traffic` (asked) at 50/50 while `traffic_statuses` keep
    the old revision at 100 % (Lore-Hex/quill-router#781): inspect remembers the latter; restoring it passes on
    what serves, whether or not the restoring operation carries the failed revision's error."""
    from tasks.inspect import read_snapshot
    from tasks.traffic import rollback_traffic

    fidelity(stale_target="operation_error", terminal_after_failed_revision=terminal)
    old, bad = with_a_failed_revision(run_clients, service, sample_image.ref, sandbox.registry)
    current = await cloudrun.get_service(service)
    assert current is not None
    op = await cloudrun.update_service(current, split=[TrafficTarget(revision=bad, percent=50, tag="cand"),
                                                       TrafficTarget(revision=old, percent=50)],
                                       update_mask=TRAFFIC_MASK)
    with pytest.raises(OperationFailed, match="is not ready and cannot serve traffic") as failed:
        await cloudrun.finish(op, "shift", 30)
    assert failed.value.transient is False  # code 13 (INTERNAL) in an operation is final
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert serving_revisions(split_from_proto(svc.traffic)) == {bad: 50, old: 50}  # asked
    assert serving_revisions(split_from_statuses(svc.traffic_statuses)) == {old: 100}  # serving

    snapshot = await read_snapshot(cloudrun, service)
    assert snapshot.serving == [TrafficTarget(revision=old, percent=100)]
    assert serving_revisions(snapshot.traffic) == {bad: 50, old: 50}  # what was asked, shown in the report only

    result, applied = await rollback_traffic.fn(cloudrun, service, snapshot.serving, 30, "a failed step")
    assert result.status is Status.PASS, result.summary
    assert applied == [TrafficTarget(revision=old, percent=100)]
    notes = [e.summary for e in result.evidence if e.kind == "note"]
    if terminal == "stays_failed":  # the operation said the failed revision's error; what serves decided
        assert len(notes) == 1 and f"Revision '{bad}' is not ready" in notes[0]
    else:
        assert notes == []
