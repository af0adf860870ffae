"""The bake window's pure decisions: which answer or log state fails the watch, and the stage it reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stagecheck.bake import BakeFinding, BakeWatch, bake_result, judge_bake_logs, judge_probe_answer
from stagecheck.log_analysis import LogRecord, compare, judge_logs, summarise
from stagecheck.model import StageResult, Status
from stagecheck.probe_policy import ProbeAttempt
from stagecheck.settings import LogRules, ProbePolicy, UrlKind

POLICY = ProbePolicy()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REV = "shop-00002-abc"


def test_a_healthy_bake_answer_is_no_failure() -> None:
    ok = ProbeAttempt(1.0, 200, 0.01, health="healthy")
    assert judge_probe_answer(ok, POLICY, url="http://s/health", kind=UrlKind.SERVICE) is None
    degraded = ProbeAttempt(1.0, 200, 0.01, health="degraded")
    assert judge_probe_answer(degraded, POLICY, url="http://s/health", kind=UrlKind.SERVICE) is None


def test_during_the_bake_a_503_429_or_timeout_is_a_failure_not_a_cold_start() -> None:
    for attempt, text in ((ProbeAttempt(1.0, 503, 0.01), "503"), (ProbeAttempt(1.0, 429, 0.01), "429"),
                          (ProbeAttempt(1.0, None, 5.0, error="timeout after 5 s", timed_out=True), "timeout after 5 s"),
                          (ProbeAttempt(1.0, 500, 0.01, body="boom"), "500: boom")):
        reason = judge_probe_answer(attempt, POLICY, url="http://lb/shop/health", kind=UrlKind.LB)
        assert reason == f"lb URL http://lb/shop/health: {text}"


def _logs(records: list[LogRecord]) -> StageResult:
    rules = LogRules()
    current = summarise(records, revision=REV, window=(T0, T0 + timedelta(minutes=1)))
    return judge_logs(current, compare(current, None, rules), rules)


def test_bake_logs_fail_on_a_new_error_and_pass_on_info() -> None:
    info = LogRecord(T0 + timedelta(seconds=1), "INFO", "GET /health 200", "stdout", REV, "a")
    assert judge_bake_logs(_logs([info])) is None
    error = LogRecord(T0 + timedelta(seconds=12), "ERROR", "ledger write failed after 300 ms", "stdout", REV, "b")
    reason = judge_bake_logs(_logs([info, error]))
    assert reason is not None and reason.startswith("1 new ERROR+ signature(s) (allowed 0): ")
    assert "ledger write failed after <n>" in reason


def test_bake_result_reports_time_to_detect_and_what_was_watched() -> None:
    watch = BakeWatch(label="bake after 100 %", planned_s=60, started_at=T0, urls=["http://s/health"],
                      watched_s=21.3, probes=20, log_reads=5, log_entries=40)
    watch.finding = BakeFinding(source="logs", reason="new crash: traceback", at_s=21.2,
                                detected_at=T0 + timedelta(seconds=21.2), first_evidence_at=T0 + timedelta(seconds=19))
    result = bake_result(watch)
    assert result.status is Status.FAIL and result.name == "bake"
    assert result.summary == "bake after 100 %: failed after 21.2 s (logs): new crash: traceback"
    assert result.data["time_to_detect_s"] == 21.2 and result.data["detected_by"] == "logs"
    assert result.data["watched_s"] == 21.3 and result.data["planned_s"] == 60
    assert (result.data["probes"], result.data["log_reads"]) == (20, 5)
    assert result.data["first_evidence_at"] == (T0 + timedelta(seconds=19)).isoformat()


def test_a_clean_bake_passes_with_the_whole_window_and_an_unwatchable_one_fails() -> None:
    watch = BakeWatch(label="bake after 100 %", planned_s=30, started_at=T0, urls=["u"], watched_s=30.02,
                      probes=15, log_reads=6)
    passed = bake_result(watch)
    assert passed.status is Status.PASS and passed.data["time_to_detect_s"] is None
    assert "30.0 s of 30 s watched" in passed.summary
    watch.error = "read logs of shop-00002-abc: quota exceeded (still 429 after 5 retries)"
    failed = bake_result(watch)
    assert failed.status is Status.FAIL and "could not watch the release" in failed.summary


def test_an_advisory_url_failing_is_a_warning() -> None:
    watch = BakeWatch(label="canary hold at 50 %", planned_s=10, started_at=T0, urls=["u"], watched_s=10.0)
    watch.advisory_failures.append("service URL http://s/health: 404")
    assert bake_result(watch).status is Status.WARN
