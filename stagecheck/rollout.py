"""The durable rollout record, and what recovery does with it (pure).

Before a release moves any traffic it writes a *rollout record* onto the Cloud Run service itself,
as one service annotation (`stagecheck.dev/rollout`, JSON): the split that served before the release,
the candidate revision and its tag, the step reached, and the Prefect flow run that owns the release.
Each traffic step updates it in the same request as the traffic; a passed release, and a verified
rollback, remove it. A record that is still there therefore means a run died mid-release (the worker was
killed, the machine went away): `stagecheck recover` (and the next validation of the service, and the
Automation on a crashed validation) restores the recorded split.

Why an annotation: Cloud Run v2 service annotations are free-form strings ("may be set by external
tools to store and arbitrary metadata ... should be preserved when modifying objects"), up to 256 KiB in
total, while labels allow only 63 lowercase characters per value (no JSON). The key's prefix must not be
one of Cloud Run's reserved namespaces (`run.googleapis.com`, `cloud.googleapis.com`,
`serving.knative.dev`, `autoscaling.knative.dev`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stagecheck.liveness import ProcessRef
from stagecheck.model import TrafficTarget
from stagecheck.traffic import describe, rollback_split, serving_revisions

ANNOTATION_KEY = "stagecheck.dev/rollout"
RECORD_VERSION = 1


class RolloutRecordError(ValueError):
    """The service carries a rollout record that cannot be read (the message says what is wrong)."""


class RolloutRecord(BaseModel):
    """What a release in progress must leave on its service so that another process can undo it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    service: str = Field(min_length=1)
    candidate: str = Field(min_length=1, description="the revision being released")
    tag: str | None = Field(None, description="the candidate's traffic tag (kept at 0 % after a restore)")
    before: list[TrafficTarget] = Field(min_length=1, description="the split that served before the release")
    step: int = Field(0, ge=0, le=100, description="the percent the candidate was last asked to serve")
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    started_at: datetime
    process: ProcessRef | None = Field(None, description="the process running the release (seen gone on its host "
                                                         "when killed, even while the server shows the run active)")

    def at_step(self, percent: int) -> RolloutRecord:
        return self.model_copy(update={"step": percent})

    def to_annotation(self) -> str:
        """The annotation value (compact JSON)."""
        return self.model_dump_json(exclude_none=True)

    def owner(self) -> str:
        if self.flow_run_name and self.flow_run_id:
            return f"flow run {self.flow_run_name!r} ({self.flow_run_id})"
        if self.flow_run_id:
            return f"flow run {self.flow_run_id}"
        return "a run outside Prefect"


def parse_record(value: str, service: str) -> RolloutRecord:
    """The record an annotation value holds; RolloutRecordError (never another exception) when it is
    not JSON, not an object, of another version or missing fields."""
    where = f"the rollout record (annotation {ANNOTATION_KEY!r}) on service {service!r}"
    try:
        data = json.loads(value)
    except (json.JSONDecodeError, TypeError) as exc:
        raise RolloutRecordError(f"{where} is not JSON ({exc}): "
                                 f"{value[:80]!r}") from None
    if not isinstance(data, dict):
        raise RolloutRecordError(f"{where} is not a JSON object: {value[:80]!r}")
    if data.get("version") != RECORD_VERSION:
        raise RolloutRecordError(f"{where} has version {data.get('version')!r}; this stagecheck reads version "
                                 f"{RECORD_VERSION}")
    try:
        record = RolloutRecord.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors())
        raise RolloutRecordError(f"{where} is invalid: {problems}") from None
    if record.service != service:
        raise RolloutRecordError(f"{where} names another service ({record.service!r})")
    return record


def record_from_annotations(annotations: dict[str, str], service: str) -> RolloutRecord | None:
    """The record among a service's annotations; None when there is none."""
    value = annotations.get(ANNOTATION_KEY)
    return None if value is None else parse_record(value, service)


class RecoveryAction(StrEnum):
    NOTHING = "nothing"  # no record: nothing was interrupted
    CLEAR = "clear"  # the record is stale (traffic is already where it should be): remove it only
    RESTORE = "restore"  # put the recorded split back, then remove the record
    REFUSE = "refuse"  # do not touch the service (its owner still runs, or the split cannot be restored)
    UNKNOWN = "unknown"  # the service could not be read: whether a release was interrupted is not known


@dataclass(frozen=True)
class RecoveryPlan:
    action: RecoveryAction
    reason: str
    record: RolloutRecord | None = None
    restore: list[TrafficTarget] = field(default_factory=list)


def plan_recovery(record: RolloutRecord | None, serving: Sequence[TrafficTarget], *, owner_active: bool,
                  existing_revisions: set[str] | None = None, only_for: str | None = None) -> RecoveryPlan:
    """Pure: what recovery does with a service's rollout record, given what serves now (the service's
    `traffic_statuses`), whether the record's flow run is still active (Pending/Running: then it is its
    release, not an abandoned one), and the revisions the service still has (None: unknown).

    - no record, or (with `only_for`, the Automation's recovery of one crashed run) a record of another run:
      nothing;
    - the owner is still active: refuse (it may still be rolling out; it cleans up itself);
    - the candidate serves nothing: the traffic never moved, or somebody already put it elsewhere;
      only the record is removed, the split is left as it is;
    - a revision of the recorded split is gone: refuse (restoring would route to nothing);
    - serving already equals the recorded split: only the record is removed;
    - else restore the recorded split (the candidate keeps its tag at 0 %, as after a rollback).
    """
    if record is None:
        return RecoveryPlan(RecoveryAction.NOTHING, "no rollout record on the service: no release was interrupted")
    if only_for is not None and record.flow_run_id != only_for:
        return RecoveryPlan(RecoveryAction.NOTHING, f"the rollout record belongs to {record.owner()}, not to flow run "
                                                    f"{only_for}: left to its own recovery", record)
    if owner_active:
        return RecoveryPlan(RecoveryAction.REFUSE, f"the release of {record.candidate} by {record.owner()} is still "
                                                   "active; it restores or clears the split itself", record)
    now = serving_revisions(serving)
    if now.get(record.candidate, 0) == 0:
        return RecoveryPlan(RecoveryAction.CLEAR, f"the candidate {record.candidate} serves no traffic "
                                                  f"(serving: {describe(serving)}); the split is left as it is",
                            record)
    wanted = {t.revision for t in record.before if t.revision and t.percent > 0}
    missing = sorted(wanted - existing_revisions) if existing_revisions is not None else []
    if missing:
        return RecoveryPlan(RecoveryAction.REFUSE, f"cannot restore the recorded split ({describe(record.before)}): "
                                                   f"revision(s) {', '.join(missing)} no longer exist", record)
    try:
        restore = rollback_split(record.before, record.candidate, record.tag)
    except ValueError as exc:
        return RecoveryPlan(RecoveryAction.REFUSE, f"the recorded split cannot be restored: {exc}", record)
    if serving_revisions(restore) == now:
        return RecoveryPlan(RecoveryAction.CLEAR, f"the service already serves the recorded split "
                                                  f"({describe(serving)})", record, restore)
    return RecoveryPlan(RecoveryAction.RESTORE, f"{record.owner()} stopped at {record.step} % of {record.candidate}: "
                                                f"restoring {describe(restore)} (serving: {describe(serving)})",
                        record, restore)
