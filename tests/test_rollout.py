"""The rollout record and the recovery decision (pure; milliseconds)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from stagecheck.model import TrafficTarget
from stagecheck.rollout import (
    ANNOTATION_KEY,
    RecoveryAction,
    RolloutRecord,
    RolloutRecordError,
    parse_record,
    plan_recovery,
    record_from_annotations,
)
from stagecheck.traffic import serving_revisions

OLD, NEW = "web-00001-abc", "web-00002-def"


def record(**changes: object) -> RolloutRecord:
    base = RolloutRecord(service="web", candidate=NEW, tag="sc-1234567",
                         before=[TrafficTarget(revision=OLD, percent=100)], step=50,
                         flow_run_id="0b6b4f1e-0000-0000-0000-000000000001", flow_run_name="validate-web-1234567",
                         started_at=datetime(2026, 12, 2, 4, 0, tzinfo=UTC))
    return base.model_copy(update=changes)


def canary(percent: int) -> list[TrafficTarget]:
    return [TrafficTarget(revision=NEW, percent=percent, tag="sc-1234567"),
            TrafficTarget(revision=OLD, percent=100 - percent)]


def test_the_record_round_trips_through_its_annotation_value() -> None:
    rec = record()
    value = rec.to_annotation()
    assert len(value) < 1024 and json.loads(value)["candidate"] == NEW
    assert parse_record(value, "web") == rec
    assert record_from_annotations({ANNOTATION_KEY: value, "other": "x"}, "web") == rec
    assert record_from_annotations({"other": "x"}, "web") is None
    assert rec.at_step(100).step == 100 and rec.step == 50


@pytest.mark.parametrize(("value", "says"), [
    ("not json", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"version": 2}', "has version 2"),
    ('{"version": 1, "service": "web"}', "candidate: Field required"),
    (json.dumps({"version": 1, "service": "web", "candidate": NEW, "before": [], "started_at": "2026-12-02T04:00:00Z"}),
     "before: List should have at least 1 item"),
    (json.dumps({"version": 1, "service": "web", "candidate": NEW, "step": 150, "started_at": "2026-12-02T04:00:00Z",
                 "before": [{"revision": OLD, "percent": 100}]}), "step: Input should be less than or equal to 100"),
    (record(service="api").to_annotation(), "names another service ('api')"),
])
def test_a_malformed_record_is_a_clear_error_not_a_crash(value: str, says: str) -> None:
    with pytest.raises(RolloutRecordError) as info:
        parse_record(value, "web")
    assert says in str(info.value)
    assert f"(annotation {ANNOTATION_KEY!r}) on service 'web'" in str(info.value)


def test_no_record_means_nothing_to_do() -> None:
    plan = plan_recovery(None, canary(50), owner_active=False)
    assert plan.action is RecoveryAction.NOTHING and not plan.restore


def test_an_abandoned_canary_is_restored_with_the_candidate_tag_kept_at_zero() -> None:
    plan = plan_recovery(record(), canary(50), owner_active=False, existing_revisions={OLD, NEW})
    assert plan.action is RecoveryAction.RESTORE
    assert serving_revisions(plan.restore) == {OLD: 100}
    assert TrafficTarget(revision=NEW, percent=0, tag="sc-1234567") in plan.restore
    assert "stopped at 50 %" in plan.reason and "validate-web-1234567" in plan.reason


def test_a_canary_at_100_percent_is_restored_too() -> None:
    plan = plan_recovery(record(step=100), canary(100), owner_active=False)
    assert plan.action is RecoveryAction.RESTORE and serving_revisions(plan.restore) == {OLD: 100}


def test_an_active_owner_is_never_interfered_with() -> None:
    plan = plan_recovery(record(), canary(50), owner_active=True)
    assert plan.action is RecoveryAction.REFUSE and "still active" in plan.reason and not plan.restore


def test_a_candidate_serving_nothing_only_clears_the_record() -> None:
    # killed before the first shift, or somebody already moved the traffic by hand: leave it
    by_hand = [TrafficTarget(revision="web-00003-xyz", percent=100)]
    plan = plan_recovery(record(step=0), by_hand, owner_active=False)
    assert plan.action is RecoveryAction.CLEAR and not plan.restore and "left as it is" in plan.reason


def test_a_split_already_restored_only_clears_the_record() -> None:
    restored = [TrafficTarget(revision=OLD, percent=100), TrafficTarget(revision=NEW, percent=0, tag="sc-1234567")]
    plan = plan_recovery(record(), restored, owner_active=False)
    assert plan.action is RecoveryAction.CLEAR


def test_a_recorded_revision_that_is_gone_is_refused() -> None:
    plan = plan_recovery(record(), canary(50), owner_active=False, existing_revisions={NEW})
    assert plan.action is RecoveryAction.REFUSE and OLD in plan.reason


def test_a_recorded_split_with_several_revisions_is_restored_as_recorded() -> None:
    before = [TrafficTarget(revision=OLD, percent=70), TrafficTarget(revision="web-00000-zzz", percent=30, tag="blue")]
    served = [TrafficTarget(revision=NEW, percent=50, tag="sc-1234567"), TrafficTarget(revision=OLD, percent=35),
              TrafficTarget(revision="web-00000-zzz", percent=15, tag="blue")]
    plan = plan_recovery(record(before=before), served, owner_active=False)
    assert plan.action is RecoveryAction.RESTORE
    assert serving_revisions(plan.restore) == {OLD: 70, "web-00000-zzz": 30}
    assert {t.tag for t in plan.restore} == {None, "blue", "sc-1234567"}


def test_the_recovery_of_one_crashed_run_leaves_other_runs_records_alone() -> None:
    rec = record()
    assert plan_recovery(rec, canary(50), owner_active=False, only_for="another").action is RecoveryAction.NOTHING
    assert plan_recovery(rec, canary(50), owner_active=False,
                         only_for=rec.flow_run_id).action is RecoveryAction.RESTORE
