"""Signatures: log lines grouped by a normalised key, crash lines recognised, one revision summarised.

- `normalise_signature` strips ids, numbers, hex, timestamps and IPs from a message (names are kept);
- `crash_kind` names the crash a line reports (Cloud Run's own messages and common runtimes');
- `summarise` counts entries by severity, groups container/system lines by signature, flags crash
  signatures and computes the 5xx rate from request logs (cold-start 503/429 apart).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from stagecheck.evidence import SignatureGroupData
from stagecheck.log_analysis.records import _RANK, TRACEBACK_HEAD, LogRecord, group_tracebacks, severity_rank
from stagecheck.log_analysis.requests import count_requests
from stagecheck.redact import redact

MAX_SIGNATURE_LEN = 200
MAX_EXAMPLE_LEN = 500
MAX_INSERT_IDS = 5


# ------------------------------------------------------------------------------------------ signatures

_SIGNATURE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # ISO timestamps, dates, clock times
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<ts>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (
        re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
        "<uuid>",
    ),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"\[?\b(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b\]?(?::\d{1,5})?"), "<ip>"),
    # Cloud Run revision names: checkout-00003-xyz
    (re.compile(r"\b[a-z][-a-z0-9]*-\d{5}-[a-z0-9]{3}\b"), "<revision>"),
    # hex ids become <n> like numbers: a random id is all digits now and then ("570755" vs "2bab34")
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<n>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"), "<n>"),
    # long tokens / base64: mixed case with digits (identifiers are one case), or very long with digits
    (re.compile(r"(?<![\w+=-])(?=[\w+=-]*\d)(?=[\w+=-]*[a-z])(?=[\w+=-]*[A-Z])[\w+=-]{16,}"), "<token>"),
    (re.compile(r"(?<![\w+=-])(?=[\w+=-]*\d)[\w+=-]{32,}"), "<token>"),
    # numbers, with units: 3000ms, 1.5s, 512MiB, 42%
    (
        re.compile(
            r"(?<![\w<.])[-+]?\d+(?:[.,]\d+)*(?:\s?(?:ms|us|µs|ns|s|m|h|[KMGT]i?B|[kmg]b|b|bytes|%))?(?![A-Za-z_])"
        ),
        "<n>",
    ),
)
_WS = re.compile(r"\s+")


def _signature_text(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and TRACEBACK_HEAD.match(lines[0]):
        return f"Traceback: {lines[-1]}"
    return lines[0] + (" ..." if len(lines) > 1 else "")


def normalise_signature(message: str) -> str:
    """Message -> grouping key: ids, numbers, hex, timestamps, IPs stripped; names kept.

    "timeout after 3000 ms (request id 5f3a9c)" and "... 2875 ms (request id 0b12ee)" share a key;
    "No module named 'foo'" and "No module named 'bar'" do not. A multi-line traceback is keyed by
    its exception line, other multi-line messages by their first line.
    """
    text = _signature_text(message)
    for pattern, placeholder in _SIGNATURE_RULES:
        text = pattern.sub(placeholder, text)
    text = _WS.sub(" ", text).strip()
    if len(text) > MAX_SIGNATURE_LEN:
        text = text[: MAX_SIGNATURE_LEN - 1] + "…"
    return text


# --------------------------------------------------------------------------------------------- crashes

_CRASH_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "memory-limit",
        re.compile(
            r"memory limit of .{0,40}exceeded|memory limit exceeded|exceeded (?:the )?memory limit", re.I
        ),
    ),
    ("oom-killed", re.compile(r"\bOOMKilled\b|\boom[- _]?kill|out of memory|\bMemoryError\b", re.I)),
    (
        "failed-to-start",
        re.compile(
            r"failed to start and listen on the port|container failed to start|failed to start|"
            r"STARTUP (?:TCP|HTTP|GRPC) probe failed|worker failed to boot|application startup failed|"
            r"EADDRINUSE|is not ready and cannot serve traffic",
            re.I,
        ),
    ),
    (
        "import-error",
        re.compile(r"\b(?:ImportError|ModuleNotFoundError)\b|No module named |cannot import name "),
    ),
    ("traceback", re.compile(r"^\s*Traceback \(most recent call last\)", re.M)),
    ("segfault", re.compile(r"segmentation fault|\bSIGSEGV\b|core dumped", re.I)),
    ("panic", re.compile(r"^\s*panic: |^\s*fatal error: |thread '[^']*' panicked at", re.M)),
    (
        "uncaught-exception",
        re.compile(
            r"Exception in thread \"|\bUncaught (?:\w+)?(?:Error|Exception)\b|UnhandledPromiseRejection"
        ),
    ),
    ("worker-timeout", re.compile(r"\bWORKER TIMEOUT\b")),
    (
        "exit",
        re.compile(
            r"Container called exit\(\s*[1-9]\d*\s*\)|exited with (?:exit )?(?:code|status) [1-9]\d*|"
            r"exit (?:code|status):? [1-9]\d*",
            re.I,
        ),
    ),
)


# An instance stopped by Cloud Run (scale-in, a revision leaving traffic) gets SIGTERM and 10 s of grace
# (container runtime contract): what it prints then is the platform's doing, not the release's. Cloud Run
# logs "Container called exit(143)." (128 + SIGTERM); npm reports "npm error signal SIGTERM"
# (GoogleCloudPlatform/functions-framework-nodejs#704).
_SHUTDOWN_RULES: tuple[re.Pattern[str], ...] = (
    re.compile(r"Container called exit\(\s*143\s*\)"),
    re.compile(r"^\s*npm (?:error|ERR!) signal SIGTERM\s*$", re.M),
    re.compile(r"exited with (?:exit )?(?:code|status) 143\b|exit (?:code|status):? 143\b", re.I),
)


def is_shutdown_line(message: str) -> bool:
    """Pure: a line an instance prints because Cloud Run stopped it with SIGTERM (never a crash)."""
    return any(pattern.search(message) for pattern in _SHUTDOWN_RULES)


def crash_kind(message: str) -> str | None:
    """The kind of crash a log line reports, or None. Covers Cloud Run's own messages
    ("Memory limit of 512 MiB exceeded ...", "Container called exit(1).", "... failed to start and
    listen on the port ...") and common runtime ones (Python, Go, Node, JVM, gunicorn). A shutdown
    line (`is_shutdown_line`: the instance was stopped with SIGTERM) is no crash."""
    if is_shutdown_line(message):
        return None
    for kind, pattern in _CRASH_RULES:
        if pattern.search(message):
            return kind
    return None


def effective_severity(record: LogRecord) -> str:
    """The record's severity, raised to ERROR for crash lines (plain stderr text is DEFAULT); Cloud Run's
    own line about a SIGTERM stop ("Container called exit(143).") is at most INFO, whatever it was
    logged at."""
    severity = record.severity.upper() if record.severity.upper() in _RANK else "DEFAULT"
    if record.stream == "system" and is_shutdown_line(record.message):
        return severity if severity_rank(severity) <= _RANK["INFO"] else "INFO"
    if severity_rank(severity) < _RANK["ERROR"] and crash_kind(record.message):
        return "ERROR"
    return severity


# -------------------------------------------------------------------------------------------- summary


@dataclass
class SignatureGroup:
    signature: str
    severity: str  # the worst seen
    count: int
    first_seen: datetime
    last_seen: datetime
    example: str  # redacted, truncated
    insert_ids: list[str] = field(default_factory=list)
    crash: str | None = None
    streams: list[str] = field(default_factory=list)

    def as_evidence(self) -> SignatureGroupData:
        """The group as the report shows it (times in ISO 8601)."""
        return SignatureGroupData(
            signature=self.signature,
            severity=self.severity,
            count=self.count,
            first_seen=self.first_seen.isoformat(),
            last_seen=self.last_seen.isoformat(),
            example=self.example,
            insert_ids=list(self.insert_ids),
            crash=self.crash,
            streams=list(self.streams),
        )

    def to_dict(self) -> dict[str, Any]:
        return self.as_evidence().to_data()


@dataclass
class LogSummary:
    revision: str
    window: tuple[datetime, datetime]
    total: int
    by_severity: dict[str, int]  # container and system entries (request logs are counted apart)
    groups: list[SignatureGroup]  # worst severity first, then most frequent
    crashes: list[SignatureGroup]
    requests: int
    server_errors: int  # counted failures: 5xx and 429 that are not platform refusals (advisory probes apart)
    cold_start_errors: int  # the platform refusals excused (the old name kept for readers of the summary)
    error_rate_5xx: float  # server_errors / counted_requests
    server_error_urls: dict[str, int] = field(default_factory=dict)  # "500 /api/pay" -> count
    platform_refusals: int = 0  # Cloud Run's front end refused, no instance saw it (log_analysis.requests)
    refusal_ids: list[str] = field(default_factory=list)  # insertIds of the first few refusals
    by_origin: dict[str, tuple[int, int]] = field(default_factory=dict)  # probe/advisory/other -> (requests, failures)
    counted_requests: int = 0  # the rate's denominator

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "window": [self.window[0].isoformat(), self.window[1].isoformat()],
            "total": self.total,
            "by_severity": dict(self.by_severity),
            "groups": [g.to_dict() for g in self.groups],
            "crashes": [g.to_dict() for g in self.crashes],
            "requests": self.requests,
            "server_errors": self.server_errors,
            "cold_start_errors": self.cold_start_errors,
            "error_rate_5xx": self.error_rate_5xx,
            "server_error_urls": dict(self.server_error_urls),
            "platform_refusals": self.platform_refusals,
            "by_origin": {k: list(v) for k, v in self.by_origin.items()},
        }


def _check_window(window: tuple[datetime, datetime]) -> None:
    start, end = window
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the log window needs timezone-aware datetimes")
    if end < start:
        raise ValueError(f"the log window ends ({end.isoformat()}) before it starts ({start.isoformat()})")


def _example(message: str) -> str:
    text = redact(message.strip())
    return text if len(text) <= MAX_EXAMPLE_LEN else text[: MAX_EXAMPLE_LEN - 1] + "…"


def summarise(
    records: Iterable[LogRecord],
    *,
    revision: str,
    window: tuple[datetime, datetime],
    retry_statuses: Sequence[int] = (503, 429),
) -> LogSummary:
    """Summarise one revision's records inside the window (others are ignored).

    Request logs feed `requests`, `server_errors` and the 5xx rate, each entry judged by itself
    (`log_analysis.requests.count_requests`): a platform refusal is excused, every other 5xx or 429
    counts, whatever came after it; stagecheck's probes are counted apart from other traffic.
    `retry_statuses` is accepted for older callers and no longer used. Container and system lines are
    grouped by `normalise_signature`.
    """
    _check_window(window)
    start, end = window
    raw = [r for r in records if r.revision in ("", revision) and start <= r.timestamp <= end]
    selected = group_tracebacks(raw)
    by_severity: dict[str, int] = {}
    groups: dict[str, SignatureGroup] = {}
    request_records: list[LogRecord] = []
    for record in selected:
        if record.stream == "requests":
            request_records.append(record)
            continue
        if record.http_status is not None:  # an app's own access-log line: Cloud Run's request entry counts it
            continue
        severity = effective_severity(record)
        by_severity[severity] = by_severity.get(severity, 0) + 1
        signature = normalise_signature(record.message)
        if not signature:
            continue
        crash = crash_kind(record.message)
        group = groups.get(signature)
        if group is None:
            groups[signature] = SignatureGroup(
                signature=signature,
                severity=severity,
                count=1,
                first_seen=record.timestamp,
                last_seen=record.timestamp,
                example=_example(record.message),
                insert_ids=list(record.insert_ids or ((record.insert_id,) if record.insert_id else ()))[:MAX_INSERT_IDS],
                crash=crash,
                streams=[record.stream],
            )
            continue
        group.count += 1
        group.last_seen = max(group.last_seen, record.timestamp)
        if severity_rank(severity) > severity_rank(group.severity):
            group.severity = severity
            group.example = _example(record.message)
        for insert_id in record.insert_ids or ((record.insert_id,) if record.insert_id else ()):
            if len(group.insert_ids) < MAX_INSERT_IDS and insert_id not in group.insert_ids:
                group.insert_ids.append(insert_id)
        group.crash = group.crash or crash
        if record.stream not in group.streams:
            group.streams.append(record.stream)

    counts = count_requests(request_records)
    ordered = sorted(groups.values(), key=lambda g: (-severity_rank(g.severity), -g.count, g.signature))
    return LogSummary(
        revision=revision,
        window=window,
        total=len(raw),
        by_severity=dict(sorted(by_severity.items(), key=lambda kv: -severity_rank(kv[0]))),
        groups=ordered,
        crashes=[g for g in ordered if g.crash],
        requests=counts.requests,
        server_errors=counts.failures,
        cold_start_errors=counts.refusals,
        error_rate_5xx=counts.rate,
        server_error_urls=counts.failure_urls,
        platform_refusals=counts.refusals,
        refusal_ids=list(counts.refusal_ids),
        by_origin={k: (v[0], v[1]) for k, v in sorted(counts.by_origin.items())},
        counted_requests=counts.counted,
    )


def previous_window(current: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """An equal-length window ending where `current` starts (read the previous revision there)."""
    _check_window(current)
    start, end = current
    length: timedelta = end - start
    return start - length, start
