"""The request logs as a cross-check of the load generator's own figures (pure).

Cloud Run logs every request with its status and user agent (`httpRequest.status`, `.userAgent`). Our
requests are the ones with our User-Agent; per arm their count and error share are set beside what the
generator saw. Evidence, not a gate of its own: a share that disagrees by more than `MAX_GAP` (or log
entries missing because ingestion lags) is a WARN row, never a pass or fail of the release.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from stagecheck.model import Criterion, Status
from stagecheck.stages import Stage

MAX_GAP = 0.05  # absolute difference of error shares, generator vs request logs


def logged_requests(entries: Iterable[Mapping[str, Any]], user_agent: str) -> dict[str, Any]:
    """Our requests in a revision's log entries: count, error count (status >= 400 but 429), statuses."""
    statuses: Counter[int] = Counter()
    for entry in entries:
        http = entry.get("httpRequest") or {}
        if http.get("userAgent") == user_agent and isinstance(http.get("status"), int):
            statuses[int(http["status"])] += 1
    judged = {s: n for s, n in statuses.items() if s != 429}
    return {"requests": sum(judged.values()), "errors": sum(n for s, n in judged.items() if s >= 400),
            "statuses": {str(s): n for s, n in sorted(statuses.items())}}


def cross_check(generator: Mapping[str, tuple[int, int]], logged: Mapping[str, Mapping[str, Any]]) -> Criterion:
    """`generator`: arm -> (requests, errors) the generator counted; `logged`: arm -> logged_requests(...)."""
    parts, worst = [], 0.0
    for arm, (sent, failed) in generator.items():
        log = logged.get(arm) or {"requests": 0, "errors": 0}
        g_share = failed / sent if sent else 0.0
        l_share = log["errors"] / log["requests"] if log["requests"] else 0.0
        worst = max(worst, abs(g_share - l_share)) if log["requests"] else max(worst, 1.0 if sent else 0.0)
        parts.append(f"{arm}: generator {failed}/{sent} failed, request logs {log['errors']}/{log['requests']}")
    status = Status.PASS if worst <= MAX_GAP else Status.WARN
    return Criterion(name="request logs agree with the load generator", stage=Stage.ANALYSIS, status=status,
                     expected=f"error shares within {MAX_GAP:.0%} of each other", observed="; ".join(parts))
