"""Why a gate failed, in the revision's own words: after a gate fails once the candidate has served,
its logs are read once more and the crash and new ERROR signatures seen up to the failure are named
in the failing stage (`StageResult.causes`, its evidence) and so in the report's reasons.

A probe that sees a crashed instance only knows "503" or "connection refused"; the traceback the
revision printed before it died (`RuntimeError: connection pool exhausted`) is what an on-call
engineer looks for next. Pre-existing signatures (seen on the previous revision) are not blamed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from stagecheck.evidence import BakeData
from stagecheck.log_analysis.comparison import LogComparison
from stagecheck.log_analysis.judgement import example_line
from stagecheck.log_analysis.signatures import SignatureGroup
from stagecheck.model import Evidence, StageResult, Status
from stagecheck.stages import Stage

# the gates that fail while the candidate runs and serves requests; the logs stage (and a bake stopped by
# the logs) already names the signatures it judged
EXPLAINED_STAGES = frozenset({Stage.PROBE_TAGGED, Stage.PROBE_SERVING, Stage.BAKE, Stage.ANALYSIS, Stage.SMOKE})
MAX_CAUSES = 3
# entries stamped a little after the failure was seen still belong to it (the crash's last lines, the
# ERROR the app logged while answering the failing probe)
AFTER_FAILURE = timedelta(seconds=5)


def needs_explaining(failed: StageResult) -> bool:
    """Pure: a failed gate whose failure the candidate's logs may explain and that does not name them yet."""
    if failed.status is not Status.FAIL or failed.name not in EXPLAINED_STAGES:
        return False
    watched = BakeData.read(failed.data) if failed.name == Stage.BAKE else None
    return watched is None or watched.detected_by != "logs"


def failure_time(failed: StageResult) -> datetime:
    """Pure: when a failed gate saw its failure (a bake records it; otherwise: now, as it is recorded)."""
    watched = BakeData.read(failed.data) if failed.name == Stage.BAKE else None
    if watched is not None and watched.detected_at:
        return datetime.fromisoformat(watched.detected_at)
    return datetime.now(UTC)


def failure_causes(comparison: LogComparison, failed_at: datetime) -> list[SignatureGroup]:
    """Pure: the new crash signatures (those naming a cause before a bare exit), then the other new signatures
    at/above the threshold, first seen no later than shortly after `failed_at`; within each kind the one
    nearest the failure first."""
    seen = [g for g in comparison.new if g.first_seen <= failed_at + AFTER_FAILURE]

    def distance(group: SignatureGroup) -> float:
        return abs((failed_at - group.first_seen).total_seconds())

    # crashes first, and of those the ones that say why (a traceback, a panic, the memory limit) before the
    # platform's bare "Container called exit(1)."; then by distance from the failure
    return sorted(seen, key=lambda g: (g.crash is None, g.crash == "exit", distance(g)))


def cause_line(group: SignatureGroup) -> str:
    """Pure: one line naming a signature: its kind, the exception (or first) line, when and its entry id."""
    kind = f"crash ({group.crash})" if group.crash else f"new {group.severity}"
    first = group.first_seen.astimezone(UTC).strftime("%H:%M:%SZ")
    entry = f", entry {group.insert_ids[0]}" if group.insert_ids else ""
    return f"{kind}: {example_line(group) or group.signature} (x{group.count}, first at {first}{entry})"


def cause_lines(groups: Sequence[SignatureGroup], limit: int = MAX_CAUSES) -> list[str]:
    lines = [cause_line(g) for g in groups[:limit]]
    if len(groups) > limit:
        lines.append(f"and {len(groups) - limit} more new signature(s): see the stage's evidence")
    return lines


def cause_evidence(groups: Sequence[SignatureGroup]) -> list[Evidence]:
    return [Evidence(kind="log", summary=f"around the failure: {cause_line(g)}",
                     data={"classification": "new", **g.to_dict()}) for g in groups]
