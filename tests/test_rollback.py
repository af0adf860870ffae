"""The rollback decision (stagecheck.rollback) and the stages a verdict requires, branch by branch: pure
functions called directly, no Docker, no sandbox, no Prefect."""

from __future__ import annotations

import pytest

from stagecheck.model import Rollback, StageResult, Status, TrafficTarget
from stagecheck.rollback import RestoreSplit, cleaned_up, decide_rollback, rolled_back
from stagecheck.settings import Settings
from stagecheck.stages import Stage
from stagecheck.verdict import required_for

BEFORE = [TrafficTarget(revision="web-old", percent=90), TrafficTarget(revision="web-older", percent=10)]
CANARY = [TrafficTarget(revision="web-old", percent=50), TrafficTarget(revision="web-new", percent=50, tag="sc-1234567")]


def decide(**kw: object) -> Rollback | RestoreSplit:
    args: dict[str, object] = {"moved": True, "serving_before": BEFORE, "candidate": "web-new", "tag": "sc-1234567",
                               "failed_stage": Stage.PROBE_SERVING, "traffic_now": CANARY}
    args.update(kw)
    return decide_rollback(**args)  # type: ignore[arg-type]


def test_traffic_that_never_moved_needs_no_rollback_and_says_where_it_is() -> None:
    decision = decide(moved=False, traffic_now=BEFORE)
    assert decision == Rollback(needed=False, message="traffic never moved: web-old 90 %, web-older 10 %")


def test_moved_traffic_is_restored_to_the_split_that_served_before_with_the_candidate_tag_at_zero() -> None:
    decision = decide()
    assert isinstance(decision, RestoreSplit)
    assert [(t.revision, t.percent, t.tag) for t in decision.split] == [
        ("web-old", 90, None), ("web-older", 10, None), ("web-new", 0, "sc-1234567")]


@pytest.mark.parametrize("stage", [Stage.PROBE_TAGGED, Stage.TRAFFIC, Stage.PROBE_SERVING, Stage.BAKE, Stage.SMOKE,
                                   Stage.LOGS, Stage.RELEASE])
def test_every_failed_gate_after_moving_traffic_restores_the_same_split(stage: Stage) -> None:
    decision = decide(failed_stage=stage)
    assert isinstance(decision, RestoreSplit)
    assert decision == decide()


def test_a_first_deployment_has_nothing_to_restore_and_says_the_new_revision_keeps_serving() -> None:
    decision = decide(serving_before=[], failed_stage=Stage.LOGS)
    assert decision == Rollback(needed=True, performed=False, ok=False,
                                message="logs failed on a first deployment: nothing served before, nothing to "
                                        "restore; the new revision keeps serving")


def test_a_failed_first_deploy_has_nothing_to_restore_and_claims_nothing_serves() -> None:
    decision = decide(serving_before=[], failed_stage=Stage.DEPLOY)
    assert decision == Rollback(needed=True, performed=False, ok=False,
                                message="first deployment: nothing served before, nothing to restore")


def test_a_split_that_is_not_pinned_cannot_be_restored() -> None:
    with pytest.raises(ValueError, match="LATEST"):
        decide(serving_before=[TrafficTarget(revision=None, percent=100)])


def result(status: Status, summary: str) -> StageResult:
    return StageResult(name=Stage.ROLLBACK, status=status, summary=summary)


def test_a_passed_rollback_is_reported_performed_and_ok_with_what_it_restored() -> None:
    applied = [*BEFORE, TrafficTarget(revision="web-new", percent=0, tag="sc-1234567")]
    out = rolled_back(result(Status.PASS, "rolled back after probe-serving"), applied)
    assert out == Rollback(needed=True, performed=True, ok=True, restored=applied,
                           message="rolled back after probe-serving")


def test_a_failed_rollback_says_traffic_is_unknown_and_what_to_do() -> None:
    out = rolled_back(result(Status.FAIL, "update rejected"), [])
    assert out.performed and out.ok is False
    assert out.message == ("rollback FAILED: update rejected; where traffic is now is unknown: check the service "
                           "before the next release")


@pytest.mark.parametrize(("status", "ok"), [(Status.PASS, True), (Status.FAIL, False)])
def test_a_failed_deploy_cleanup_is_no_rollback_but_reports_its_outcome(status: Status, ok: bool) -> None:
    out = cleaned_up(result(status, "failed deploy cleaned up: the split is unchanged"), BEFORE)
    assert out == Rollback(needed=False, performed=True, ok=ok, restored=BEFORE,
                           message="traffic never moved; failed deploy cleaned up: the split is unchanged")


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {"project": "demo-project", "region": "europe-west1", "registry": "127.0.0.1:5000",
                               "services": ({"name": "web"},)}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def test_the_bake_is_required_only_when_the_plan_bakes_and_the_run_deploys() -> None:
    s = settings()
    assert required_for(s, s.services[0], bake=True)[-1] == Stage.BAKE
    assert Stage.BAKE not in required_for(s, s.services[0])
    dry = settings(dry_run=True)
    assert required_for(dry, dry.services[0], bake=True) == ("syntax", "build")
