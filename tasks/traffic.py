"""Stages `traffic` (one shift step), `release` (the split a passed release leaves) and `rollback`
(restore the remembered split, also after a failed deploy).

Every change is verified against `traffic_statuses` (what serves) once Cloud Run has reconciled the
service, never against `traffic` (what was asked): while `reconciling` is true the two differ."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.model import Criterion, Evidence, StageResult, Status, TrafficTarget
from stagecheck.settings import AfterPass
from stagecheck.stages import Stage
from stagecheck.traffic import (
    OWN_TAG_RE,
    describe,
    latest_serves,
    prune_own_tags,
    serving_revisions,
    without_unready,
)
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:  # google.cloud.run_v2 is imported where the API is first used (a dry run never does)
    from stagecheck.clients.cloudrun import CloudRun


def _resolved(split: Sequence[TrafficTarget], latest: str | None) -> dict[str, int]:
    """Revision -> percent, LATEST resolved to `latest` when known."""
    out: dict[str, int] = {}
    for revision, percent in serving_revisions(split).items():
        key = latest if revision == "LATEST" and latest else revision
        out[key] = out.get(key, 0) + percent
    return out


def split_result(stage: str, criterion: str, requested: list[TrafficTarget], served: list[TrafficTarget],
                 done: str, *, latest: str | None = None, reconciled: bool = True) -> StageResult:
    """Pure: PASS when the service now SERVES what was asked (revision -> percent, from
    `traffic_statuses`; a LATEST target counts for `latest`, the revision it must resolve to) and
    Cloud Run finished reconciling; else FAIL."""
    ok = reconciled and _resolved(requested, latest) == _resolved(served, None)
    observed = describe(served) + ("" if reconciled else " (still reconciling)")
    summary = f"{done}: {observed}" if ok else f"{done}: asked {describe(requested)}, serving {observed}"
    status = Status.PASS if ok else Status.FAIL
    return StageResult(
        name=stage, status=status, summary=summary,
        evidence=[Evidence(kind="traffic", summary=summary,
                           data={"requested": [t.model_dump() for t in requested],
                                 "applied": [t.model_dump() for t in served], "reconciled": reconciled})],
        criteria=[Criterion(name=criterion, stage=stage, status=status, expected=describe(requested),
                            observed=observed)],
    )


async def apply_and_verify(cloudrun: CloudRun, service: str, split: list[TrafficTarget], timeout_s: float,
                           annotations: dict[str, str | None] | None = None
                           ) -> tuple[list[TrafficTarget], list[TrafficTarget], bool, str]:
    """Send `split` (with `annotations`, in the same request), wait for the operation, then for
    reconciliation; (requested as stored, serving, reconciled, the operation's error or "").

    An operation that ends with an error does not decide: after a failed deploy the service's terminal
    condition stays failed until a good revision exists, and a restoring update's operation may carry that
    error although its split serves; what serves (`traffic_statuses`) decides, the error goes in the evidence."""
    from stagecheck.clients.cloudrun import OperationFailed, split_from_proto, split_from_statuses

    op_error = ""
    try:
        await cloudrun.set_traffic(service, split, timeout_s, annotations=annotations)
    except OperationFailed as exc:
        op_error = str(exc)
    svc = await cloudrun.wait_served(service, timeout_s=timeout_s)
    reconciled = not svc.reconciling and svc.observed_generation >= svc.generation
    return split_from_proto(svc.traffic), split_from_statuses(svc.traffic_statuses), reconciled, op_error


def with_operation_error(result: StageResult, op_error: str) -> StageResult:
    """Pure: the result, with the operation's error (if any) in its evidence and, when it failed, its summary."""
    if not op_error:
        return result
    result.evidence.append(Evidence(kind="note", summary=f"the operation ended with an error: {op_error}",
                                    data={"operation_error": op_error}))
    if result.status is Status.FAIL:
        result.summary = f"{result.summary}; the operation ended with an error: {op_error}"
    return result


async def _apply(cloudrun: CloudRun, service: str, split: list[TrafficTarget], timeout_s: float, stage: str,
                 criterion: str, done: str, latest: str | None = None,
                 annotations: dict[str, str | None] | None = None) -> tuple[StageResult, list[TrafficTarget]]:
    async def body() -> tuple[StageResult, list[TrafficTarget]]:
        stored, served, reconciled, op_error = await apply_and_verify(cloudrun, service, split, timeout_s, annotations)
        result = split_result(stage, criterion, split, served, done, latest=latest, reconciled=reconciled)
        return with_operation_error(result, op_error), stored

    result, applied = await guarded(stage, body, list[TrafficTarget]())
    return gate(result, (result, applied))


async def own_tag_ages(cloudrun: CloudRun, service: str, split: Sequence[TrafficTarget]) -> dict[str, datetime | None]:
    """Creation time of each revision that holds one of stagecheck's own tags (None: unknown / gone)."""
    from stagecheck.clients.cloudrun import proto_time

    revisions = sorted({t.revision for t in split if t.revision and t.tag and OWN_TAG_RE.match(t.tag)})

    async def created(revision: str) -> datetime | None:
        try:
            return proto_time((await cloudrun.get_revision(service, revision)).create_time)
        except Exception:  # a revision that cannot be read sorts as the oldest
            return None

    return dict(zip(revisions, await asyncio.gather(*(created(r) for r in revisions)), strict=True))


@task(name="shift-traffic", cache_policy=NO_CACHE,
      task_run_name=stage_run_name(Stage.TRAFFIC, label_param="step_label"))
async def shift_traffic(cloudrun: CloudRun, service: str, split: list[TrafficTarget], timeout_s: float,
                        step_label: str, annotations: dict[str, str | None] | None = None
                        ) -> tuple[StageResult, list[TrafficTarget]]:
    """One step of the traffic plan, verified against what serves; `annotations` (the rollout record at this
    step) go in the same request as the split."""
    return await _apply(cloudrun, service, split, timeout_s, Stage.TRAFFIC, f"Traffic shifted ({step_label})", step_label,
                        annotations=annotations)


@task(name="rollback", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.ROLLBACK, label_param="reason"))
async def rollback_traffic(cloudrun: CloudRun, service: str, restore: list[TrafficTarget], timeout_s: float,
                           reason: str) -> tuple[StageResult, list[TrafficTarget]]:
    """Restore the remembered split after a failed gate, verified against what serves."""
    return await _apply(cloudrun, service, restore, timeout_s, Stage.ROLLBACK, "Traffic restored to the previous split",
                        f"rolled back after {reason}")


@task(name="release-traffic", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.RELEASE))
async def finish_release(cloudrun: CloudRun, service: str, current: list[TrafficTarget], candidate: str, tag: str,
                         after_pass: AfterPass, keep_tags: int, timeout_s: float
                         ) -> tuple[StageResult, list[TrafficTarget]]:
    """After a passed release: "latest" returns the service to LATEST=100 (the next `gcloud run deploy`
    then serves its revision), "pinned" keeps the candidate pinned at 100 %; either way stagecheck's own
    `sc-*` tags beyond the `keep_tags` newest are removed."""
    async def body() -> tuple[StageResult, list[TrafficTarget]]:
        ages = await own_tag_ages(cloudrun, service, current)
        pruned, removed = prune_own_tags(current, keep_tags, ages, tag)
        final = latest_serves(pruned) if after_pass == AfterPass.LATEST else pruned
        what = "latest revision serves (LATEST=100)" if after_pass == AfterPass.LATEST else f"{candidate} pinned"
        if removed:
            what += f"; removed old stagecheck tags {', '.join(removed)}"
        if final == list(current):
            return StageResult(name=Stage.RELEASE, status=Status.PASS, summary=f"release: {what}; nothing to change",
                               criteria=[Criterion(name="Service left as after a release", stage=Stage.RELEASE,
                                                   status=Status.PASS, expected=what, observed=describe(current))]
                               ), list(current)
        stored, served, reconciled, op_error = await apply_and_verify(cloudrun, service, final, timeout_s)
        result = with_operation_error(split_result(
            Stage.RELEASE, f"Service left as after a release ({after_pass})", final, served, f"release: {what}",
            latest=candidate, reconciled=reconciled), op_error)
        result.data["removed_tags"] = removed
        return result, stored

    result, applied = await guarded(Stage.RELEASE, body, list[TrafficTarget]())
    return gate(result, (result, applied))


@task(name="restore-after-failed-deploy", cache_policy=NO_CACHE,
      task_run_name=stage_run_name("rollback [failed deploy]"))
async def restore_after_failed_deploy(cloudrun: CloudRun, service: str, remembered: list[TrafficTarget],
                                      candidate: str, tag: str, keep_tags: int, timeout_s: float
                                      ) -> tuple[StageResult, list[TrafficTarget]]:
    """After a failed deploy: put back the split remembered before it, without the candidate's target and
    without any 0 % target whose revision is not Ready (a stale target to a failed revision makes
    every later update of the service fail with that revision's error)."""
    from stagecheck.clients.cloudrun import revision_id, split_from_proto

    async def body() -> tuple[StageResult, list[TrafficTarget]]:
        current = await cloudrun.get_service(service)
        if current is None:
            return StageResult(name=Stage.ROLLBACK, status=Status.FAIL, summary=f"service {service} disappeared",
                               criteria=[Criterion(name="Traffic restored after the failed deploy", stage=Stage.ROLLBACK,
                                                   status=Status.FAIL, expected=describe(remembered),
                                                   observed="service not found")]), []
        now = split_from_proto(current.traffic)
        names = sorted({t.revision for t in [*remembered, *now] if t.revision and t.revision != candidate})
        ready = await asyncio.gather(*(cloudrun.revision_ready(service, name) for name in names))
        not_ready = {candidate} | {name for name, ok in zip(names, ready, strict=True) if not ok}
        restore, dropped = without_unready(remembered, not_ready)
        restore = [t for t in restore if t.tag != tag]
        ages = await own_tag_ages(cloudrun, service, restore)
        restore, removed = prune_own_tags(restore, keep_tags, ages, None)
        notes = [f"dropped targets of revisions that are not Ready: {describe(dropped)}"] if dropped else []
        notes += [f"removed old stagecheck tags {', '.join(removed)}"] if removed else []
        done = "failed deploy cleaned up" + (f" ({'; '.join(notes)})" if notes else "")
        if now == restore:
            return StageResult(name=Stage.ROLLBACK, status=Status.PASS, summary=f"{done}: the split is unchanged",
                               criteria=[Criterion(name="Traffic restored after the failed deploy", stage=Stage.ROLLBACK,
                                                   status=Status.PASS, expected=describe(restore),
                                                   observed=describe(now))]), now
        latest = revision_id(current.latest_ready_revision) or None  # the failed candidate never is
        stored, served, reconciled, op_error = await apply_and_verify(cloudrun, service, restore, timeout_s)
        result = with_operation_error(split_result(Stage.ROLLBACK, "Traffic restored after the failed deploy",
                                                   restore, served, done, latest=latest, reconciled=reconciled),
                                      op_error)
        if any(t.revision == candidate for t in stored):
            result.status = Status.FAIL
            result.summary = f"{done}: the failed revision {candidate} is still a traffic target"
        return result, stored

    result, applied = await guarded(Stage.ROLLBACK, body, list[TrafficTarget]())
    return gate(result, (result, applied))
