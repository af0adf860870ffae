"""entries:list through the real google-cloud-logging HTTP client against a real uvicorn server."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest
from google.api_core import exceptions
from google.cloud.logging_v2.entries import LogEntry, StructEntry, TextEntry

from sandbox.logstore import container_entry, request_entry, system_entry
from tests.sandbox.logging_server import LoggingSandbox, serve_logging

PROJECT = "stage-proj"
LOCATION = "europe-west1"
REV_A = "shop-00001-aaa"
REV_B = "shop-00002-bbb"


@pytest.fixture
def sandbox() -> Iterator[LoggingSandbox]:
    with serve_logging(PROJECT) as running:
        yield running


def stdout(
    revision: str, line: str, at: datetime, stream: Literal["stdout", "stderr"] = "stdout"
) -> dict[str, Any]:
    return container_entry(
        project=PROJECT,
        location=LOCATION,
        service="shop",
        revision=revision,
        stream=stream,
        line=line,
        timestamp=at,
    )


def listed(sandbox: LoggingSandbox, **kwargs: Any) -> list[Any]:
    client: Any = sandbox.logging_client()
    return list(client.list_entries(**kwargs))


def test_filter_by_revision_and_severity(sandbox: LoggingSandbox) -> None:
    now = datetime.now(UTC)
    lines = [
        (REV_A, '{"severity": "ERROR", "message": "a-error"}'),
        (REV_A, '{"severity": "info", "message": "a-info"}'),
        (REV_A, '{"severity": "critical", "message": "a-critical"}'),
        (REV_A, '{"level": "error", "message": "a-level"}'),  # `level` is no severity in Cloud Logging
        (REV_A, '{"severity": "WARN", "message": "a-warn"}'),  # nor are aliases: both DEFAULT
        (REV_A, "plain text is DEFAULT"),
        (REV_B, '{"severity": "ERROR", "message": "b-error"}'),
    ]
    for offset, (revision, line) in enumerate(lines):
        sandbox.store.append(stdout(revision, line, now - timedelta(seconds=30 - offset)))
    sandbox.store.append(
        request_entry(
            project=PROJECT,
            location=LOCATION,
            service="shop",
            revision=REV_A,
            method="GET",
            url="http://127.0.0.1/api",
            status=502,
            latency_s=0.5,
            timestamp=now - timedelta(seconds=5),
        )
    )

    found = listed(sandbox, filter_=f'resource.labels.revision_name="{REV_A}" AND severity>=ERROR')

    assert [(e.severity, e.payload and e.payload.get("message")) for e in found] == [
        ("ERROR", "a-error"),
        ("CRITICAL", "a-critical"),
        ("ERROR", None),
    ]
    assert {e.resource.labels["revision_name"] for e in found} == {REV_A}
    defaults = listed(sandbox, filter_=f'resource.labels.revision_name="{REV_A}" AND severity=DEFAULT')
    assert [e.payload if isinstance(e.payload, str) else e.payload.get("message") for e in defaults] == [
        "a-level", "a-warn", "plain text is DEFAULT"]


def test_order_desc_and_asc(sandbox: LoggingSandbox) -> None:
    now = datetime.now(UTC)
    offsets = [5, 1, 9, 3, 7]  # appended out of time order
    for n in offsets:
        sandbox.store.append(stdout(REV_A, f"line {n}", now - timedelta(minutes=n)))

    desc = listed(sandbox, filter_=f"resource.labels.revision_name={REV_A}", order_by="timestamp desc")
    asc = listed(sandbox, filter_=f"resource.labels.revision_name={REV_A}")

    assert [e.payload for e in desc] == [f"line {n}" for n in sorted(offsets)]
    assert [e.payload for e in asc] == [f"line {n}" for n in sorted(offsets, reverse=True)]
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(asc))


@pytest.mark.parametrize("order_by", ["timestamp asc", "timestamp desc"])
def test_paging_sees_every_entry_once_in_order(sandbox: LoggingSandbox, order_by: str) -> None:
    now = datetime.now(UTC)
    same_second = now - timedelta(minutes=1)
    for n in range(23):  # several entries share one timestamp: ties keep arrival order
        at = same_second if n % 4 == 0 else now - timedelta(seconds=200 - n)
        sandbox.store.append(stdout(REV_A, f"n={n}", at))
    sandbox.store.append(stdout(REV_B, "other revision", now))

    found = listed(
        sandbox, filter_=f'resource.labels.revision_name="{REV_A}"', order_by=order_by, page_size=5
    )

    pages = sandbox.requests.count("POST /v2/entries:list")
    ids = [e.insert_id for e in found]
    assert pages == 5  # 23 entries / 5 per page
    assert len(ids) == len(set(ids)) == 23
    keys = [(e.timestamp, e.insert_id) for e in found]  # insertIds grow with arrival in this store
    assert keys == sorted(keys, reverse=order_by.endswith("desc"))


def kind(log_entry: Any) -> type:
    return type(log_entry)


def test_payload_kinds_and_http_request(sandbox: LoggingSandbox) -> None:
    now = datetime.now(UTC)
    sandbox.store.append(stdout(REV_A, '{"message": "structured", "order": 7}', now - timedelta(seconds=3)))
    sandbox.store.append(
        stdout(REV_A, "Traceback (most recent call last):", now - timedelta(seconds=2), "stderr")
    )
    sandbox.store.append(
        request_entry(
            project=PROJECT,
            location=LOCATION,
            service="shop",
            revision=REV_A,
            method="POST",
            url="http://127.0.0.1:8080/api/orders",
            status=201,
            latency_s=0.012345,
            user_agent="probe/1",
            request_size=10,
            response_size=321,
            timestamp=now - timedelta(seconds=1),
        )
    )
    sandbox.store.append(
        system_entry(
            project=PROJECT,
            location=LOCATION,
            service="shop",
            revision=REV_A,
            severity="ERROR",
            message="Container failed to start",
            timestamp=now,
        )
    )

    struct, text, request, system = listed(sandbox)

    assert kind(struct) is StructEntry and struct.payload == {"message": "structured", "order": 7}
    assert struct.log_name == f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"
    assert kind(text) is TextEntry and text.payload.startswith("Traceback") and text.severity == "DEFAULT"
    assert text.log_name.endswith("run.googleapis.com%2Fstderr")
    assert kind(request) is LogEntry and request.severity == "INFO"
    assert request.http_request is not None
    assert request.http_request["status"] == 201
    assert request.http_request["latency"] == "0.012345s"
    assert request.http_request["requestMethod"] == "POST"
    assert request.http_request["userAgent"] == "probe/1"
    assert kind(system) is TextEntry and system.severity == "ERROR"
    assert system.log_name.endswith("run.googleapis.com%2Fvarlog%2Fsystem")
    assert all(e.timestamp.tzinfo is not None for e in (struct, text, request, system))
    assert len({e.insert_id for e in (struct, text, request, system)}) == 4


def test_json_lines_with_special_fields(sandbox: LoggingSandbox) -> None:
    line = (
        '{"severity": "warning", "message": "slow", "time": "2026-01-02T03:04:05.123456Z",'
        ' "logging.googleapis.com/trace": "projects/p/traces/abc", "logging.googleapis.com/labels": {"k": "v"}}'
    )
    sandbox.store.append(stdout(REV_A, line, datetime.now(UTC)))

    (found,) = listed(sandbox, filter_='timestamp>="2026-01-01T00:00:00Z"')

    assert found.severity == "WARNING"
    assert found.payload == {"message": "slow"}
    assert found.timestamp == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert found.trace == "projects/p/traces/abc"
    assert found.labels == {"k": "v"}


def test_client_appended_timestamp_term_hides_old_entries(sandbox: LoggingSandbox) -> None:
    now = datetime.now(UTC)
    sandbox.store.append(stdout(REV_A, "two days old", now - timedelta(days=2)))
    sandbox.store.append(stdout(REV_A, "fresh", now - timedelta(minutes=1)))
    since = (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    default_window = listed(sandbox, filter_=f"resource.labels.revision_name={REV_A}")
    no_filter = listed(sandbox)  # the client sends only its timestamp term
    explicit = listed(sandbox, filter_=f'resource.labels.revision_name={REV_A} AND timestamp>="{since}"')

    assert [e.payload for e in default_window] == ["fresh"]
    assert [e.payload for e in no_filter] == ["fresh"]
    assert [e.payload for e in explicit] == ["two days old", "fresh"]


def test_invalid_filter_is_bad_request_naming_the_position(sandbox: LoggingSandbox) -> None:
    with pytest.raises(exceptions.BadRequest) as caught:
        listed(sandbox, filter_="severity>=ERROR AND (textPayload:x")
    # the client appended its timestamp term, so the unclosed '(' is reported at the end of what it sent
    assert "expected ')'" in caught.value.message and "column" in caught.value.message
    assert caught.value.details[0]["fieldViolations"][0]["field"] == "filter"


def test_foreign_project_is_forbidden(sandbox: LoggingSandbox) -> None:
    with pytest.raises(exceptions.Forbidden):
        listed(sandbox, resource_names=["projects/someone-else"])


def test_bad_paging_arguments_are_400s_naming_the_field(sandbox: LoggingSandbox) -> None:
    url = f"{sandbox.endpoint}/v2/entries:list"
    base = {"resourceNames": [f"projects/{PROJECT}"]}
    cases = {
        "page_token": {**base, "pageToken": "not-a-token"},
        "page_size": {**base, "pageSize": 1001},
        "order_by": {**base, "orderBy": "severity desc"},
        "unknownThing": {**base, "unknownThing": 1},
        "resource_names": {},
    }
    with httpx.Client(headers=sandbox.auth_headers()) as http:
        answers = {field: http.post(url, json=body) for field, body in cases.items()}
    for field, answer in answers.items():
        assert answer.status_code == 400, field
        error = answer.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["details"][0]["fieldViolations"][0]["field"] == field


def test_legacy_project_ids_and_raw_paging(sandbox: LoggingSandbox) -> None:
    now = datetime.now(UTC)
    for n in range(3):
        sandbox.store.append(stdout(REV_A, f"n={n}", now - timedelta(seconds=10 - n)))
    url = f"{sandbox.endpoint}/v2/entries:list"

    with httpx.Client(headers=sandbox.auth_headers()) as http:
        first = http.post(url, json={"projectIds": [PROJECT], "pageSize": 2}).json()
        second = http.post(
            url, json={"projectIds": [PROJECT], "pageSize": 2, "pageToken": first["nextPageToken"]}
        ).json()

    assert [e["textPayload"] for e in first["entries"]] == ["n=0", "n=1"]
    assert [e["textPayload"] for e in second["entries"]] == ["n=2"]
    assert "nextPageToken" not in second


def test_fault_503_twice_then_success(sandbox: LoggingSandbox) -> None:
    sandbox.store.append(stdout(REV_A, "ok", datetime.now(UTC)))
    sandbox.faults.add("LoggingServiceV2.ListLogEntries", count=2, status=503)

    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable):
            listed(sandbox)
    assert [e.payload for e in listed(sandbox)] == ["ok"]


def test_fault_429_by_short_name_is_too_many_requests(sandbox: LoggingSandbox) -> None:
    sandbox.faults.add(
        "ListLogEntries", status=429, message="Quota exceeded for quota metric 'Read requests'"
    )

    with pytest.raises(exceptions.TooManyRequests) as caught:
        listed(sandbox)
    assert "Quota exceeded" in caught.value.message
    assert listed(sandbox) == []


def test_fault_latency_delays_the_call(sandbox: LoggingSandbox) -> None:
    sandbox.store.append(stdout(REV_A, "late", datetime.now(UTC)))
    sandbox.faults.add("LoggingServiceV2.ListLogEntries", latency_s=0.3)

    started = time.monotonic()
    found = listed(sandbox)
    elapsed = time.monotonic() - started

    assert [e.payload for e in found] == ["late"]
    assert 0.3 <= elapsed < 3.0


def test_entries_list_quota_is_60_per_minute_per_project(sandbox: LoggingSandbox) -> None:
    url = f"{sandbox.endpoint}/v2/entries:list"
    body = {"resourceNames": [f"projects/{PROJECT}"], "pageSize": 1}
    with httpx.Client(headers=sandbox.auth_headers()) as http:  # the API wants credentials
        statuses = [http.post(url, json=body).status_code for _ in range(60)]
        over = http.post(url, json=body)
    assert statuses == [200] * 60
    assert over.status_code == 429
    error = over.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert "Read requests per minute" in error["message"]
    # the real client sees a TooManyRequests it can retry
    with pytest.raises(exceptions.TooManyRequests):
        listed(sandbox, resource_names=[f"projects/{PROJECT}"])


def test_quota_window_slides() -> None:
    from sandbox.errors import ApiError
    from sandbox.logapi import ListQuota

    now = [0.0]
    quota = ListQuota(3, clock=lambda: now[0])
    for at in (0.0, 10.0, 20.0):
        now[0] = at
        quota.take("p")
    with pytest.raises(ApiError) as caught:
        quota.take("p")
    assert caught.value.http_status == 429
    quota.take("other")  # per project
    now[0] = 60.5  # the first call left the window
    quota.take("p")
    assert quota.rejected == 1


def test_plain_stdout_and_stderr_lines_are_text_at_default_with_the_instance(sandbox: LoggingSandbox) -> None:
    now = datetime.now(UTC)
    lines: list[tuple[Literal["stdout", "stderr"], str]] = [
        ("stderr", "Traceback (most recent call last):"), ("stderr", "KeyError: 'x'"),
        ("stdout", '{"severity": "WARNING", "message": "slow"}')]
    for offset, (stream, line) in enumerate(lines):
        sandbox.store.append(container_entry(project=PROJECT, location=LOCATION, service="shop", revision=REV_A,
                                             stream=stream, line=line, timestamp=now - timedelta(seconds=5 - offset),
                                             instance_id="0069c5"))
    entries = listed(sandbox, filter_=f'resource.labels.revision_name="{REV_A}"', order_by="timestamp asc")
    assert [(type(e).__name__, e.severity, e.labels) for e in entries] == [
        ("TextEntry", "DEFAULT", {"instanceId": "0069c5"}),
        ("TextEntry", "DEFAULT", {"instanceId": "0069c5"}),
        ("StructEntry", "WARNING", {"instanceId": "0069c5"}),
    ]
    assert entries[1].payload == "KeyError: 'x'" and entries[2].payload == {"message": "slow"}


def test_system_event_audit_entries_carry_the_ready_message(sandbox: LoggingSandbox) -> None:
    from sandbox.logstore import audit_entry

    message = f"Ready condition status changed to False for Revision {REV_A} with message: Container failed"
    sandbox.store.append(audit_entry(project=PROJECT, location=LOCATION, service="shop", revision=REV_A,
                                     ready=False, message=message))
    (entry,) = listed(sandbox, filter_='protoPayload.status.message:"Ready condition status changed to False"')
    assert entry.log_name == f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Fsystem_event"
    assert entry.severity == "ERROR"
    assert entry.payload["@type"] == "type.googleapis.com/google.cloud.audit.AuditLog"
    assert entry.payload["status"]["message"] == message
    assert entry.resource.labels["revision_name"] == REV_A
