"""Judgement: the "logs" StageResult, with its criteria and evidence, from a summary and its comparison."""

from __future__ import annotations

from collections.abc import Sequence

from stagecheck.evidence import LogsData
from stagecheck.log_analysis.comparison import LogComparison
from stagecheck.log_analysis.records import TRACEBACK_HEAD
from stagecheck.log_analysis.signatures import LogSummary, SignatureGroup
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.redact import redact
from stagecheck.settings import LogRules
from stagecheck.stages import Stage

STAGE_NAME = Stage.LOGS
MAX_EVIDENCE_GROUPS = 25


# ---------------------------------------------------------------------------------------------- judge


def _percent(rate: float) -> str:
    return f"{rate * 100:.2f}".rstrip("0").rstrip(".") + " %"


def _pointer(label: str, group: SignatureGroup) -> str:
    crash = f" [{group.crash}]" if group.crash else ""
    return f"{label} {group.severity} x{group.count}{crash}: {group.signature}"


def _group_evidence(label: str, groups: Sequence[SignatureGroup]) -> list[Evidence]:
    evidence = [
        Evidence(kind="log", summary=_pointer(label, g), data={"classification": label, **g.to_dict()})
        for g in groups[:MAX_EVIDENCE_GROUPS]
    ]
    if len(groups) > MAX_EVIDENCE_GROUPS:
        evidence.append(
            Evidence(
                kind="note", summary=f"{len(groups) - MAX_EVIDENCE_GROUPS} more {label} signatures not listed"
            )
        )
    return evidence


MAX_REASON_SIGNATURES = 3
MAX_REASON_EXAMPLE = 160


def example_line(group: SignatureGroup) -> str:
    """One line of the group's (redacted) example: a traceback's exception line, else its first line."""
    lines = [line.strip() for line in group.example.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if TRACEBACK_HEAD.match(lines[0]) else lines[0]
    return line if len(line) <= MAX_REASON_EXAMPLE else line[: MAX_REASON_EXAMPLE - 1] + "…"


def top_signatures(groups: Sequence[SignatureGroup], limit: int = MAX_REASON_SIGNATURES) -> str:
    """`"<signature>" x3 (e.g. "<redacted line>"); ...`: what failed, for the console's reason."""
    parts = [f'"{g.signature}" x{g.count} (e.g. "{example_line(g)}")' for g in groups[:limit]]
    if len(groups) > limit:
        parts.append(f"and {len(groups) - limit} more")
    return "; ".join(parts)


_ORIGIN_NAMES = {"probe": "stagecheck's probes", "advisory": "probes of advisory URLs (not gated)",
                 "other": "other traffic"}


def origins(summary: LogSummary) -> str:
    """`stagecheck's probes 12 (0 failed), other traffic 30 (1 failed), 1 platform refusal (excused)`."""
    parts = [f"{_ORIGIN_NAMES.get(k, k)} {n} ({failed} failed)" for k, (n, failed) in summary.by_origin.items()]
    if summary.platform_refusals:
        parts.append(f"{summary.platform_refusals} platform refusal(s) (excused)")
    return ", ".join(parts) or "no requests"


def judge_logs(
    current: LogSummary, comparison: LogComparison, rules: LogRules, *, truncated: bool = False
) -> StageResult:
    """The "logs" gate. FAIL: more new signatures at/above the threshold than rules.max_new_signatures,
    any new crash, or a 5xx rate above rules.max_5xx_rate. WARN: pre-existing errors or crashes, tolerated
    new signatures within the allowance, no request logs at all, or a read capped at rules.max_entries
    (`truncated`: older entries were not seen). PASS otherwise."""
    threshold = rules.severity_threshold
    baseline = comparison.previous_revision or "none (first deploy)"
    new, pre, crashes_new = comparison.new, comparison.pre_existing, comparison.new_crashes
    crashes_pre = [g for g in pre if g.crash]

    sig_status = (
        Status.FAIL if len(new) > rules.max_new_signatures else Status.WARN if (new or pre) else Status.PASS
    )
    signatures = Criterion(
        name=f"No new {threshold} signatures",
        stage=STAGE_NAME,
        status=sig_status,
        expected=f"<= {rules.max_new_signatures} new signatures at/above {threshold} vs previous revision {baseline}",
        observed=f"{len(new)} new, {len(pre)} pre-existing, {len(comparison.tolerated)} tolerated",
        evidence=[_pointer("new", g) for g in new[:5]] + [_pointer("pre-existing", g) for g in pre[:5]],
    )
    crash_status = Status.FAIL if crashes_new else Status.WARN if crashes_pre else Status.PASS
    crash_observed = (
        ", ".join(f"{g.crash} x{g.count}" for g in crashes_new) + " (new)"
        if crashes_new
        else ", ".join(f"{g.crash} x{g.count}" for g in crashes_pre) + " (pre-existing)"
        if crashes_pre
        else "none"
    )
    crash = Criterion(
        name="No crash signatures",
        stage=STAGE_NAME,
        status=crash_status,
        expected="no new Traceback / ImportError / failed to start / memory limit / exit / panic lines",
        observed=crash_observed,
        evidence=[_pointer("new", g) for g in crashes_new[:5]]
        + [_pointer("pre-existing", g) for g in crashes_pre[:5]],
    )
    rate_fail = current.error_rate_5xx > rules.max_5xx_rate
    rate_status = Status.FAIL if rate_fail else Status.WARN if current.requests == 0 else Status.PASS
    rate = Criterion(
        name=f"5xx rate <= {_percent(rules.max_5xx_rate)}",
        stage=STAGE_NAME,
        status=rate_status,
        expected=f"<= {_percent(rules.max_5xx_rate)} of request logs answered 5xx or 429 (Cloud Run's platform "
        "refusals and advisory URLs' probes excluded)",
        observed=(
            "no request logs in the window"
            if current.requests == 0
            else f"{_percent(current.error_rate_5xx)} ({current.server_errors}/{current.counted_requests}); "
            f"{origins(current)}"
        ),
        evidence=[
            f"{key} x{n}" for key, n in sorted(current.server_error_urls.items(), key=lambda kv: -kv[1])[:5]
        ] + [f"platform refusal {i}" for i in current.refusal_ids],
    )

    problems: list[str] = []
    too_many = len(new) > rules.max_new_signatures
    if too_many:
        problems.append(
            f"{len(new)} new {threshold}+ signature(s) (allowed {rules.max_new_signatures}): {top_signatures(new)}"
        )
    if crashes_new:
        kinds = ", ".join(sorted({g.crash or "" for g in crashes_new}))
        problems.append(f"new crash: {kinds}" + ("" if too_many else f": {top_signatures(crashes_new)}"))
    if rate_fail:
        problems.append(f"5xx rate {_percent(current.error_rate_5xx)} > {_percent(rules.max_5xx_rate)}")
    notes: list[str] = []
    if pre:
        notes.append(f"{len(pre)} pre-existing {threshold}+ signature(s)")
    if new and not problems:
        notes.append(f"{len(new)} new signature(s) within the allowance of {rules.max_new_signatures}")
    if current.requests == 0:
        notes.append("no request logs in the window")
    if truncated:
        notes.append(f"log read capped at {rules.max_entries} entries: older entries not analysed")

    status = Status.FAIL if problems else Status.WARN if notes else Status.PASS
    counts = ", ".join(f"{k} {v}" for k, v in current.by_severity.items()) or "no entries"
    summary = (
        "; ".join(problems or notes) if (problems or notes) else f"no new {threshold}+ signatures, no crashes"
    )
    evidence = [
        Evidence(
            kind="log",
            summary=f"{current.total} entries of {current.revision} ({counts}); "
            f"{current.requests} requests, {current.server_errors} failed; {origins(current)}",
            data={
                "by_severity": dict(current.by_severity),
                "total": current.total,
                "requests": current.requests,
            },
        ),
        *_group_evidence("new", new),
        *_group_evidence("pre-existing", pre),
        *_group_evidence("tolerated", comparison.tolerated),
    ]
    groups = SignatureGroup.as_evidence
    data = LogsData(
        revision=current.revision,
        previous_revision=comparison.previous_revision,
        window=(current.window[0].isoformat(), current.window[1].isoformat()),
        threshold=threshold,
        total=current.total,
        by_severity=dict(current.by_severity),
        requests=current.requests,
        server_errors=current.server_errors,
        cold_start_errors=current.cold_start_errors,
        error_rate_5xx=current.error_rate_5xx,
        max_5xx_rate=rules.max_5xx_rate,
        server_error_urls=dict(current.server_error_urls),
        new=[groups(g) for g in new],
        pre_existing=[groups(g) for g in pre],
        tolerated=[groups(g) for g in comparison.tolerated],
        below_threshold=len(comparison.below_threshold),
        crashes=[groups(g) for g in current.crashes],
        truncated=truncated,
        platform_refusals=current.platform_refusals,
        counted_requests=current.counted_requests,
        by_origin={k: list(v) for k, v in current.by_origin.items()},
    )
    return StageResult(
        name=STAGE_NAME,
        status=status,
        summary=summary,
        evidence=evidence,
        criteria=[signatures, crash, rate],
        data=data.to_data(),
    )


def judge_logs_unavailable(reason: str) -> StageResult:
    """Fail closed: the logs could not be read, so nothing vouches for the revision."""
    text = redact(reason.strip()) or "unknown error"
    return StageResult(
        name=STAGE_NAME,
        status=Status.FAIL,
        summary=f"could not read logs: {text}",
        evidence=[Evidence(kind="note", summary=f"Cloud Logging read failed: {text}")],
        criteria=[
            Criterion(
                name="Logs readable",
                stage=STAGE_NAME,
                status=Status.FAIL,
                expected="the revision's log entries can be read",
                observed=f"could not read logs: {text}",
            )
        ],
        data={"error": text},
    )
