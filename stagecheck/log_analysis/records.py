"""Log records: Cloud Logging API entries (JSON shape) as `LogRecord`s, and multi-line tracebacks joined.

A google-cloud-logging `LogEntry` gives the entry shape with `entry.to_api_repr()`. Cloud Run writes every
plain-text line as an entry of its own, at DEFAULT: `group_tracebacks` joins the lines of one traceback
(per instance and stream) into one record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

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
    user_agent: str = ""  # httpRequest.userAgent of a request entry (stagecheck's probes say who they are)


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


# what applications write in their own severity fields (`logs.severity_fields`), as LogSeverity names
_SEVERITY_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "CRIT": "CRITICAL", "ERR": "ERROR",
                     "TRACE": "DEBUG", "PANIC": "EMERGENCY"}


def app_severity(payload: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """Pure: the severity an application wrote in one of its own jsonPayload fields (e.g. pino/winston
    `level`), opted into with `logs.severity_fields`: a LogSeverity name in any case or a common alias
    (WARN, FATAL, ERR, TRACE, ...), or pino's numbers (10..60). Cloud Logging itself reads only
    `severity` and leaves such an entry at DEFAULT."""
    for name in fields:
        value = payload.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            pino = {10: "DEBUG", 20: "DEBUG", 30: "INFO", 40: "WARNING", 50: "ERROR", 60: "CRITICAL"}
            found = pino.get(int(value))
        else:
            text = str(value).strip().upper()
            text = _SEVERITY_ALIASES.get(text, text)
            found = text if text in _RANK else None
        if found is not None:
            return found
    return None


def record_from_entry_dict(entry: Mapping[str, Any], severity_fields: Sequence[str] = ()) -> LogRecord:
    """A Cloud Logging API entry (JSON shape) -> LogRecord. ValueError when it lacks a timestamp.
    `severity_fields`: jsonPayload fields read as the severity of an entry Cloud Logging left at DEFAULT."""
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
    severity = _severity_of(entry.get("severity"))
    if severity == "DEFAULT" and severity_fields and isinstance(entry.get("jsonPayload"), Mapping):
        severity = app_severity(entry["jsonPayload"], severity_fields) or severity
    return LogRecord(
        timestamp=timestamp,
        severity=severity,
        message=message,
        stream=_stream_of(str(entry.get("logName", ""))),
        revision=str(labels.get("revision_name", "")),
        insert_id=str(entry.get("insertId", "")),
        http_status=int(status) if status not in (None, "") else None,
        latency_s=_duration_s(http.get("latency")),
        request_url=http.get("requestUrl"),
        instance_id=str((entry.get("labels") or {}).get("instanceId", "")),
        user_agent=str(http.get("userAgent") or ""),
    )


# ------------------------------------------------------------------------------- multi-line tracebacks

TRACEBACK_HEAD = re.compile(r"^\s*Traceback \(most recent call last\)")

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
        head = TRACEBACK_HEAD.match(record.message) is not None
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
