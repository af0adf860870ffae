"""Stage 6, "Logs": what the new revision logged since the deploy started, and whether it is new.

Pure functions over `LogRecord`s (built from Cloud Logging API entries by `record_from_entry_dict`;
a google-cloud-logging `LogEntry` gives that shape with `entry.to_api_repr()`):

- `group_tracebacks` joins the lines of a multi-line traceback (Cloud Run writes every plain-text line
  as an entry of its own, at DEFAULT) per instance and stream into one record keyed on its exception line;
- `summarise` counts entries by severity, groups container/system lines by a normalised signature,
  flags crash signatures and computes the 5xx rate from request logs (cold-start 503/429 apart);
- `compare` sorts the groups into new / pre-existing (seen on the previous revision over an equal
  window) / tolerated (configured) / below the severity threshold;
- `judge_logs` turns that into the "logs" StageResult with criteria and evidence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import unquote

from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.redact import redact
from stagecheck.settings import LogRules

STAGE_NAME = "logs"

SEVERITIES: tuple[str, ...] = (
    "DEFAULT",
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
)
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_NUMERIC_SEVERITY = {
    0: "DEFAULT",
    100: "DEBUG",
    200: "INFO",
    300: "NOTICE",
    400: "WARNING",
    500: "ERROR",
    600: "CRITICAL",
    700: "ALERT",
    800: "EMERGENCY",
}

MAX_SIGNATURE_LEN = 200
MAX_EXAMPLE_LEN = 500
MAX_INSERT_IDS = 5
MAX_EVIDENCE_GROUPS = 25


def severity_rank(severity: str) -> int:
    """Order of a Cloud Logging severity; unknown names rank as DEFAULT."""
    return _RANK.get(severity.upper(), 0)


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class LogRecord:
    timestamp: datetime  # aware UTC
    severity: str  # "DEFAULT".."EMERGENCY"
    message: str  # textPayload, jsonPayload["message"], or a compact JSON dump
    stream: str  # "stdout" | "stderr" | "requests" | "system" | "other"
    revision: str
    insert_id: str = ""
    http_status: int | None = None
    latency_s: float | None = None
    request_url: str | None = None
    instance_id: str = ""  # labels.instanceId: lines of one instance belong together
    insert_ids: tuple[str, ...] = ()  # every entry of a grouped record (a multi-line traceback)


def _stream_of(log_name: str) -> str:
    name = unquote(log_name).split("/logs/", 1)[-1]
    if name.endswith("stdout"):
        return "stdout"
    if name.endswith("stderr"):
        return "stderr"
    if name.endswith("requests"):
        return "requests"
    if name.endswith("system"):
        return "system"
    if name.startswith("cloudaudit.googleapis.com"):
        return "audit"  # system_event / activity: revision lifecycle ("Ready condition status changed ...")
    return "other"


def _severity_of(value: Any) -> str:
    if value is None or value == "":
        return "DEFAULT"
    if isinstance(value, int):
        return _NUMERIC_SEVERITY.get(value, "DEFAULT")
    name = str(value).upper()
    if name.isdigit():
        return _NUMERIC_SEVERITY.get(int(name), "DEFAULT")
    return name if name in _RANK else "DEFAULT"


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 as Cloud Logging writes it (`Z`, up to nanoseconds) -> aware datetime."""
    text = value.strip()
    match = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", text)
    if not match:
        raise ValueError(f"timestamp {value!r} is not RFC 3339")
    base, frac, zone = match.groups()
    frac = (frac or "")[:7]  # at most microseconds
    zone = "+00:00" if zone in (None, "Z") else zone
    parsed = datetime.fromisoformat(f"{base}{frac}{zone}")
    return parsed


def _duration_s(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):  # {"seconds": 1, "nanos": 5}
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)s\s*", str(value))
    return float(match.group(1)) if match else None


def record_from_entry_dict(entry: Mapping[str, Any]) -> LogRecord:
    """A Cloud Logging API entry (JSON shape) -> LogRecord. ValueError when it lacks a timestamp."""
    raw_ts = entry.get("timestamp") or entry.get("receiveTimestamp")
    if not raw_ts:
        raise ValueError(f"log entry {entry.get('insertId', '?')!r} has no timestamp")
    timestamp = raw_ts if isinstance(raw_ts, datetime) else parse_timestamp(str(raw_ts))
    if "textPayload" in entry:
        message = str(entry["textPayload"])
    elif isinstance(entry.get("jsonPayload"), Mapping):
        payload = entry["jsonPayload"]
        if "message" in payload:
            message = str(payload["message"])
        else:
            message = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    elif isinstance(entry.get("protoPayload"), Mapping):  # audit entries: the AuditLog's status message
        proto = entry["protoPayload"]
        status_message = (proto.get("status") or {}).get("message") if isinstance(proto.get("status"), Mapping) else None
        message = str(status_message or proto.get("methodName") or "")
    else:
        message = ""
    http = entry.get("httpRequest") or {}
    status = http.get("status")
    labels = (entry.get("resource") or {}).get("labels") or {}
    return LogRecord(
        timestamp=timestamp,
        severity=_severity_of(entry.get("severity")),
        message=message,
        stream=_stream_of(str(entry.get("logName", ""))),
        revision=str(labels.get("revision_name", "")),
        insert_id=str(entry.get("insertId", "")),
        http_status=int(status) if status not in (None, "") else None,
        latency_s=_duration_s(http.get("latency")),
        request_url=http.get("requestUrl"),
        instance_id=str((entry.get("labels") or {}).get("instanceId", "")),
    )


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
_TRACEBACK_HEAD = re.compile(r"^\s*Traceback \(most recent call last\)")


def _signature_text(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and _TRACEBACK_HEAD.match(lines[0]):
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


# ------------------------------------------------------------------------------- multi-line tracebacks

_CHAIN = re.compile(r"^(During handling of the above exception|The above exception was the direct cause)")
MAX_TRACEBACK_LINES = 300


def _continues(line: str) -> bool:
    """A traceback body line: indented frame/source lines, carets, blank lines."""
    return not line.strip() or line[:1] in (" ", "\t")


def _joined(lines: list[LogRecord]) -> LogRecord:
    first = lines[0]
    worst = max(lines, key=lambda r: severity_rank(r.severity))
    ids = tuple(i for r in lines for i in (r.insert_ids or ((r.insert_id,) if r.insert_id else ())))
    return LogRecord(timestamp=first.timestamp, severity=worst.severity,
                     message="\n".join(r.message.rstrip("\n") for r in lines), stream=first.stream,
                     revision=first.revision, insert_id=first.insert_id, instance_id=first.instance_id,
                     insert_ids=ids)


def group_tracebacks(records: Iterable[LogRecord]) -> list[LogRecord]:
    """Join the one-entry-per-line pieces of multi-line Python tracebacks into one record each.

    Lines are grouped per (instance, stream) in time order: a "Traceback (most recent call last):" line
    opens a block, indented and blank lines continue it, the first other line (the exception line,
    e.g. "KeyError: 'price'") closes it; a chained traceback ("During handling of the above exception
    ...") stays one block. Records that are not part of a traceback pass through unchanged. The result
    is in time order (ties in input order)."""
    ordered = sorted(enumerate(records), key=lambda pair: (pair[1].timestamp, pair[0]))
    out: list[tuple[int, LogRecord]] = []
    open_blocks: dict[tuple[str, str], tuple[int, list[LogRecord], bool]] = {}  # key -> (pos, lines, closed)

    def flush(key: tuple[str, str]) -> None:
        pos, lines, _ = open_blocks.pop(key)
        out.append((pos, _joined(lines)))

    for position, record in ordered:
        if record.stream not in ("stdout", "stderr") or record.http_status is not None or "\n" in record.message:
            out.append((position, record))
            continue
        key = (record.instance_id, record.stream)
        block = open_blocks.get(key)
        head = _TRACEBACK_HEAD.match(record.message) is not None
        if block is not None:
            pos, lines, closed = block
            if len(lines) >= MAX_TRACEBACK_LINES:
                flush(key)
            elif not closed and (_continues(record.message) or head or _CHAIN.match(record.message.strip())):
                lines.append(record)
                continue
            elif not closed:  # the exception line
                lines.append(record)
                open_blocks[key] = (pos, lines, True)
                continue
            elif _CHAIN.match(record.message.strip()):
                lines.append(record)  # a chained exception follows: reopen
                open_blocks[key] = (pos, lines, False)
                continue
            elif not record.message.strip():
                lines.append(record)  # a blank line after the exception line (maybe before a chain)
                continue
            else:
                flush(key)
        if head:
            open_blocks[key] = (position, [record], False)
        else:
            out.append((position, record))
    for key in list(open_blocks):
        flush(key)
    return [record for _, record in sorted(out, key=lambda pair: (pair[1].timestamp, pair[0]))]


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


def crash_kind(message: str) -> str | None:
    """The kind of crash a log line reports, or None. Covers Cloud Run's own messages
    ("Memory limit of 512 MiB exceeded ...", "Container called exit(1).", "... failed to start and
    listen on the port ...") and common runtime ones (Python, Go, Node, JVM, gunicorn)."""
    for kind, pattern in _CRASH_RULES:
        if pattern.search(message):
            return kind
    return None


def effective_severity(record: LogRecord) -> str:
    """The record's severity, raised to ERROR for crash lines (plain stderr text is DEFAULT)."""
    severity = record.severity.upper() if record.severity.upper() in _RANK else "DEFAULT"
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "severity": self.severity,
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "example": self.example,
            "insert_ids": list(self.insert_ids),
            "crash": self.crash,
            "streams": list(self.streams),
        }


@dataclass
class LogSummary:
    revision: str
    window: tuple[datetime, datetime]
    total: int
    by_severity: dict[str, int]  # container and system entries (request logs are counted apart)
    groups: list[SignatureGroup]  # worst severity first, then most frequent
    crashes: list[SignatureGroup]
    requests: int
    server_errors: int  # 5xx after the revision's first 2xx
    cold_start_errors: int  # retry statuses (503/429) answered before the first 2xx
    error_rate_5xx: float  # server_errors / (requests - cold_start_errors)
    server_error_urls: dict[str, int] = field(default_factory=dict)  # "500 /api/pay" -> count

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


def _url_path(url: str | None) -> str:
    if not url:
        return "?"
    path = re.sub(r"^[a-z]+://[^/]+", "", url) or "/"
    return path.split("?", 1)[0]


def summarise(
    records: Iterable[LogRecord],
    *,
    revision: str,
    window: tuple[datetime, datetime],
    retry_statuses: Sequence[int] = (503, 429),
) -> LogSummary:
    """Summarise one revision's records inside the window (others are ignored).

    Request logs feed `requests`, `server_errors` and the 5xx rate. A run of retry statuses (503/429)
    that ends with a 2xx is a cold start (an instance starting: first deploy or after scaling to
    zero) - counted, but not in the rate, as the probes ride it out too. A run that never recovers, or
    is broken by another 5xx, counts as server errors (fail closed). Container and system lines are
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
        if record.stream == "requests" or record.http_status is not None:
            request_records.append(record)
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

    cold = server = 0
    server_urls: dict[str, int] = {}
    pending: list[LogRecord] = []  # a run of retry statuses not yet followed by a 2xx

    def count_server(record: LogRecord) -> None:
        nonlocal server
        server += 1
        key = f"{record.http_status} {_url_path(record.request_url)}"
        server_urls[key] = server_urls.get(key, 0) + 1

    for record in request_records:
        status = record.http_status or 0
        if status in retry_statuses:
            pending.append(record)
        elif 200 <= status < 300:
            cold += len(pending)  # the instance came up: that run was a cold start
            pending = []
        elif status >= 500:
            for held in pending:  # another failure in between: not just starting
                count_server(held)
            pending = []
            count_server(record)
    for held in pending:  # never recovered: an outage, not a cold start (fail closed)
        count_server(held)
    counted = len(request_records) - cold
    ordered = sorted(groups.values(), key=lambda g: (-severity_rank(g.severity), -g.count, g.signature))
    return LogSummary(
        revision=revision,
        window=window,
        total=len(raw),
        by_severity=dict(sorted(by_severity.items(), key=lambda kv: -severity_rank(kv[0]))),
        groups=ordered,
        crashes=[g for g in ordered if g.crash],
        requests=len(request_records),
        server_errors=server,
        cold_start_errors=cold,
        error_rate_5xx=server / counted if counted > 0 else 0.0,
        server_error_urls=server_urls,
    )


def previous_window(current: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """An equal-length window ending where `current` starts (read the previous revision there)."""
    _check_window(current)
    start, end = current
    length: timedelta = end - start
    return start - length, start


# ----------------------------------------------------------------------------------------- comparison


@dataclass
class LogComparison:
    new: list[SignatureGroup]  # at/above threshold (or a crash), not seen on the previous revision
    pre_existing: list[SignatureGroup]  # at/above threshold (or a crash), seen on the previous revision
    tolerated: list[SignatureGroup]  # matched rules.tolerated_signatures
    below_threshold: list[SignatureGroup]
    previous_revision: str | None = None

    @property
    def new_crashes(self) -> list[SignatureGroup]:
        return [g for g in self.new if g.crash]

    def to_dict(self) -> dict[str, Any]:
        return {
            "previous_revision": self.previous_revision,
            "new": [g.to_dict() for g in self.new],
            "pre_existing": [g.to_dict() for g in self.pre_existing],
            "tolerated": [g.to_dict() for g in self.tolerated],
            "below_threshold": len(self.below_threshold),
        }


def _regex_match(regex: re.Pattern[str], text: str) -> bool:
    return regex.search(text) is not None


def _substring_match(needle: str, text: str) -> bool:
    return needle in text


def compile_tolerated(patterns: Iterable[str]) -> list[Callable[[str], bool]]:
    """`/regex/` patterns are regular expressions (searched), anything else a case-sensitive substring."""
    matchers: list[Callable[[str], bool]] = []
    for pattern in patterns:
        if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
            try:
                regex = re.compile(pattern[1:-1])
            except re.error as exc:
                raise ValueError(
                    f"tolerated signature {pattern!r} is not a valid regular expression: {exc}"
                ) from None
            matchers.append(partial(_regex_match, regex))
        elif pattern:
            matchers.append(partial(_substring_match, pattern))
    return matchers


def compare(current: LogSummary, previous: LogSummary | None, rules: LogRules) -> LogComparison:
    """Classify each group of `current`. Crash groups are gated whatever their severity.

    With no previous revision (a first deploy) everything at/above the threshold is new.
    A tolerated pattern matches the signature or the (redacted) example.
    """
    matchers = compile_tolerated(rules.tolerated_signatures)
    threshold = severity_rank(rules.severity_threshold)
    known = {g.signature for g in previous.groups} if previous is not None else set()
    out = LogComparison(
        new=[],
        pre_existing=[],
        tolerated=[],
        below_threshold=[],
        previous_revision=previous.revision if previous is not None else None,
    )
    for group in current.groups:
        if severity_rank(group.severity) < threshold and not group.crash:
            out.below_threshold.append(group)
        elif any(m(group.signature) or m(group.example) for m in matchers):
            out.tolerated.append(group)
        elif group.signature in known:
            out.pre_existing.append(group)
        else:
            out.new.append(group)
    return out


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
    line = lines[-1] if _TRACEBACK_HEAD.match(lines[0]) else lines[0]
    return line if len(line) <= MAX_REASON_EXAMPLE else line[: MAX_REASON_EXAMPLE - 1] + "…"


def top_signatures(groups: Sequence[SignatureGroup], limit: int = MAX_REASON_SIGNATURES) -> str:
    """`"<signature>" x3 (e.g. "<redacted line>"); ...`: what failed, for the console's reason."""
    parts = [f'"{g.signature}" x{g.count} (e.g. "{example_line(g)}")' for g in groups[:limit]]
    if len(groups) > limit:
        parts.append(f"and {len(groups) - limit} more")
    return "; ".join(parts)


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
    counted = current.requests - current.cold_start_errors
    rate_fail = current.error_rate_5xx > rules.max_5xx_rate
    rate_status = Status.FAIL if rate_fail else Status.WARN if current.requests == 0 else Status.PASS
    rate = Criterion(
        name=f"5xx rate <= {_percent(rules.max_5xx_rate)}",
        stage=STAGE_NAME,
        status=rate_status,
        expected=f"<= {_percent(rules.max_5xx_rate)} of request logs answered 5xx (cold-start 503/429 excluded)",
        observed=(
            "no request logs in the window"
            if current.requests == 0
            else f"{_percent(current.error_rate_5xx)} ({current.server_errors}/{counted}), "
            f"{current.cold_start_errors} cold-start"
        ),
        evidence=[
            f"{key} x{n}" for key, n in sorted(current.server_error_urls.items(), key=lambda kv: -kv[1])[:5]
        ],
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
            f"{current.requests} requests, {current.server_errors} 5xx, {current.cold_start_errors} cold-start",
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
    data = {
        "revision": current.revision,
        "previous_revision": comparison.previous_revision,
        "window": [current.window[0].isoformat(), current.window[1].isoformat()],
        "threshold": threshold,
        "total": current.total,
        "by_severity": dict(current.by_severity),
        "requests": current.requests,
        "server_errors": current.server_errors,
        "cold_start_errors": current.cold_start_errors,
        "error_rate_5xx": current.error_rate_5xx,
        "max_5xx_rate": rules.max_5xx_rate,
        "server_error_urls": dict(current.server_error_urls),
        "new": [g.to_dict() for g in new],
        "pre_existing": [g.to_dict() for g in pre],
        "tolerated": [g.to_dict() for g in comparison.tolerated],
        "below_threshold": len(comparison.below_threshold),
        "crashes": [g.to_dict() for g in current.crashes],
        "truncated": truncated,
    }
    return StageResult(
        name=STAGE_NAME,
        status=status,
        summary=summary,
        evidence=evidence,
        criteria=[signatures, crash, rate],
        data=data,
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
