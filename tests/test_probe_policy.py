"""Probe decisions: health bodies, classification, backoff, the verdict, the next step, modes."""

from __future__ import annotations

import pytest

from stagecheck.model import Status
from stagecheck.probe_policy import (
    AttemptOutcome,
    NextAttempt,
    ProbeAttempt,
    ProbeVerdict,
    apply_mode,
    attempt_timeout,
    backoff_delay,
    classify,
    cold_start_retries,
    first_success_s,
    judge,
    parse_health_body,
    plan_next,
)
from stagecheck.settings import DegradedPolicy, ProbeMode, ProbePolicy

POLICY = ProbePolicy(
    deadline_s=60,
    consecutive_successes=3,
    request_timeout_s=5,
    initial_backoff_s=0.2,
    max_backoff_s=3,
    jitter=0.3,
)


def ok(at: float = 0.0, health: str = "healthy") -> ProbeAttempt:
    return ProbeAttempt(at_s=at, status=200, latency_s=0.01, health=health)


def cold(at: float = 0.0, status: int = 503) -> ProbeAttempt:
    return ProbeAttempt(at_s=at, status=status, latency_s=0.01)


# --- parse_health_body ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"status": "healthy"}', ("healthy", None)),
        (b'{"status": "degraded", "checks": {"db": "slow"}}', ("degraded", None)),
        (b'{"status": "HEALTHY"}', ("healthy", None)),
    ],
)
def test_parse_health_body_accepts(body: bytes, expected: tuple[str, None]) -> None:
    assert parse_health_body(body, "application/json") == expected


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b'{"status": "healthy"', "application/json", "malformed health JSON: Expecting"),
        (b"", "application/json", "malformed health JSON: empty body"),
        (b"OK", "text/plain", "malformed health JSON (content-type text/plain)"),
        (b"<html>502</html>", "text/html; charset=utf-8", "content-type text/html"),
        (b'["healthy"]', "application/json", "expected an object, got list"),
        (b'{"ok": true}', "application/json", 'no "status" field'),
        (b'{"status": 1}', "application/json", '"status" is int'),
        (b"\xff\xfe", None, "not UTF-8"),
    ],
)
def test_parse_health_body_errors(body: bytes, content_type: str | None, error: str) -> None:
    health, problem = parse_health_body(body, content_type)
    assert health is None
    assert problem is not None and error in problem


def test_unknown_health_status_is_returned_with_an_error() -> None:
    assert parse_health_body(b'{"status": "broken"}', "application/json") == (
        "broken",
        "status 'broken' is neither healthy nor degraded",
    )


# --- classify ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "outcome"),
    [
        (ok(), AttemptOutcome.SUCCESS),
        (ok(health="degraded"), AttemptOutcome.SUCCESS),
        (ProbeAttempt(0, 204, 0.01, health="healthy"), AttemptOutcome.SUCCESS),
        (cold(status=503), AttemptOutcome.COLD_START),
        (cold(status=429), AttemptOutcome.COLD_START),
        (ProbeAttempt(0, 500, 0.01), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, 502, 0.01), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, 404, 0.01), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, 302, 0.01, error="redirect to /login"), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, 200, 0.01, error="malformed health JSON: x"), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, 200, 0.01, health="broken", error="status 'broken' ..."), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, 200, 0.01), AttemptOutcome.FAILURE),  # no health status: fail closed
        (ProbeAttempt(0, None, 5.0, error="timeout after 5 s"), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, None, 5.0, error="timeout after 5 s", timed_out=True), AttemptOutcome.COLD_START),
        (ProbeAttempt(0, None, 2.0, error="no answer", timed_out=True, cut_by_deadline=True), AttemptOutcome.FAILURE),
        (ProbeAttempt(0, None, 0.0, error="connection refused: h"), AttemptOutcome.FAILURE),
    ],
)
def test_classify(attempt: ProbeAttempt, outcome: AttemptOutcome) -> None:
    assert classify(attempt, POLICY) is outcome


def test_after_a_healthy_answer_nothing_is_a_cold_start() -> None:
    assert classify(cold(status=503), POLICY, healthy_seen=True) is AttemptOutcome.FAILURE
    timed_out = ProbeAttempt(0, None, 5.0, error="timeout after 5 s", timed_out=True)
    assert classify(timed_out, POLICY, healthy_seen=True) is AttemptOutcome.FAILURE
    assert classify(ok(), POLICY, healthy_seen=True) is AttemptOutcome.SUCCESS


def test_retry_statuses_are_configurable() -> None:
    policy = POLICY.model_copy(update={"retry_statuses": (503,)})
    assert classify(cold(status=429), policy) is AttemptOutcome.FAILURE
    assert classify(cold(status=503), policy) is AttemptOutcome.COLD_START


# --- backoff ----------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    no_jitter = POLICY.model_copy(update={"jitter": 0.0})
    delays = [backoff_delay(i, no_jitter, 0.5) for i in range(8)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0])
    assert backoff_delay(10_000, no_jitter, 0.0) == 3.0


def test_backoff_jitter_spans_the_configured_fraction() -> None:
    assert backoff_delay(1, POLICY, 0.0) == pytest.approx(0.4 * 0.7)
    assert backoff_delay(1, POLICY, 0.999999) == pytest.approx(0.4, rel=1e-5)
    assert 0.28 < backoff_delay(1, POLICY, 0.5) < 0.4


def test_backoff_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="retry_index"):
        backoff_delay(-1, POLICY, 0.5)
    with pytest.raises(ValueError, match="rand"):
        backoff_delay(0, POLICY, 1.0)


# --- judge ------------------------------------------------------------------------------------------


def test_k_consecutive_successes_pass() -> None:
    verdict = judge([ok(), ok(), ok()], POLICY, 1.0)
    assert verdict == ProbeVerdict(True, Status.PASS, "3 consecutive healthy answers")


def test_fewer_than_k_is_not_finished() -> None:
    assert not judge([ok(), ok()], POLICY, 1.0).finished
    assert not judge([], POLICY, 0.0).finished


def test_cold_starts_then_k_successes_pass_and_are_counted() -> None:
    attempts = [cold(0.0), cold(0.3), ok(0.9), ok(1.1), ok(1.3)]
    verdict = judge(attempts, POLICY, 1.4)
    assert verdict.status is Status.PASS
    assert "after 2 cold-start retries" in verdict.reason
    assert cold_start_retries(attempts, POLICY) == 2
    assert first_success_s(attempts, POLICY) == pytest.approx(0.91)


def test_a_cold_start_status_after_the_first_healthy_answer_fails() -> None:
    # issue 8: 503/429 are cold-start answers only until the revision has answered healthy once
    verdict = judge([ok(), ok(), cold(status=429)], POLICY, 2.0)
    assert verdict.finished and verdict.status is Status.FAIL
    assert verdict.reason == ("attempt 3: 429 Too Many Requests after the revision had answered healthy "
                              "(no longer a cold start)")


def test_a_timeout_before_the_first_healthy_answer_is_a_cold_start() -> None:
    slow = ProbeAttempt(0, None, 5.0, error="timeout after 5 s", timed_out=True)
    attempts = [slow, cold(5.1, status=429), ok(6.0), ok(6.2), ok(6.4)]
    verdict = judge(attempts, POLICY, 6.5)
    assert verdict.status is Status.PASS and "after 2 cold-start retries" in verdict.reason
    assert not judge([slow], POLICY, 5.0).finished


def test_a_timeout_after_the_first_healthy_answer_fails() -> None:
    slow = ProbeAttempt(1, None, 5.0, error="timeout after 5 s", timed_out=True)
    verdict = judge([ok(), slow], POLICY, 6.0)
    assert verdict == ProbeVerdict(True, Status.FAIL,
                                   "attempt 2: timeout after 5 s after the revision had answered healthy")


def test_any_failure_fails_at_once_even_after_successes() -> None:
    verdict = judge([ok(), ok(), ProbeAttempt(0.5, 500, 0.01, body="boom")], POLICY, 0.6)
    assert verdict.finished and verdict.status is Status.FAIL
    assert verdict.reason.startswith("attempt 3: 500 Internal Server Error (not a cold-start status")
    assert verdict.reason.endswith(": boom")


def test_malformed_json_fails_without_retry() -> None:
    bad = ProbeAttempt(0, 200, 0.01, error="malformed health JSON: empty body")
    verdict = judge([bad], POLICY, 0.1)
    assert verdict.status is Status.FAIL and "malformed health JSON" in verdict.reason
    assert isinstance(plan_next([bad], POLICY, 0.1, 0.5), ProbeVerdict)


def test_redirect_failure_says_redirect() -> None:
    attempt = ProbeAttempt(0, 302, 0.01, error="redirect to https://accounts.example/login (not followed)")
    verdict = judge([attempt], POLICY, 0.1)
    assert verdict.status is Status.FAIL and "302 Found" in verdict.reason and "redirect to" in verdict.reason


def test_timeout_and_connection_errors_fail() -> None:
    verdict = judge([ProbeAttempt(0, None, 5.0, error="timeout after 5 s")], POLICY, 5.0)
    assert verdict == ProbeVerdict(True, Status.FAIL, "attempt 1: timeout after 5 s")


def test_deadline_fails_with_attempt_count_and_last_answer() -> None:
    attempts = [cold(float(i)) for i in range(7)]
    verdict = judge(attempts, POLICY, 60.0)
    assert verdict == ProbeVerdict(True, Status.FAIL, "deadline 60s reached after 7 attempts; last: 503")
    assert not judge(attempts, POLICY, 59.0).finished


def test_an_attempt_cut_by_the_deadline_is_a_deadline_failure_not_a_timeout() -> None:
    attempts = [cold(0.0), ProbeAttempt(58.0, None, 2.0, error="no answer within ...", cut_by_deadline=True)]
    verdict = judge(attempts, POLICY, 60.0)
    assert verdict.status is Status.FAIL
    assert verdict.reason.startswith("deadline 60s reached after 2 attempts; last: 503")
    assert "final attempt got no answer" in verdict.reason


def test_k_successes_win_even_when_finishing_at_the_deadline() -> None:
    assert judge([ok(), ok(), ok()], POLICY, 60.0).status is Status.PASS


@pytest.mark.parametrize(
    ("degraded", "status"), [(DegradedPolicy.WARN, Status.WARN), (DegradedPolicy.FAIL, Status.FAIL)]
)
def test_degraded_counts_toward_k_and_sets_the_status_by_policy(
    degraded: DegradedPolicy, status: Status
) -> None:
    policy = POLICY.model_copy(update={"degraded": degraded})
    verdict = judge([ok(), ok(health="degraded"), ok()], policy, 1.0)
    assert verdict.finished and verdict.status is status
    assert "1 of them degraded" in verdict.reason


def test_degraded_then_a_cold_start_status_fails() -> None:
    attempts = [ok(health="degraded"), cold(), ok(), ok(), ok()]
    assert judge(attempts, POLICY, 2.0).status is Status.FAIL


# --- attempt_timeout / plan_next --------------------------------------------------------------------


def test_attempt_timeout_is_cut_to_the_deadline() -> None:
    assert attempt_timeout(POLICY, 10.0) == 5.0
    assert attempt_timeout(POLICY, 58.0) == pytest.approx(2.0)
    assert attempt_timeout(POLICY, 59.99) is None
    assert attempt_timeout(POLICY, 61.0) is None


def test_plan_next_starts_at_once_then_waits_the_success_interval() -> None:
    assert plan_next([], POLICY, 0.0, 0.5) == NextAttempt(wait_s=0.0, timeout_s=5.0)
    assert plan_next([ok()], POLICY, 0.1, 0.5) == NextAttempt(wait_s=POLICY.success_interval_s, timeout_s=5.0)


def test_plan_next_backs_off_along_the_run_of_cold_starts() -> None:
    no_jitter = POLICY.model_copy(update={"jitter": 0.0})
    waits = []
    attempts: list[ProbeAttempt] = []
    for _ in range(6):
        attempts.append(cold())
        step = plan_next(attempts, no_jitter, 1.0, 0.5)
        assert isinstance(step, NextAttempt)
        waits.append(step.wait_s)
    assert waits == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.0, 3.0])
    # after a success a 503 is no longer a cold start: the probe ends
    step = plan_next([*attempts, ok(), cold()], no_jitter, 1.0, 0.5)
    assert isinstance(step, ProbeVerdict) and step.status is Status.FAIL


def test_plan_next_does_not_start_a_retry_past_the_deadline() -> None:
    policy = POLICY.model_copy(update={"jitter": 0.0})
    attempts = [cold(), cold(), cold(), cold(), cold()]  # next backoff 3 s
    step = plan_next(attempts, policy, 57.5, 0.5)
    assert isinstance(step, ProbeVerdict) and step.status is Status.FAIL
    assert step.reason.startswith("deadline 60s reached after 5 attempts; last: 503")
    assert "would start too late" in step.reason
    # with time for it, the retry goes ahead with a timeout that ends by the deadline
    step = plan_next(attempts, policy, 55.0, 0.5)
    assert isinstance(step, NextAttempt)
    assert (step.wait_s, step.timeout_s) == pytest.approx((3.0, 2.0))


def test_plan_next_returns_the_verdict_when_finished() -> None:
    assert plan_next([ok(), ok(), ok()], POLICY, 1.0, 0.5) == ProbeVerdict(
        True, Status.PASS, "3 consecutive healthy answers"
    )


# --- apply_mode -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "mode", "expected"),
    [
        (Status.FAIL, ProbeMode.REQUIRED, Status.FAIL),
        (Status.PASS, ProbeMode.REQUIRED, Status.PASS),
        (Status.WARN, ProbeMode.REQUIRED, Status.WARN),
        (Status.FAIL, ProbeMode.ADVISORY, Status.WARN),
        (Status.PASS, ProbeMode.ADVISORY, Status.PASS),
        (Status.WARN, ProbeMode.ADVISORY, Status.WARN),
        (Status.PASS, ProbeMode.OFF, Status.SKIP),
        (Status.FAIL, ProbeMode.OFF, Status.SKIP),
    ],
)
def test_apply_mode(status: Status, mode: ProbeMode, expected: Status) -> None:
    assert apply_mode(status, mode) is expected
