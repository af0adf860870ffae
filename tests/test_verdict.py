from __future__ import annotations

from stagecheck.model import Criterion, StageResult, Status, Verdict
from stagecheck.verdict import DRY_RUN_STAGES, REQUIRED_STAGES, collect_criteria, decide, required_stages


def stage(
    name: str, status: Status = Status.PASS, summary: str = "", criteria: list[Criterion] | None = None
) -> StageResult:
    return StageResult(name=name, status=status, summary=summary or f"{name} ok", criteria=criteria or [])


def all_passing() -> list[StageResult]:
    return [stage(name) for name in REQUIRED_STAGES]


def test_all_required_pass() -> None:
    verdict, decided_by, reasons, warnings = decide(all_passing(), REQUIRED_STAGES)
    assert (verdict, decided_by, reasons, warnings) == (Verdict.PASS, None, [], [])


def test_warn_stages_pass_with_warnings() -> None:
    stages = all_passing()
    stages[6] = stage("probe-serving", Status.WARN, "load balancer URL degraded (advisory)")
    verdict, decided_by, reasons, warnings = decide(stages, REQUIRED_STAGES)
    assert verdict is Verdict.PASS and decided_by is None and reasons == []
    assert warnings == ["probe-serving: load balancer URL degraded (advisory)"]


def test_warn_criterion_inside_a_passing_stage_is_a_warning() -> None:
    stages = all_passing()
    stages[4] = stage(
        "probe-tagged",
        criteria=[
            Criterion(
                name="WebSocket exchange healthy",
                stage="probe-tagged",
                status=Status.WARN,
                expected="connects",
                observed="closed by ingress",
            )
        ],
    )
    _, _, _, warnings = decide(stages, REQUIRED_STAGES)
    assert warnings == ["probe-tagged: WebSocket exchange healthy: closed by ingress"]


def test_first_fail_in_pipeline_order_decides() -> None:
    stages = all_passing()
    stages[3] = stage("deploy", Status.FAIL, "revision failed: container failed to start")
    stages[4] = stage("probe-tagged", Status.SKIP, "an earlier gate failed")
    stages[7] = stage("logs", Status.FAIL, "new crash: import-error")
    verdict, decided_by, reasons, _ = decide(stages, REQUIRED_STAGES)
    assert verdict is Verdict.FAIL
    assert decided_by == "deploy"
    assert reasons[0] == "deploy: revision failed: container failed to start"
    assert reasons[1] == "logs: new crash: import-error"
    assert "stage probe-tagged did not run: an earlier gate failed" in reasons


def test_missing_required_stage_fails_closed() -> None:
    stages = [s for s in all_passing() if s.name != "logs"]
    verdict, decided_by, reasons, _ = decide(stages, REQUIRED_STAGES)
    assert verdict is Verdict.FAIL
    assert decided_by == "logs"
    assert reasons == ["stage logs did not run: no result recorded"]


def test_skipped_required_stage_fails() -> None:
    stages = all_passing()
    stages[5] = stage("traffic", Status.SKIP, "turned off")
    verdict, decided_by, reasons, _ = decide(stages, REQUIRED_STAGES)
    assert (verdict, decided_by, reasons) == (
        Verdict.FAIL,
        "traffic",
        ["stage traffic did not run: turned off"],
    )


def test_optional_stage_failure_fails_the_verdict() -> None:
    stages = [*all_passing(), stage("smoke", Status.FAIL, "checkout-smoke exited 1")]
    verdict, decided_by, reasons, _ = decide(stages, REQUIRED_STAGES)
    assert (verdict, decided_by, reasons) == (Verdict.FAIL, "smoke", ["smoke: checkout-smoke exited 1"])


def test_optional_skipped_stage_is_fine() -> None:
    stages = [*all_passing(), stage("smoke", Status.SKIP, "no smoke commands")]
    assert decide(stages, REQUIRED_STAGES)[0] is Verdict.PASS


def test_failed_rollback_is_a_reason() -> None:
    stages = all_passing()
    stages[7] = stage("logs", Status.FAIL, "2 new ERROR+ signature(s)")
    stages.append(stage("rollback", Status.FAIL, "could not restore traffic: 409 conflict"))
    verdict, decided_by, reasons, _ = decide(stages, REQUIRED_STAGES)
    assert verdict is Verdict.FAIL and decided_by == "logs"
    assert "rollback: could not restore traffic: 409 conflict" in reasons


def test_dry_run_needs_only_syntax_and_build() -> None:
    assert required_stages(dry_run=True) == DRY_RUN_STAGES == ("syntax", "build")
    assert required_stages(dry_run=False) == REQUIRED_STAGES
    assert decide([stage("syntax"), stage("build")], DRY_RUN_STAGES)[0] is Verdict.PASS
    assert decide([stage("syntax")], DRY_RUN_STAGES)[0] is Verdict.FAIL


def test_nothing_ran_fails() -> None:
    verdict, decided_by, reasons, _ = decide([], ())
    assert verdict is Verdict.FAIL and reasons == ["no stage ran"] and decided_by is None


def test_collect_criteria_in_order() -> None:
    def crit(name: str, st: str) -> Criterion:
        return Criterion(name=name, stage=st, status=Status.PASS, expected="e", observed="o")

    stages = [
        stage("syntax", criteria=[crit("Python parses", "syntax")]),
        stage("build", criteria=[crit("Image builds", "build"), crit("Image size known", "build")]),
        stage("push"),
    ]
    assert [c.name for c in collect_criteria(stages)] == ["Python parses", "Image builds", "Image size known"]


def test_stages_missing_after_a_failed_gate_name_that_gate() -> None:
    stages = [stage("syntax"), stage("build", Status.FAIL, "no Dockerfile")]
    verdict, decided_by, reasons, _ = decide(stages, REQUIRED_STAGES)
    assert verdict is Verdict.FAIL and decided_by == "build"
    assert reasons[0] == "build: no Dockerfile"
    assert "stage push did not run: the run stopped at the failed build gate" in reasons
    assert all("no result recorded" not in r for r in reasons)
