"""Updates outside deploy (rollout record, canary steps, rollback, release, recover, tag changes) send only what
their mask names, through the real run_v2 client against the sandbox, which refuses a body carrying the service's
template outside a template update as Cloud Run does (googleapis/google-cloud-python#11870, #14259); and a failed
operation is final (code 13 is no transient answer)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from stagecheck.clients.cloudrun import (
    ANNOTATIONS_MASK,
    DEPLOY_MASK,
    TRAFFIC_MASK,
    CloudRun,
    RevisionNameConflict,
    masked_body,
    split_from_proto,
)
from stagecheck.errors import StageError
from stagecheck.model import Status, TrafficTarget
from stagecheck.rollout import ANNOTATION_KEY, RolloutRecord
from stagecheck.settings import AfterPass
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
TAG = "sc-abc1234"




def after_a_deploy(run_clients: RunClients, service: str, image: str) -> tuple[str, str]:
    """What stagecheck's deploy leaves: `old` serving 100 %, the candidate (named, as stagecheck names its
    revisions) at 0 % under its tag, and the service's template naming the candidate."""
    old = f"{service}-00001-old"
    deploy(run_clients, service, image, revision=old)
    candidate = f"{service}-abc1234-new"
    body = run_v2.Service(
        name=run_clients.service_name(service),
        template=run_v2.RevisionTemplate(revision=candidate, containers=[run_v2.Container(
            image=image, env=[run_v2.EnvVar(name="GREETING", value="new")])]),
        traffic=[run_v2.TrafficTarget(type_=REVISION, revision=old, percent=100),
                 run_v2.TrafficTarget(type_=REVISION, revision=candidate, tag=TAG)])
    request = run_v2.UpdateServiceRequest(service=body, update_mask=field_mask_pb2.FieldMask(paths=list(DEPLOY_MASK)))
    run_clients.services.update_service(request=request).result(polling=FAST_POLL, timeout=60)
    return old, candidate


def test_a_patch_body_carries_only_name_etag_and_the_masked_fields() -> None:
    current = run_v2.Service(
        name="projects/p/locations/l/services/s", etag='"e1"', uri="https://s.run.app", generation=7,
        template=run_v2.RevisionTemplate(revision="s-1", containers=[run_v2.Container(image="i")]),
        traffic=[run_v2.TrafficTarget(type_=REVISION, revision="s-1", percent=100)],
        annotations={"keep": "1", "drop": "2"}, labels={"team": "a"})
    split = [TrafficTarget(revision="s-1", percent=100, tag="t")]
    traffic = masked_body(current, TRAFFIC_MASK, template=None, split=split, annotations=None)
    assert run_v2.Service.to_dict(traffic, including_default_value_fields=False) == {
        "name": current.name, "etag": '"e1"',
        "traffic": [{"type_": int(REVISION), "revision": "s-1", "percent": 100, "tag": "t"}]}
    notes = masked_body(current, ANNOTATIONS_MASK, template=None, split=None, annotations={"drop": None, "new": "3"})
    assert "template" not in notes and "traffic" not in notes and "labels" not in notes
    assert dict(notes.annotations) == {"keep": "1", "new": "3"} and notes.etag == '"e1"'
    both = masked_body(current, ("traffic", "annotations"), template=None, split=split, annotations={"new": "3"})
    assert "template" not in both and split_from_proto(both.traffic) == split
    with pytest.raises(ValueError, match="no template"):
        masked_body(current, DEPLOY_MASK, template=None, split=split, annotations=None)


@pytest.mark.docker
@pytest.mark.sandbox
async def test_record_shift_release_rollback_and_tag_changes_pass_on_a_service_whose_template_names_its_revision(
    cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, service: str,
) -> None:
    """Every non-deploy PATCH of a release, after a deploy: no 409 "Revision named ... already exists", no new
    revision, the candidate's template untouched (the old code sent the whole service read back: 409)."""
    from tasks.rollout import clear_rollout_record, record_annotation, write_rollout_record
    from tasks.traffic import finish_release, rollback_traffic, shift_traffic

    old, candidate = after_a_deploy(run_clients, service, sample_image.ref)
    record = RolloutRecord(service=service, candidate=candidate, tag=TAG, before=[TrafficTarget(revision=old, percent=100)],
                           started_at=datetime.now(UTC))
    await write_rollout_record.fn(cloudrun, service, record, 60)
    half = [TrafficTarget(revision=candidate, percent=50, tag=TAG), TrafficTarget(revision=old, percent=50)]
    result, _ = await shift_traffic.fn(cloudrun, service, half, 60, "50 %", annotations=record_annotation(record.at_step(50)))
    assert result.status is Status.PASS, result.summary
    result, _ = await rollback_traffic.fn(cloudrun, service, [TrafficTarget(revision=old, percent=100),
                                                              TrafficTarget(revision=candidate, percent=0, tag=TAG)],
                                          60, "a failed gate")
    assert result.status is Status.PASS, result.summary
    # a tag change: an older stagecheck tag on the old revision, which the release then prunes (keep_tags=1)
    full = [TrafficTarget(revision=candidate, percent=100, tag=TAG),
            TrafficTarget(revision=old, percent=0, tag="sc-0000001")]
    await cloudrun.set_traffic(service, full, 60)
    result, _ = await finish_release.fn(cloudrun, service, full, candidate, TAG, AfterPass.PINNED, 1, 60)
    assert result.status is Status.PASS, result.summary
    assert await clear_rollout_record.fn(cloudrun, service, 60) is None

    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert ANNOTATION_KEY not in svc.annotations
    assert svc.template.revision == candidate
    assert [(t.revision, t.percent, t.tag) for t in svc.traffic_statuses] == [(candidate, 100, TAG)]  # sc-0000001 pruned
    assert sorted(r.name.rsplit("/", 1)[-1] for r in run_clients.revisions.list_revisions(parent=svc.name)) == sorted(
        [old, candidate])


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_revision_name_409_outside_deploy_is_a_stage_error_that_says_no_template_was_sent(
    cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, service: str,
) -> None:
    old, candidate = after_a_deploy(run_clients, service, sample_image.ref)
    message = f"Revision named '{candidate}' with different configuration already exists."
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": "Services.UpdateService", "count": 1, "status": 409,
                                                     "message": message})
    try:
        with pytest.raises(StageError) as info:
            await cloudrun.set_traffic(service, [TrafficTarget(revision=old, percent=100)], 60)
    finally:
        run_clients.admin("DELETE", "/sandbox/v1/faults")
    assert not isinstance(info.value, RevisionNameConflict)  # deploy's: it would pick another revision name
    assert info.value.transient is False
    assert f"update service {service}: Cloud Run refused an update that sends no template ({message})" in str(info.value)
    assert "google-cloud-python#11870" in (info.value.hint or "")
