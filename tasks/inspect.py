"""Stage `inspect`: read the service as it serves now (before anything changes).

It is the first contact with the Cloud Run API, so an unreachable API, missing credentials or a
permission problem fail here, before anything is built."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.model import Criterion, Evidence, RevisionInfo, StageResult, Status, TrafficTarget
from stagecheck.stages import Stage
from stagecheck.traffic import describe, pin_latest, without_unready
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:  # google.cloud.run_v2 is imported where the API is first used (a dry run never does)
    from stagecheck.clients.cloudrun import CloudRun


@dataclass
class ServiceSnapshot:
    exists: bool
    traffic: list[TrafficTarget] = field(default_factory=list)  # as configured (`traffic`: what was asked)
    serving: list[TrafficTarget] = field(default_factory=list)  # what serves (`traffic_statuses`), LATEST pinned
    latest_ready: str | None = None
    uri: str | None = None
    previous: RevisionInfo | None = None  # the serving revision with the most traffic
    ingress: str = ""  # the service's ingress setting (enum name; "" = unset, all traffic)
    stale: list[TrafficTarget] = field(default_factory=list)  # 0 % targets of revisions that are not Ready

    @property
    def image(self) -> str | None:
        return self.previous.image if self.previous else None


async def read_snapshot(cloudrun: CloudRun, service: str) -> ServiceSnapshot:
    from stagecheck.clients.cloudrun import (
        ingress_name,
        revision_id,
        revision_info,
        served_split,
        split_from_proto,
    )

    svc = await cloudrun.get_service(service)
    if svc is None:
        return ServiceSnapshot(exists=False)
    traffic = split_from_proto(svc.traffic)
    latest_ready = revision_id(svc.latest_ready_revision) or None
    # remembered (and restored by a rollback) is what SERVES, `traffic_statuses`: after a failed traffic update
    # `traffic` still holds what was asked (Lore-Hex/quill-router#781); a service that never served has none
    served = served_split(svc.traffic_statuses) or traffic
    serving = pin_latest(served, latest_ready) if served else []
    # a 0 % target of a revision that is not Ready (e.g. left by a failed deploy) would make the next
    # update fail with that revision's error: it is not carried into the candidate's split
    idle = sorted({t.revision for t in [*serving, *traffic] if t.percent == 0 and t.revision})
    ready = await asyncio.gather(*(cloudrun.revision_ready(service, name) for name in idle))
    not_ready = {name for name, ok in zip(idle, ready, strict=True) if not ok}
    serving, stale = without_unready(serving, not_ready)
    # a stale target only asked for (a failed deploy never applied it) is not carried over either: say so
    stale += [t for t in traffic if t.percent == 0 and t.revision in not_ready and t not in stale]
    main = max((t for t in serving if t.percent > 0), key=lambda t: t.percent, default=None)
    previous = revision_info(await cloudrun.get_revision(service, main.revision)) if main and main.revision else None
    return ServiceSnapshot(exists=True, traffic=traffic, serving=serving, latest_ready=latest_ready,
                           uri=svc.uri or None, previous=previous, ingress=ingress_name(svc), stale=stale)


@task(name="inspect", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.INSPECT))
async def inspect_service(cloudrun: CloudRun, service: str) -> tuple[StageResult, ServiceSnapshot | None]:
    """Read the service as it serves now (split, serving revision, ingress), before anything changes; the
    first contact with the Cloud Run API."""
    async def body() -> tuple[StageResult, ServiceSnapshot | None]:
        snapshot = await read_snapshot(cloudrun, service)
        if not snapshot.exists:
            observed = "service does not exist yet: first deployment, nothing to roll back to"
        else:
            observed = f"serving {describe(snapshot.serving) or 'nothing'}"
            if snapshot.stale:
                observed += (f"; stale targets of revisions that are not Ready will be dropped: "
                             f"{describe(snapshot.stale)}")
        return StageResult(
            name=Stage.INSPECT, status=Status.PASS, summary=observed,
            evidence=[Evidence(kind="traffic", summary=observed,
                               data={"traffic": [t.model_dump() for t in snapshot.traffic], "uri": snapshot.uri,
                                     "image": snapshot.image})],
            criteria=[Criterion(name="Cloud Run API reachable, service state read", stage=Stage.INSPECT,
                                status=Status.PASS, expected="GET service answers", observed=observed)],
        ), snapshot

    result, snapshot = await guarded(Stage.INSPECT, body, None)
    return gate(result, (result, snapshot))
