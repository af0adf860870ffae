"""Health-probe decisions, pure: what an answer means, how long to back off, when a probe is done.

No I/O and no clock: the prober (`stagecheck.prober`) passes the elapsed time in and does what
`plan_next` says. The rules, in order of precedence:

* before the first healthy answer, a cold-start answer — a retried status (`policy.retry_statuses`,
  503 and 429 by default: Cloud Run holds a request for a starting instance, then answers 429 "no
  available instance" or 503) or a request timeout — is retried with backoff and reported as a cold start;
* any FAILURE (an unexpected status, a redirect, no connection, an unusable health body, and once the
  revision has answered healthy also a 503/429 or a timeout) ends the probe at once with FAIL and that
  answer as the reason: retries ride out cold starts only, they never turn a real outage into a pass;
* `policy.consecutive_successes` successes in a row end it with PASS, or with the degraded outcome
  (WARN, or FAIL when `policy.degraded == fail`) when one of those answers said `degraded`;
* the deadline ends it with FAIL. It includes the in-flight request: an attempt only starts with a
  timeout that ends by the deadline, and a retry that would start too late is not started.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

from stagecheck.model import Status
from stagecheck.settings import DegradedPolicy, ProbeMode, ProbePolicy

HEALTHY = "healthy"
DEGRADED = "degraded"
# An attempt needs at least this much time before the deadline to be worth starting.
MIN_ATTEMPT_S = 0.05


@dataclass(frozen=True)
class ProbeAttempt:
    """One request and what came back. Never holds request headers (they may carry an identity token)."""

    at_s: float  # seconds since the probe started
    status: int | None  # HTTP status, None when no answer
    latency_s: float
    error: str | None = None  # "timeout after 5 s", "connection refused: ...", "malformed health JSON: ..."
    health: str | None = None  # the health JSON's "status" ("healthy", "degraded", other)
    body: str | None = None  # at most ~200 bytes of a failing answer's body
    cut_by_deadline: bool = False  # no answer because the attempt's timeout was cut short by the deadline
    timed_out: bool = False  # no answer within the request timeout (a cold start until the first healthy answer)


class AttemptOutcome(StrEnum):
    SUCCESS = "success"
    COLD_START = "cold_start"
    FAILURE = "failure"


@dataclass(frozen=True)
class ProbeVerdict:
    finished: bool
    status: Status | None  # PASS / WARN (degraded, policy warn) / FAIL; None while not finished
    reason: str


@dataclass(frozen=True)
class NextAttempt:
    """Wait this long, then send a request with this timeout."""

    wait_s: float
    timeout_s: float


NOT_FINISHED = ProbeVerdict(finished=False, status=None, reason="probing")


def parse_health_body(body: bytes, content_type: str | None) -> tuple[str | None, str | None]:
    """(health status, error) of a health answer's body.

    The body must be a JSON object with a string "status" of "healthy" or "degraded" (case-insensitive).
    Anything else is an error, whatever the content type says: a health endpoint that cannot say it is
    healthy has not said so. An unknown status value is returned together with its error.
    """
    kind = f" (content-type {content_type})" if content_type and "json" not in content_type.lower() else ""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None, f"malformed health JSON{kind}: body is not UTF-8"
    except json.JSONDecodeError as exc:
        if not body.strip():
            return None, f"malformed health JSON{kind}: empty body"
        return None, f"malformed health JSON{kind}: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if not isinstance(doc, dict):
        return None, f"malformed health JSON: expected an object, got {type(doc).__name__}"
    if "status" not in doc:
        return None, 'malformed health JSON: no "status" field'
    value = doc["status"]
    if not isinstance(value, str):
        return None, f'malformed health JSON: "status" is {type(value).__name__}, not a string'
    health = value.strip().lower()
    if health not in (HEALTHY, DEGRADED):
        return health, f"status {value!r} is neither healthy nor degraded"
    return health, None


def classify(attempt: ProbeAttempt, policy: ProbePolicy, *, healthy_seen: bool = False) -> AttemptOutcome:
    """SUCCESS: a 2xx saying healthy/degraded. COLD_START: before the first healthy answer
    (`healthy_seen` False), a retried status or a request timeout. FAILURE: everything else."""
    if 200 <= (attempt.status or 0) < 300 and attempt.error is None and attempt.health in (HEALTHY, DEGRADED):
        return AttemptOutcome.SUCCESS
    if healthy_seen:
        return AttemptOutcome.FAILURE
    if attempt.status is None:
        timed_out = attempt.timed_out and not attempt.cut_by_deadline
        return AttemptOutcome.COLD_START if timed_out else AttemptOutcome.FAILURE
    if attempt.status in policy.retry_statuses:
        return AttemptOutcome.COLD_START
    return AttemptOutcome.FAILURE


def outcomes(attempts: Sequence[ProbeAttempt], policy: ProbePolicy) -> list[AttemptOutcome]:
    """Each attempt classified in order: cold-start answers count as such only until the first success."""
    out: list[AttemptOutcome] = []
    healthy_seen = False
    for attempt in attempts:
        outcome = classify(attempt, policy, healthy_seen=healthy_seen)
        healthy_seen = healthy_seen or outcome is AttemptOutcome.SUCCESS
        out.append(outcome)
    return out


def backoff_delay(retry_index: int, policy: ProbePolicy, rand: float) -> float:
    """Pause before cold-start retry number `retry_index` (0 = the first retry).

    Capped exponential: base = min(max_backoff, initial * 2**retry_index); the `jitter` fraction of it is
    randomised: delay = base * (1 - jitter + jitter * rand), so in (base * (1 - jitter), base].
    `rand` in [0, 1) is injected (random.random in production, a constant in tests).
    """
    if retry_index < 0:
        raise ValueError(f"retry_index must be >= 0, got {retry_index}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    # 2**64 overflows nothing in Python but float(initial * 2**big) does; the cap is reached long before.
    base = (
        policy.max_backoff_s
        if retry_index >= 64
        else min(policy.max_backoff_s, policy.initial_backoff_s * 2.0**retry_index)
    )
    return base * (1.0 - policy.jitter + policy.jitter * rand)


def attempt_timeout(policy: ProbePolicy, elapsed_s: float) -> float | None:
    """Timeout for an attempt starting at `elapsed_s`: the request timeout, cut to end by the deadline.

    None when too little time is left to start one (the deadline is reached).
    """
    remaining = policy.deadline_s - elapsed_s
    if remaining < min(MIN_ATTEMPT_S, policy.request_timeout_s):
        return None
    return min(policy.request_timeout_s, remaining)


def describe_attempt(attempt: ProbeAttempt) -> str:
    """`503`, `200 healthy`, `500 Internal Server Error: <body>`, `timeout after 5 s`."""
    if attempt.status is None:
        return attempt.error or "no answer"
    text = str(attempt.status)
    if attempt.health is not None and attempt.error is None:
        text += f" {attempt.health}"
    if attempt.error is not None:
        text += f" ({attempt.error})"
    elif not 200 <= attempt.status < 300 and attempt.body:
        text += f": {attempt.body}"
    return text


def _status_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _failure_reason(attempt: ProbeAttempt, number: int, policy: ProbePolicy) -> str:
    prefix = f"attempt {number}"
    if attempt.status is None:
        after = " after the revision had answered healthy" if attempt.timed_out else ""
        return f"{prefix}: {attempt.error or 'no answer'}{after}"
    phrase = _status_phrase(attempt.status)
    if attempt.error is not None:
        return f"{prefix}: {phrase}, {attempt.error}"
    if 200 <= attempt.status < 300:
        return f"{prefix}: {phrase} without a health status"
    body = f": {attempt.body}" if attempt.body else ""
    if attempt.status in policy.retry_statuses:
        return f"{prefix}: {phrase} after the revision had answered healthy (no longer a cold start){body}"
    retried = "/".join(str(s) for s in policy.retry_statuses) or "none"
    return f"{prefix}: {phrase} (not a cold-start status [{retried}], not retried){body}"


def _deadline_reason(attempts: Sequence[ProbeAttempt], policy: ProbePolicy) -> str:
    answered = [a for a in attempts if not a.cut_by_deadline]
    last = describe_attempt(answered[-1]) if answered else "none"
    text = f"deadline {policy.deadline_s:g}s reached after {len(attempts)} attempts; last: {last}"
    if attempts and attempts[-1].cut_by_deadline:
        text += " (the final attempt got no answer before the deadline)"
    return text


def _success_streak(attempts: Sequence[ProbeAttempt], policy: ProbePolicy) -> list[ProbeAttempt]:
    streak: list[ProbeAttempt] = []
    for attempt, outcome in zip(reversed(attempts), reversed(outcomes(attempts, policy)), strict=True):
        if outcome is not AttemptOutcome.SUCCESS:
            break
        streak.append(attempt)
    streak.reverse()
    return streak


def cold_start_retries(attempts: Sequence[ProbeAttempt], policy: ProbePolicy) -> int:
    return sum(1 for o in outcomes(attempts, policy) if o is AttemptOutcome.COLD_START)


def first_success_s(attempts: Sequence[ProbeAttempt], policy: ProbePolicy) -> float | None:
    """When the first successful answer arrived (seconds since the start): the cold-start duration."""
    for attempt in attempts:
        if classify(attempt, policy) is AttemptOutcome.SUCCESS:
            return attempt.at_s + attempt.latency_s
    return None


def judge(attempts: Sequence[ProbeAttempt], policy: ProbePolicy, elapsed_s: float) -> ProbeVerdict:
    """The verdict so far: FAIL on any failure, done after K successes in a row, FAIL at the deadline."""
    for number, (attempt, outcome) in enumerate(zip(attempts, outcomes(attempts, policy), strict=True), start=1):
        if outcome is AttemptOutcome.FAILURE:
            if attempt.cut_by_deadline:
                return ProbeVerdict(True, Status.FAIL, _deadline_reason(attempts[:number], policy))
            return ProbeVerdict(True, Status.FAIL, _failure_reason(attempt, number, policy))
    k = policy.consecutive_successes
    streak = _success_streak(attempts, policy)
    if len(streak) >= k:
        streak = streak[-k:]
        retries = cold_start_retries(attempts, policy)
        after = f" after {retries} cold-start retries" if retries else ""
        degraded = sum(1 for a in streak if a.health == DEGRADED)
        if degraded:
            status = Status.FAIL if policy.degraded == DegradedPolicy.FAIL else Status.WARN
            return ProbeVerdict(
                True,
                status,
                f"{k} consecutive answers{after}, {degraded} of them degraded (policy: {policy.degraded})",
            )
        return ProbeVerdict(True, Status.PASS, f"{k} consecutive healthy answers{after}")
    if attempt_timeout(policy, elapsed_s) is None:
        return ProbeVerdict(True, Status.FAIL, _deadline_reason(attempts, policy))
    return NOT_FINISHED


def plan_next(
    attempts: Sequence[ProbeAttempt], policy: ProbePolicy, elapsed_s: float, rand: float
) -> ProbeVerdict | NextAttempt:
    """The finished verdict, or when to send the next request and with which timeout.

    After a success the pause is `success_interval_s`; after a cold-start answer it is the backoff for
    the current run of cold starts. A retry that could not start before the deadline is not waited for.
    """
    verdict = judge(attempts, policy, elapsed_s)
    if verdict.finished:
        return verdict
    if not attempts:
        wait = 0.0
    elif (classified := outcomes(attempts, policy))[-1] is AttemptOutcome.SUCCESS:
        wait = policy.success_interval_s
    else:
        run = 0
        for outcome in reversed(classified):
            if outcome is not AttemptOutcome.COLD_START:
                break
            run += 1
        wait = backoff_delay(run - 1, policy, rand)
    timeout = attempt_timeout(policy, elapsed_s + wait)
    if timeout is None:
        return ProbeVerdict(
            True,
            Status.FAIL,
            _deadline_reason(attempts, policy) + f" (next attempt due in {wait:.2f} s would start too late)",
        )
    return NextAttempt(wait_s=wait, timeout_s=timeout)


def apply_mode(status: Status, mode: ProbeMode) -> Status:
    """Required: as is. Advisory: a FAIL is reported as WARN, never gating. Off: SKIP."""
    if mode == ProbeMode.OFF:
        return Status.SKIP
    if mode == ProbeMode.ADVISORY and status == Status.FAIL:
        return Status.WARN
    return status
