"""Stages `traffic` (one shift step) and `rollback` (restore the remembered split)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.cloudrun import CloudRun, split_from_proto
from stagecheck.model import Criterion, Evidence, StageResult, Status, TrafficTarget
from stagecheck.traffic import describe, serving_revisions
from tasks.common import guarded


@task(name="shift-traffic", cache_policy=NO_CACHE)
async def shift_traffic(cloudrun: CloudRun, service: str, split: list[TrafficTarget], timeout_s: float,
                        step_label: str) -> tuple[StageResult, list[TrafficTarget]]:
    applied: list[TrafficTarget] = []

    async def body() -> StageResult:
        nonlocal applied
        svc = await cloudrun.set_traffic(service, split, timeout_s)
        applied = split_from_proto(svc.traffic)
        wanted, got = serving_revisions(split), serving_revisions(applied)
        ok = wanted == got
        observed = describe(applied)
        return StageResult(
            name="traffic", status=Status.PASS if ok else Status.FAIL,
            summary=f"{step_label}: {observed}" if ok else f"{step_label}: asked {describe(split)}, got {observed}",
            evidence=[Evidence(kind="traffic", summary=f"{step_label}: {observed}",
                               data={"requested": [t.model_dump() for t in split],
                                     "applied": [t.model_dump() for t in applied]})],
            criteria=[Criterion(name=f"Traffic shifted ({step_label})", stage="traffic",
                                status=Status.PASS if ok else Status.FAIL,
                                expected=describe(split), observed=observed)],
        )

    return await guarded("traffic", body), applied


@task(name="rollback", cache_policy=NO_CACHE)
async def rollback_traffic(cloudrun: CloudRun, service: str, restore: list[TrafficTarget], timeout_s: float,
                           reason: str) -> tuple[StageResult, list[TrafficTarget]]:
    applied: list[TrafficTarget] = []

    async def body() -> StageResult:
        nonlocal applied
        svc = await cloudrun.set_traffic(service, restore, timeout_s)
        applied = split_from_proto(svc.traffic)
        ok = serving_revisions(applied) == serving_revisions(restore)
        summary = f"rolled back after {reason}: {describe(applied)}"
        return StageResult(
            name="rollback", status=Status.PASS if ok else Status.FAIL,
            summary=summary if ok else f"rollback incomplete: asked {describe(restore)}, got {describe(applied)}",
            evidence=[Evidence(kind="traffic", summary=summary, data={"restored": [t.model_dump() for t in applied]})],
            criteria=[Criterion(name="Traffic restored to the previous split", stage="rollback",
                                status=Status.PASS if ok else Status.FAIL, expected=describe(restore),
                                observed=describe(applied))],
        )

    return await guarded("rollback", body), applied
