"""The rollout record on the Cloud Run service (write, clear) and stage `recover` (restore the split a killed
release left behind). The decisions are `stagecheck.rollout`'s; this module does the I/O."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.errors import StageError
from stagecheck.liveness import is_gone
from stagecheck.model import Criterion, Evidence, StageResult, Status, TrafficTarget
from stagecheck.rollout import (
    ANNOTATION_KEY,
    RecoveryAction,
    RecoveryPlan,
    RolloutRecord,
    RolloutRecordError,
    plan_recovery,
    record_from_annotations,
)
from stagecheck.stages import Stage
from stagecheck.traffic import describe
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:
    from stagecheck.clients.cloudrun import CloudRun

ACTIVE_STATES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"})


def record_annotation(record: RolloutRecord | None) -> dict[str, str | None]:
    """The annotation change that writes (or, for None, removes) the record."""
    return {ANNOTATION_KEY: record.to_annotation() if record is not None else None}


@task(name="write-rollout-record", cache_policy=NO_CACHE, task_run_name=stage_run_name("rollout record"))
async def write_rollout_record(cloudrun: CloudRun, service: str, record: RolloutRecord, timeout_s: float) -> None:
    """Put the rollout record on the service before any traffic moves (an annotations-only PATCH with the
    service's etag). Raises StageError when Cloud Run refuses, or when the service already carries the record
    of another release (never overwritten: it holds the split to restore): then no traffic may move."""
    current = await cloudrun.get_service(service)
    if current is None:
        raise StageError(f"service {service} not found")
    try:
        existing = record_from_annotations(dict(current.annotations), service)
    except RolloutRecordError as exc:
        raise StageError(str(exc), hint=f"`stagecheck recover --service {service}`") from None
    if existing is not None and existing.flow_run_id != record.flow_run_id:
        raise StageError(f"the service carries the rollout record of an interrupted release by {existing.owner()}",
                         hint=f"recover it first: `stagecheck recover --service {service}`")
    # stored once the PATCH is accepted; the first shift, which re-reads the service, waits for reconciliation
    await cloudrun.set_annotations(service, record_annotation(record), timeout_s, wait=False)


@task(name="clear-rollout-record", cache_policy=NO_CACHE, task_run_name=stage_run_name("rollout record cleared"))
async def clear_rollout_record(cloudrun: CloudRun, service: str, timeout_s: float) -> str | None:
    """Remove the record once the release has passed or its rollback is verified; the error, or None."""
    try:
        svc = await cloudrun.get_service(service)
        if svc is None or ANNOTATION_KEY not in svc.annotations:
            return None
        await cloudrun.set_annotations(service, record_annotation(None), timeout_s)
    except StageError as exc:
        return str(exc)
    return None


async def owner_active(record: RolloutRecord, current_run: UUID | None) -> bool:
    """Whether the flow run that wrote the record is still active (not this run; not found: not active).
    Raises StageError when the Prefect API cannot tell."""
    if not record.flow_run_id:
        return False
    try:
        owner = UUID(record.flow_run_id)
    except ValueError:
        return False
    if current_run is not None and owner == current_run:
        return False
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        async with get_client() as client:
            run = await client.read_flow_run(owner)
    except ObjectNotFound:
        return False
    except Exception as exc:
        raise StageError(f"cannot tell whether {record.owner()} still runs: the Prefect API answered {exc}") from None
    if record.process is not None and is_gone(record.process):  # killed; its server never learnt of it
        return False
    return run.state is not None and run.state.type.value in ACTIVE_STATES


def recover_result(service: str, plan: RecoveryPlan, served: list[TrafficTarget] | None, *, ok: bool,
                   detail: str = "") -> StageResult:
    """Pure: the `recover` stage for what recovery decided and did."""
    action = plan.action
    if action is RecoveryAction.REFUSE:
        status, summary = Status.FAIL, f"not recovered: {plan.reason}"
    elif action is RecoveryAction.UNKNOWN:
        status, summary = Status.FAIL, f"not recovered: {plan.reason}"
    elif not ok:
        status, summary = Status.FAIL, f"recovery failed: {detail or plan.reason}"
    elif action is RecoveryAction.RESTORE:
        status, summary = Status.PASS, f"restored the split a killed release left: {describe(served or [])}"
    elif action is RecoveryAction.CLEAR:
        status, summary = Status.PASS, f"removed a stale rollout record: {plan.reason}"
    else:
        status, summary = Status.PASS, plan.reason
    data: dict[str, object] = {"action": action.value, "reason": plan.reason}
    if plan.record is not None:
        data["record"] = plan.record.model_dump(mode="json")
    if served is not None:
        data["serving"] = [t.model_dump() for t in served]
    expected = describe(plan.restore) if plan.restore else "no interrupted release left on the service"
    return StageResult(name=Stage.RECOVER, status=status, summary=summary, data=data,
                       evidence=[Evidence(kind="traffic", summary=summary, data=data)],
                       criteria=[Criterion(name="Interrupted release recovered", stage=Stage.RECOVER, status=status,
                                           expected=expected, observed=summary)])


@task(name="recover", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.RECOVER))
async def recover_service(cloudrun: CloudRun, service: str, timeout_s: float, current_run: UUID | None = None,
                          only_for: UUID | None = None) -> tuple[StageResult, RecoveryPlan]:
    """Read the service's rollout record and do what `plan_recovery` decides: restore the recorded split
    (verified against `traffic_statuses`, as rollbacks are), then remove the record. With `only_for`, only
    a record that flow run wrote is recovered."""
    from stagecheck.clients.cloudrun import split_from_statuses
    from tasks.traffic import apply_and_verify, split_result, with_operation_error

    async def body() -> tuple[StageResult, RecoveryPlan]:
        try:
            svc = await cloudrun.get_service(service)
        except StageError as exc:
            plan = RecoveryPlan(RecoveryAction.UNKNOWN, f"could not read the service: {exc}")
            return recover_result(service, plan, None, ok=False), plan
        if svc is None:
            plan = RecoveryPlan(RecoveryAction.NOTHING, f"service {service} does not exist: nothing to recover")
            return recover_result(service, plan, None, ok=True), plan
        try:
            record = record_from_annotations(dict(svc.annotations), service)
        except RolloutRecordError as exc:
            plan = RecoveryPlan(RecoveryAction.REFUSE, f"{exc}; check the service's traffic by hand, then remove "
                                                       f"the annotation {ANNOTATION_KEY!r}")
            return recover_result(service, plan, None, ok=False), plan
        serving = split_from_statuses(svc.traffic_statuses)
        if record is None:
            plan = plan_recovery(None, serving, owner_active=False)
            return recover_result(service, plan, serving, ok=True), plan
        names = sorted({t.revision for t in record.before if t.revision})
        exists = await asyncio.gather(*(_exists(cloudrun, service, name) for name in names))
        plan = plan_recovery(record, serving, owner_active=await owner_active(record, current_run),
                             existing_revisions={n for n, ok in zip(names, exists, strict=True) if ok},
                             only_for=str(only_for) if only_for else None)
        if plan.action is RecoveryAction.NOTHING:
            return recover_result(service, plan, serving, ok=True), plan
        if plan.action is RecoveryAction.REFUSE:
            return recover_result(service, plan, serving, ok=False), plan
        served = serving
        if plan.action is RecoveryAction.RESTORE:
            _, served, reconciled, op_error = await apply_and_verify(cloudrun, service, plan.restore, timeout_s)
            verified = with_operation_error(split_result(Stage.RECOVER, "Recorded split restored", plan.restore,
                                                         served, "restored", reconciled=reconciled), op_error)
            if verified.status is Status.FAIL:  # the record stays: a later recovery tries again
                return recover_result(service, plan, served, ok=False, detail=verified.summary), plan
        await cloudrun.set_annotations(service, record_annotation(None), timeout_s)
        return recover_result(service, plan, served, ok=True), plan

    result, plan = await guarded(Stage.RECOVER, body, RecoveryPlan(RecoveryAction.NOTHING, "not read"))
    return gate(result, (result, plan))


async def _exists(cloudrun: CloudRun, service: str, revision: str) -> bool:
    try:
        await cloudrun.get_revision(service, revision)
    except StageError as exc:
        if "not found" in exc.message:
            return False
        raise
    return True
