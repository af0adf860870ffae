"""Request logs: who sent a request (stagecheck's probes or other traffic) and whether its failure is the
release's, judged from the entry Cloud Run wrote, never from the order of the statuses.

- A *platform refusal* is Cloud Run's front end answering without any instance: the entry has no
  `labels.instanceId`, says "The request was aborted because there was no available instance." and took
  about no time (firebase/firebase-functions#965: status 500, 0 B, 0 ms). It is excused and listed.
- Every other 5xx, and every 429, counts: a 503 of a failed readiness check, an app's own 503, a 504 at
  the request timeout, a 429 after the 60 s queue at max instances (same text, but it waited) are the
  release's failures, whatever answer came after them.
- stagecheck's probes say who they are in `User-Agent` (`stagecheck-probe/…`; probes of an `advisory`
  URL add ` advisory`): their requests are counted apart from other traffic. An advisory URL's failing
  answers do not count in the gated rate (the probe and bake stages already WARN on that URL); they are
  shown in the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from stagecheck.log_analysis.records import LogRecord

PROBE_USER_AGENT = "stagecheck-probe/0.1"
ADVISORY_MARK = "advisory"
ADVISORY_USER_AGENT = f"{PROBE_USER_AGENT} {ADVISORY_MARK}"
NO_INSTANCE_TEXT = "no available instance"
REFUSAL_MAX_LATENCY_S = 1.0  # "about 0 s": Cloud Run logs these at 0 ms; anything that waited is not one
REFUSAL_STATUSES = frozenset({429, 500, 503})


def probe_user_agent(advisory: bool) -> str:
    """The User-Agent stagecheck's probes send (an advisory URL's probes say so)."""
    return ADVISORY_USER_AGENT if advisory else PROBE_USER_AGENT


def origin(record: LogRecord) -> str:
    """"probe" (stagecheck's gating probes), "advisory" (its probes of advisory URLs) or "other"."""
    agent = record.user_agent or ""
    if not agent.startswith(PROBE_USER_AGENT.split("/", 1)[0] + "/"):
        return "other"
    return "advisory" if re.search(rf"\b{ADVISORY_MARK}\b", agent) else "probe"


def is_platform_refusal(record: LogRecord) -> bool:
    """Pure: Cloud Run's front end refused the request before any instance saw it (the entry alone says so)."""
    return (
        record.http_status in REFUSAL_STATUSES
        and not record.instance_id
        and NO_INSTANCE_TEXT in record.message.lower()
        and record.latency_s is not None
        and record.latency_s < REFUSAL_MAX_LATENCY_S
    )


def is_failure(record: LogRecord) -> bool:
    """A request the release failed: any 5xx, or 429 (no instance could take it in time)."""
    status = record.http_status or 0
    return status >= 500 or status == 429


@dataclass
class RequestCounts:
    """Request-log counts of one revision, by origin."""

    requests: int = 0
    failures: int = 0  # counted failures (refusals and advisory probes left out)
    refusals: int = 0  # platform refusals, excused
    refusal_ids: list[str] = field(default_factory=list)  # insertIds of the first few, for the report
    by_origin: dict[str, list[int]] = field(default_factory=dict)  # origin -> [requests, failures]
    failure_urls: dict[str, int] = field(default_factory=dict)  # "504 /slow" -> count (counted failures)
    counted: int = 0  # the rate's denominator: requests other than refusals and advisory probes

    @property
    def rate(self) -> float:
        return self.failures / self.counted if self.counted > 0 else 0.0


def _url_path(url: str | None) -> str:
    if not url:
        return "?"
    path = re.sub(r"^[a-z]+://[^/]+", "", url) or "/"
    return path.split("?", 1)[0]


MAX_REFUSAL_IDS = 5


def count_requests(records: Iterable[LogRecord]) -> RequestCounts:
    """Pure: classify each request entry by itself (see the module docstring) and count."""
    counts = RequestCounts()
    for record in records:
        counts.requests += 1
        source = origin(record)
        tally = counts.by_origin.setdefault(source, [0, 0])
        tally[0] += 1
        if is_failure(record) and is_platform_refusal(record):
            counts.refusals += 1
            if record.insert_id and len(counts.refusal_ids) < MAX_REFUSAL_IDS:
                counts.refusal_ids.append(record.insert_id)
            continue
        if source != "advisory":
            counts.counted += 1
        if not is_failure(record):
            continue
        tally[1] += 1
        if source == "advisory":
            continue
        counts.failures += 1
        key = f"{record.http_status} {_url_path(record.request_url)}"
        counts.failure_urls[key] = counts.failure_urls.get(key, 0) + 1
    return counts
