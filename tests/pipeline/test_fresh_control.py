"""`[analysis] baseline = "fresh"`: the control revision (tasks/control.py) is a copy of the SERVING revision's
template (same image digest, same env), created through the real run_v2 client against the sandbox, and it
receives no traffic and no tag (the split stays exactly as it served)."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import run_v2

from stagecheck.clients.cloudrun import CloudRun, split_from_proto
from stagecheck.model import Status, TrafficTarget
from tasks.control import deploy_control
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]




async def test_the_control_copies_the_serving_revision_and_gets_no_traffic(
        cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, service: str) -> None:
    serving = f"{service}-00001-old"
    deploy(run_clients, service, sample_image.digest_ref, env={"GREETING": "serving"}, revision=serving,
           labels={"team": "shop"})
    # the service's template has moved on since (as after a failed release): the control must not copy it
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.template.revision = f"{service}-00002-bad"
    svc.template.containers[0].env = [run_v2.EnvVar(name="GREETING", value="failed-candidate")]
    svc.traffic = [run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                                        revision=serving, percent=100)]
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    split = [TrafficTarget(revision=serving, percent=100)]

    result, control = await deploy_control.fn(cloudrun, service, serving=serving, split=split, timeout_s=60)

    assert result.status is Status.PASS, result.summary
    assert control is not None and control.revision.startswith(f"{service}-control-")
    source = run_clients.services.get_service(name=run_clients.service_name(service))
    created = run_clients.revisions.get_revision(name=f"{run_clients.service_name(service)}/revisions/{control.revision}")
    original = run_clients.revisions.get_revision(name=f"{run_clients.service_name(service)}/revisions/{serving}")
    assert created.containers[0].image == original.containers[0].image == sample_image.digest_ref
    assert control.image == sample_image.digest_ref and "@sha256:" in str(control.image)
    assert {e.name: e.value for e in created.containers[0].env} == {"GREETING": "serving"}
    assert created.labels["team"] == "shop" and created.labels["stagecheck-role"] == "control"
    # no traffic and no tag: the split is the one that served, the control absent from it
    assert split_from_proto(source.traffic) == split
    assert control.revision not in {s.revision for s in source.traffic_statuses}
    assert control.evidence.data["copied_from"] == serving
