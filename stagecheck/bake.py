"""The bake window, pure: is what the watch saw so far a failure, and the "bake" stage result.

While the new revision serves (during each canary hold and for `traffic.bake_s` after the last step)
the serving URLs are probed at an interval and the revision's logs are read incrementally
(`tasks/bake.py` does the I/O). After each observation the watch asks `judge_probe_answer` /
`judge_bake_logs`; the first failure ends the bake at once (not at the end of the window) and the
release is rolled back. `bake_result` turns the watch into the stage result, with what was watched,
for how long, how many probes and log reads, and when the failure was first seen (time to detect).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from stagecheck import probe_policy as pp
from stagecheck.evidence import BakeData, SignatureGroupData
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.probe_policy import AttemptOutcome, ProbeAttempt
from stagecheck.settings import ProbePolicy, UrlKind
from stagecheck.stages import Stage

STAGE_NAME = Stage.BAKE


@dataclass(frozen=True)
class BakeFinding:
    """The first failure seen during the bake."""

    source: str  # "probe" | "logs"
    reason: str
    at_s: float  # seconds since the bake started: the time to detect
    detected_at: datetime
    first_evidence_at: datetime | None = None  # when the failing answer / log entry happened


@dataclass
class BakeWatch:
    """What one bake observed (filled by the I/O loop, judged by the functions below)."""

    label: str  # "canary hold at 50 %" / "bake after 100 %"
    planned_s: float
    started_at: datetime
    urls: list[str] = field(default_factory=list)
    watched_s: float = 0.0
    probes: int = 0
    probe_failures: int = 0  # answers that failed (advisory URLs included)
    advisory_failures: list[str] = field(default_factory=list)
    last_probe_at: datetime | None = None  # when the last probe round was sent (the logs stage settles to it)
    log_reads: int = 0  # entries.list requests
    log_retries: int = 0  # of which answered 429/503 and retried
    log_entries: int = 0
    last_log_status: Status | None = None
    last_log_summary: str = ""
    new_signatures: list[SignatureGroupData] = field(default_factory=list)  # the failing logs' new groups
    finding: BakeFinding | None = None
    error: str | None = None  # the watch could not run (e.g. logs unreadable): fail closed


def judge_probe_answer(attempt: ProbeAttempt, policy: ProbePolicy, *, url: str, kind: UrlKind) -> str | None:
    """The failure a bake probe answer is, or None when it is healthy.

    The revision answered healthy before the bake started, so nothing is a cold start any more: a
    503/429, a timeout, a refused connection, an unhealthy body — each one fails the gate, as any
    failed answer ends a probe under its policy."""
    if pp.classify(attempt, policy, healthy_seen=True) is AttemptOutcome.SUCCESS:
        return None
    return f"{kind} URL {url}: {pp.describe_attempt(attempt)}"


def judge_bake_logs(logs: StageResult) -> str | None:
    """The failure in the logs judged so far (new ERROR+ signature, new crash, 5xx rate over its limit),
    or None. `logs` is `log_analysis.judge_logs` over everything the revision logged since it started."""
    return logs.summary if logs.status is Status.FAIL else None


def bake_result(watch: BakeWatch) -> StageResult:
    """The "bake" stage: FAIL with the first finding (and its time to detect), FAIL when the watch
    could not run, WARN when an advisory URL failed, PASS when the whole window was watched clean."""
    finding = watch.finding
    window = f"{watch.watched_s:.1f} s of {watch.planned_s:g} s"
    counts = (f"{watch.probes} probes of {len(watch.urls)} URL(s), {watch.log_reads} log reads"
              f"{f' ({watch.log_retries} retried)' if watch.log_retries else ''}, {watch.log_entries} log entries")
    if finding is not None:
        status = Status.FAIL
        summary = f"{watch.label}: failed after {finding.at_s:.1f} s ({finding.source}): {finding.reason}"
    elif watch.error is not None:
        status = Status.FAIL
        summary = f"{watch.label}: could not watch the release: {watch.error}"
    elif watch.advisory_failures:
        status = Status.WARN
        summary = f"{watch.label}: {window} watched; advisory URL failed: {watch.advisory_failures[0]}"
    else:
        status = Status.PASS
        summary = f"{watch.label}: {window} watched, healthy ({counts})"
    data = BakeData(
        label=watch.label,
        planned_s=watch.planned_s,
        watched_s=round(watch.watched_s, 3),
        started_at=watch.started_at.isoformat(),
        urls=list(watch.urls),
        probes=watch.probes,
        probe_failures=watch.probe_failures,
        last_probe_at=watch.last_probe_at.isoformat() if watch.last_probe_at else None,
        log_reads=watch.log_reads,
        log_retries=watch.log_retries,
        log_entries=watch.log_entries,
        detected_by=finding.source if finding else None,
        time_to_detect_s=round(finding.at_s, 3) if finding else None,
        detected_at=finding.detected_at.isoformat() if finding else None,
        first_evidence_at=finding.first_evidence_at.isoformat() if finding and finding.first_evidence_at else None,
        reason=finding.reason if finding else watch.error,
        new_signatures=list(watch.new_signatures),
    ).to_data()
    observed = (f"failed after {finding.at_s:.1f} s: {finding.reason}" if finding
                else f"not watched: {watch.error}" if watch.error else f"healthy for {window}")
    criterion = Criterion(
        name=f"Release healthy while watched ({watch.label})", stage=STAGE_NAME, status=status,
        expected=f"no failed probe, no new ERROR+ signature or crash, 5xx rate within its limit for "
                 f"{watch.planned_s:g} s",
        observed=observed, evidence=[counts],
    )
    evidence = [Evidence(kind="timing", summary=f"{watch.label}: watched {window}; {counts}", data=data)]
    if finding is not None:
        evidence.append(Evidence(kind="note", summary=f"first seen {finding.at_s:.1f} s into the bake "
                                                      f"({finding.source}): {finding.reason}"))
    evidence += [Evidence(kind="log", summary=f"new {g.severity} x{g.count}: {g.signature}",
                          data=g.to_data()) for g in watch.new_signatures[:10]]
    return StageResult(name=STAGE_NAME, status=status, summary=summary, evidence=evidence, criteria=[criterion],
                       data=data)
