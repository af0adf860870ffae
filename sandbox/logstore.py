"""The sandbox's log store: Cloud Run-shaped LogEntry dicts, indexed for entries:list.

Entries are kept sorted by (timestamp, arrival sequence) in one list per index (all, per service,
per revision), so a query narrowed by ``resource.labels.revision_name=`` / ``service_name=`` and a
timestamp range only scans the entries that can match. Page tokens are cursors (the last returned
position), so paging stays consistent while entries keep arriving.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import heapq
import itertools
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote

from sandbox.errors import ApiError
from sandbox.logfilter import (
    SEVERITY_RANK,
    FilterError,
    Node,
    compile_filter,
    format_timestamp,
    parse,
    parse_timestamp,
    required_values,
    time_bounds,
    timestamp_micros,
)

Entry = dict[str, Any]
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
RESOURCE_TYPE = "cloud_run_revision"

# ---------------------------------------------------------------------------------------------------
# Entry builders (Cloud Run's shapes)


@lru_cache(maxsize=1024)
def log_name(project: str, log_id: str) -> str:
    return f"projects/{project}/logs/{quote(log_id, safe='')}"


def _resource(project: str, location: str, service: str, revision: str | None) -> dict[str, Any]:
    labels = {
        "service_name": service,
        "location": location,
        "project_id": project,
        "configuration_name": service,
    }
    if revision is not None:
        labels["revision_name"] = revision
    return {"type": RESOURCE_TYPE, "labels": labels}


def _now_text(timestamp: datetime | None) -> str:
    return format_timestamp(timestamp or datetime.now(UTC))


def normalize_severity(value: Any) -> str:
    """The LogSeverity of a JSON line's `severity` field: a LogSeverity name, in any case (Google's sample
    writes "error"), or its number; anything else is DEFAULT. Only `severity` counts: a `level` field
    (pino, winston, bunyan) and aliases such as WARN or FATAL are not severities in Cloud Logging (the
    structured-logging special fields), so such lines stay DEFAULT as on Cloud Run."""
    if isinstance(value, int) and not isinstance(value, bool):
        by_rank = {rank: name for name, rank in SEVERITY_RANK.items()}
        return by_rank.get(value, "DEFAULT")
    if not isinstance(value, str):
        return "DEFAULT"
    name = value.strip().upper()
    return name if name in SEVERITY_RANK else "DEFAULT"


_SPECIAL = "logging.googleapis.com/"


def _from_seconds(seconds: Any, nanos: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(seconds), UTC).replace(microsecond=int(nanos or 0) // 1000)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _payload_timestamp(payload: dict[str, Any]) -> str | None:
    """Pops the time field Cloud Logging honours (``timestamp{seconds,nanos}``, ``timestampSeconds`` /
    ``timestampNanos``, ``time`` or ``timestamp`` as RFC3339); the entry timestamp it gives, if valid."""
    stamp = payload.get("timestamp")
    candidates: list[tuple[tuple[str, ...], datetime | None]] = []
    if isinstance(stamp, dict):
        candidates.append((("timestamp",), _from_seconds(stamp.get("seconds"), stamp.get("nanos"))))
    if "timestampSeconds" in payload:
        moment = _from_seconds(payload["timestampSeconds"], payload.get("timestampNanos"))
        candidates.append((("timestampSeconds", "timestampNanos"), moment))
    for key in ("time", "timestamp"):
        if isinstance(payload.get(key), str):
            candidates.append(((key,), parse_timestamp(payload[key])))
    for keys, found in candidates:
        if found is not None:
            for key in keys:
                payload.pop(key, None)
            return format_timestamp(found)
    return None


def _structured(entry: Entry, payload: dict[str, Any]) -> None:
    """Apply Cloud Logging's special JSON fields to ``entry``; the rest becomes jsonPayload."""
    entry["severity"] = normalize_severity(payload.pop("severity", None))
    stamp = _payload_timestamp(payload)
    if stamp:
        entry["timestamp"] = stamp
    if isinstance(payload.get("httpRequest"), dict):
        entry["httpRequest"] = payload.pop("httpRequest")
    moves = {
        "trace": "trace",
        "spanId": "spanId",
        "trace_sampled": "traceSampled",
        "insertId": "insertId",
        "sourceLocation": "sourceLocation",
        "operation": "operation",
    }
    for special, target in moves.items():
        if _SPECIAL + special in payload:
            entry[target] = payload.pop(_SPECIAL + special)
    extra_labels = payload.pop(_SPECIAL + "labels", None)
    if isinstance(extra_labels, dict):
        entry.setdefault("labels", {}).update({str(k): str(v) for k, v in extra_labels.items()})
    entry["jsonPayload"] = payload


def container_entry(
    *,
    project: str,
    location: str,
    service: str,
    revision: str,
    stream: Literal["stdout", "stderr"],
    line: str,
    timestamp: datetime | None = None,
    instance_id: str | None = None,
) -> Entry:
    """One line a container wrote: a JSON object line is structured, anything else is text (DEFAULT)."""
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    text = line.rstrip("\r\n")
    entry: Entry = {
        "logName": log_name(project, f"run.googleapis.com/{stream}"),
        "resource": _resource(project, location, service, revision),
        "timestamp": _now_text(timestamp),
        "severity": "DEFAULT",
    }
    if instance_id:
        entry["labels"] = {"instanceId": instance_id}
    payload: Any = None
    if text.lstrip().startswith("{"):
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
    if isinstance(payload, dict):
        _structured(entry, payload)
    else:
        entry["textPayload"] = text
    return entry


def request_severity(status: int) -> str:
    return "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO"


def request_entry(
    *,
    project: str,
    location: str,
    service: str,
    revision: str,
    method: str,
    url: str,
    status: int,
    latency_s: float,
    user_agent: str | None = None,
    remote_ip: str = "127.0.0.1",
    request_size: int | None = None,
    response_size: int | None = None,
    timestamp: datetime | None = None,
    instance_id: str | None = None,
    text: str | None = None,
) -> Entry:
    """A request log line as Cloud Run writes it to run.googleapis.com/requests: `timestamp` is when the
    request arrived (the store's receiveTimestamp, when it is written after the response, is later);
    `text` is the platform's own words on a refusal or a timeout (textPayload)."""
    http: dict[str, Any] = {
        "requestMethod": method,
        "requestUrl": url,
        "status": status,
        "latency": f"{max(latency_s, 0.0):.6f}s",
        "remoteIp": remote_ip,
        "protocol": "HTTP/1.1",
    }
    if user_agent is not None:
        http["userAgent"] = user_agent
    if request_size is not None:
        http["requestSize"] = str(request_size)  # int64 is a string in proto JSON
    if response_size is not None:
        http["responseSize"] = str(response_size)
    entry: Entry = {
        "logName": log_name(project, "run.googleapis.com/requests"),
        "resource": _resource(project, location, service, revision),
        "timestamp": _now_text(timestamp),
        "severity": request_severity(status),
        "httpRequest": http,
    }
    if instance_id:
        entry["labels"] = {"instanceId": instance_id}
    if text:
        entry["textPayload"] = text
    return entry


def system_entry(
    *,
    project: str,
    location: str,
    service: str,
    revision: str | None,
    severity: str,
    message: str,
    timestamp: datetime | None = None,
) -> Entry:
    """A platform message (run.googleapis.com/varlog/system), e.g. a failed start."""
    name = severity.strip().upper()
    if name not in SEVERITY_RANK:
        raise ValueError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITY_RANK)}")
    return {
        "logName": log_name(project, "run.googleapis.com/varlog/system"),
        "resource": _resource(project, location, service, revision),
        "timestamp": _now_text(timestamp),
        "severity": name,
        "textPayload": message,
    }


AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"


def audit_entry(
    *,
    project: str,
    location: str,
    service: str,
    revision: str | None,
    ready: bool,
    message: str,
    timestamp: datetime | None = None,
) -> Entry:
    """A Cloud Run `system_event` audit entry for a Ready condition change, as Cloud Run writes them:
    protoPayload (AuditLog) with status.message "Ready condition status changed to True|False for
    Revision X with message: ..." (INFO when True, ERROR when False); `revision_name` is "" for a
    service-level event."""
    kind = "Revision" if revision else "Service"
    return {
        "logName": log_name(project, "cloudaudit.googleapis.com/system_event"),
        "resource": _resource(project, location, service, revision or ""),
        "timestamp": _now_text(timestamp),
        "severity": "INFO" if ready else "ERROR",
        "protoPayload": {
            "@type": AUDIT_LOG_TYPE,
            "status": {"message": message},
            "serviceName": "run.googleapis.com",
            "methodName": "/Services.ReplaceService",
            "resourceName": f"namespaces/{project}/{kind.lower()}s/{revision or service}",
            "response": {"kind": kind, "metadata": {"name": revision or service, "namespace": project}},
        },
    }


# ---------------------------------------------------------------------------------------------------
# Page tokens: an opaque cursor (position of the last entry returned, and the direction)

Key = tuple[int, int]  # (timestamp in microseconds since the epoch, arrival sequence)


def encode_page_token(after: Key, descending: bool) -> str:
    raw = json.dumps({"a": list(after), "d": descending}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, descending: bool) -> Key:
    """The cursor in ``token``; ApiError 400 naming page_token if it is not one of ours for this order."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after = data["a"]
        if data["d"] is not descending:
            raise ValueError("order mismatch")
        if not (isinstance(after, list) and len(after) == 2 and all(type(x) is int for x in after)):
            raise ValueError("bad cursor")
        return (after[0], after[1])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ApiError(
            400, "page_token is invalid (not from a previous call with the same order_by)", field="page_token"
        ) from None


def parse_order_by(order_by: str) -> bool:
    """True for descending; ApiError 400 naming order_by for anything but ``timestamp [asc|desc]``."""
    words = order_by.strip().lower().split()
    if words in ([], ["timestamp"], ["timestamp", "asc"]):
        return False
    if words == ["timestamp", "desc"]:
        return True
    raise ApiError(
        400, f"order_by must be 'timestamp asc' or 'timestamp desc', not {order_by!r}", field="order_by"
    )


# ---------------------------------------------------------------------------------------------------
# The store


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars); several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


@dataclass(slots=True)
class _Record:
    key: Key
    entry: Entry


def _record_key(record: _Record) -> Key:
    return record.key


@dataclass
class _Index:
    """Records sorted by key."""

    records: list[_Record] = field(default_factory=list)

    def insert(self, record: _Record) -> None:
        if not self.records or self.records[-1].key < record.key:
            self.records.append(record)  # the common case: entries arrive in time order
        else:
            bisect.insort(self.records, record, key=_record_key)

    def span(self, low: Key, high: Key) -> tuple[int, int]:
        """Index range [start, stop) of the records with low <= key <= high."""
        start = bisect.bisect_left(self.records, low, key=_record_key)
        stop = bisect.bisect_right(self.records, high, key=_record_key)
        return start, stop


_MIN_KEY: Key = (-(2**62), -1)
_MAX_KEY: Key = (2**62, 2**62)


class LogStore:
    """In-memory Cloud Logging for one project; append from any thread, list like entries:list."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._lock = threading.Lock()
        self._sequence = itertools.count()
        self._all = _Index()
        self._by_service: dict[str, _Index] = {}
        self._by_revision: dict[str, _Index] = {}
        self._insert_prefix = os.urandom(4).hex()

    def __len__(self) -> int:
        return len(self._all.records)

    def append(self, entry: Entry) -> None:
        """Store a LogEntry dict; fills insertId, timestamp and receiveTimestamp if missing.

        The store takes ownership of the nested values (the entry builders make fresh ones): the caller
        must not mutate them afterwards. Its top level is copied, so ``entry`` itself is left as it was.
        """
        if not isinstance(entry.get("logName"), str) or not entry["logName"]:
            raise ValueError("a log entry needs a logName")
        stored = dict(entry)
        received = datetime.now(UTC)
        moment = received
        if stored.get("timestamp") is not None:
            stamp = stored["timestamp"]
            parsed = stamp if isinstance(stamp, datetime) else parse_timestamp(str(stamp))
            if parsed is None:
                raise ValueError(f"invalid timestamp {stamp!r}")
            moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        stored["timestamp"] = format_timestamp(moment)
        stored.setdefault("receiveTimestamp", format_timestamp(received))
        labels = (stored.get("resource") or {}).get("labels") or {}
        service, revision = labels.get("service_name"), labels.get("revision_name")
        with self._lock:
            sequence = next(self._sequence)
            stored.setdefault("insertId", f"{self._insert_prefix}{sequence:012x}")
            record = _Record((timestamp_micros(moment), sequence), stored)
            self._all.insert(record)
            if isinstance(service, str):
                self._by_service.setdefault(service.casefold(), _Index()).insert(record)
            if isinstance(revision, str):
                self._by_revision.setdefault(revision.casefold(), _Index()).insert(record)

    def check_resource_names(self, resource_names: list[str]) -> None:
        """Only this project can be read: ``projects/<p>`` (or a log view under it)."""
        if not resource_names:
            raise ApiError(400, "resource_names must name at least one project", field="resource_names")
        for name in resource_names:
            parts = name.split("/") if isinstance(name, str) else []
            view = len(parts) == 8 and parts[2::2] == ["locations", "buckets", "views"]
            if len(parts) < 2 or parts[0] != "projects" or not parts[1] or not (len(parts) == 2 or view):
                raise ApiError(400, f"Invalid resource name {name!r}", field="resource_names")
            if parts[1] != self.project:
                raise ApiError(
                    403,
                    f"The caller does not have permission to read logs of {name!r}",
                    status="PERMISSION_DENIED",
                )

    def _candidates(self, node: Node | None, low: Key, high: Key) -> list[_Record]:
        """The records between ``low`` and ``high`` (in key order) that a top-level revision / service
        restriction leaves; a copy of a range, so the caller may scan it without holding the lock."""
        indexes = [self._all]
        for label, by_value in (("revision_name", self._by_revision), ("service_name", self._by_service)):
            values = required_values(node, ("resource", "labels", label))
            if values is not None:
                indexes = [by_value[value] for value in sorted(values) if value in by_value]
                break
        ranges = [index.records[slice(*index.span(low, high))] for index in indexes]
        if len(ranges) == 1:
            return ranges[0]
        return list(heapq.merge(*ranges, key=_record_key))  # revisions / services are disjoint

    def list_entries(
        self,
        *,
        resource_names: list[str],
        filter_: str = "",
        order_by: str = "timestamp asc",
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
        empty_page: bool = False,
    ) -> tuple[list[Entry], str | None]:
        """One page of matching entries (deep copies) and the next page token (None on the last page).
        `empty_page`: answer no entries and a token that resumes where this page would have started, as
        the API may ("If entries is empty, nextPageToken may still be returned, indicating that more
        entries may exist": ListLogEntriesResponse).

        Raises ApiError: 400 (filter / order_by / page_size / page_token / resource_names), 403 (project).
        """
        self.check_resource_names(resource_names)
        descending = parse_order_by(order_by)
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 0 <= page_size <= MAX_PAGE_SIZE
        ):
            raise ApiError(400, f"page_size must be between 0 and {MAX_PAGE_SIZE}", field="page_size")
        page_size = page_size or DEFAULT_PAGE_SIZE
        try:
            node = parse(filter_)
            matches = compile_filter(filter_)
        except FilterError as exc:
            raise ApiError(400, str(exc), field="filter") from None
        cursor = decode_page_token(page_token, descending) if page_token else None
        if empty_page:
            return [], page_token or encode_page_token(_MAX_KEY if descending else _MIN_KEY, descending)
        low_time, high_time = time_bounds(node)
        low: Key = (timestamp_micros(low_time), -1) if low_time else _MIN_KEY
        high: Key = (timestamp_micros(high_time) + 1, -1) if high_time else _MAX_KEY
        if cursor is not None:
            low, high = (
                (low, min(high, (cursor[0], cursor[1] - 1)))
                if descending
                else (max(low, (cursor[0], cursor[1] + 1)), high)
            )
        with self._lock:
            candidates = self._candidates(node, low, high)
        page = _scan(candidates, descending, matches, page_size + 1)
        more = len(page) > page_size
        page = page[:page_size]
        entries = [copy_json(record.entry) for record in page]  # stored entries are never mutated
        token = encode_page_token(page[-1].key, descending) if more and page else None
        return entries, token


def _scan(
    records: list[_Record], descending: bool, matches: Callable[[Entry], bool], limit: int
) -> list[_Record]:
    found: list[_Record] = []
    for record in reversed(records) if descending else records:
        if matches(record.entry):
            found.append(record)
            if len(found) >= limit:
                break
    return found
