"""Stages `traffic` (one shift step) and `rollback` (restore the remembered split)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.cloudrun import CloudRun, split_from_proto
from stagecheck.model import Criterion, Evidence, StageResult, Status, TrafficTarget
from stagecheck.traffic import describe, serving_revisions
from tasks.common import guarded


def split_result(stage: str, criterion: str, requested: list[TrafficTarget], applied: list[TrafficTarget],
                 done: str) -> StageResult:
    """Pure: PASS when the service now serves what was asked (revision -> percent), else FAIL."""
    ok = serving_revisions(requested) == serving_revisions(applied)
    observed = describe(applied)
    summary = f"{done}: {observed}" if ok else f"{done}: asked {describe(requested)}, got {observed}"
    status = Status.PASS if ok else Status.FAIL
    return StageResult(
        name=stage, status=status, summary=summary,
        evidence=[Evidence(kind="traffic", summary=summary,
                           data={"requested": [t.model_dump() for t in requested],
                                 "applied": [t.model_dump() for t in applied]})],
        criteria=[Criterion(name=criterion, stage=stage, status=status, expected=describe(requested),
                            observed=observed)],
    )


async def _apply(cloudrun: CloudRun, service: str, split: list[TrafficTarget], timeout_s: float, stage: str,
                 criterion: str, done: str) -> tuple[StageResult, list[TrafficTarget]]:
    applied: list[TrafficTarget] = []

    async def body() -> StageResult:
        nonlocal applied
        svc = await cloudrun.set_traffic(service, split, timeout_s)
        applied = split_from_proto(svc.traffic)
        return split_result(stage, criterion, split, applied, done)

    return await guarded(stage, body), applied


@task(name="shift-traffic", cache_policy=NO_CACHE)
async def shift_traffic(cloudrun: CloudRun, service: str, split: list[TrafficTarget], timeout_s: float,
                        step_label: str) -> tuple[StageResult, list[TrafficTarget]]:
    return await _apply(cloudrun, service, split, timeout_s, "traffic", f"Traffic shifted ({step_label})", step_label)


@task(name="rollback", cache_policy=NO_CACHE)
async def rollback_traffic(cloudrun: CloudRun, service: str, restore: list[TrafficTarget], timeout_s: float,
                           reason: str) -> tuple[StageResult, list[TrafficTarget]]:
    return await _apply(cloudrun, service, restore, timeout_s, "rollback", "Traffic restored to the previous split",
                        f"rolled back after {reason}")
