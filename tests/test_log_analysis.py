from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stagecheck.log_analysis import (
    LogRecord,
    LogSummary,
    compare,
    crash_kind,
    effective_severity,
    group_tracebacks,
    judge_logs,
    judge_logs_unavailable,
    normalise_signature,
    previous_window,
    record_from_entry_dict,
    summarise,
)
from stagecheck.model import Status
from stagecheck.settings import LogRules

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = (T0, T0 + timedelta(minutes=5))
NEW_REV = "checkout-00002-abc"
OLD_REV = "checkout-00001-xyz"


def rec(
    seconds: float,
    message: str = "",
    *,
    severity: str = "INFO",
    stream: str = "stdout",
    revision: str = NEW_REV,
    status: int | None = None,
    insert_id: str = "",
    url: str | None = None,
    instance: str = "",
    latency: float | None = None,
    agent: str = "",
) -> LogRecord:
    return LogRecord(
        timestamp=T0 + timedelta(seconds=seconds),
        severity=severity,
        message=message,
        stream="requests" if status is not None else stream,
        revision=revision,
        insert_id=insert_id,
        http_status=status,
        request_url=url,
        instance_id=instance,
        latency_s=latency,
        user_agent=agent,
    )


NO_INSTANCE = "The request was aborted because there was no available instance."


# ----------------------------------------------------------------------------------------- entry parsing


def test_record_from_text_entry() -> None:
    entry = {
        "logName": "projects/p/logs/run.googleapis.com%2Fstderr",
        "resource": {
            "type": "cloud_run_revision",
            "labels": {"revision_name": NEW_REV, "service_name": "checkout"},
        },
        "timestamp": "2026-03-01T12:00:01.123456789Z",
        "textPayload": "ModuleNotFoundError: No module named 'foo'",
        "insertId": "abc123",
    }
    r = record_from_entry_dict(entry)
    assert r.timestamp == datetime(2026, 3, 1, 12, 0, 1, 123456, tzinfo=UTC)
    assert (r.severity, r.stream, r.revision, r.insert_id) == ("DEFAULT", "stderr", NEW_REV, "abc123")
    assert r.message == "ModuleNotFoundError: No module named 'foo'"
    assert r.http_status is None


def test_record_from_json_and_request_entries() -> None:
    structured = record_from_entry_dict(
        {
            "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
            "timestamp": "2026-03-01T12:00:02Z",
            "severity": "ERROR",
            "jsonPayload": {"message": "payment failed", "order": 7},
        }
    )
    assert (structured.severity, structured.message, structured.stream) == (
        "ERROR",
        "payment failed",
        "stdout",
    )
    dump = record_from_entry_dict(
        {
            "logName": "projects/p/logs/x",
            "timestamp": "2026-03-01T12:00:02Z",
            "jsonPayload": {"b": 1, "a": "x"},
        }
    )
    assert dump.message == '{"a":"x","b":1}'
    assert dump.stream == "other"
    request = record_from_entry_dict(
        {
            "logName": "projects/p/logs/run.googleapis.com%2Frequests",
            "timestamp": "2026-03-01T12:00:03.5+00:00",
            "severity": 500,
            "httpRequest": {"status": 503, "latency": "0.012s", "requestUrl": "https://x.run.app/health"},
        }
    )
    assert (request.stream, request.severity, request.http_status) == ("requests", "ERROR", 503)
    assert request.latency_s == pytest.approx(0.012)
    assert request.request_url == "https://x.run.app/health"


def test_record_without_timestamp_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no timestamp"):
        record_from_entry_dict({"logName": "projects/p/logs/x", "insertId": "i1", "textPayload": "hi"})
    with pytest.raises(ValueError, match="RFC 3339"):
        record_from_entry_dict({"logName": "projects/p/logs/x", "timestamp": "yesterday"})


# ------------------------------------------------------------------------------------------ signatures


def test_varying_ids_and_numbers_share_a_signature() -> None:
    a = normalise_signature("payment backend timeout after 3000 ms (request id 5f3a9c)")
    b = normalise_signature("payment backend timeout after 2875 ms (request id 0b12ee)")
    assert a == b
    assert "payment backend timeout after" in a


def test_module_names_keep_signatures_apart() -> None:
    assert normalise_signature("No module named 'foo'") != normalise_signature("No module named 'bar'")
    assert "'foo'" in normalise_signature("ModuleNotFoundError: No module named 'foo'")


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (
            "request 3f2a1b6c-1234-4abc-9def-0123456789ab failed",
            "request 00000000-aaaa-4bbb-8ccc-dddddddddddd failed",
        ),
        ("connect 10.0.0.12:5432 refused", "connect 10.1.2.3:6543 refused"),
        ("at 2026-03-01T12:00:01.5Z slow", "at 2026-03-02T08:30:00Z slow"),
        ("pointer 0x7ffd1234 invalid", "pointer 0xdeadbeef invalid"),
        ("session aGVsbG8gV29ybGQxMjM0NTY3 expired", "session ZmFrZVRva2VuOTg3NjU0MzIx expired"),
        ("revision checkout-00003-qwe not ready", "revision checkout-00002-kpz not ready"),
        ("used 530 MiB of 512MiB", "used 601 MiB of 1024MiB"),
    ],
)
def test_noise_is_stripped(one: str, two: str) -> None:
    assert normalise_signature(one) == normalise_signature(two)


def test_distinct_messages_stay_distinct_and_paths_survive() -> None:
    sig = normalise_signature('File "/usr/local/lib/python3.11/site-packages/app/db.py", line 42, in connect')
    assert "/usr/local/lib/python3.11/site-packages/app/db.py" in sig
    assert "line <n>" in sig
    assert normalise_signature("cache miss for user") != normalise_signature("cache hit for user")


def test_traceback_entry_is_keyed_by_its_exception_line() -> None:
    tb = "Traceback (most recent call last):\n  File \"/app/main.py\", line {n}, in <module>\nKeyError: 'price'"
    assert normalise_signature(tb.format(n=3)) == normalise_signature(tb.format(n=9))
    assert normalise_signature(tb.format(n=3)).endswith("KeyError: 'price'")


def test_signature_whitespace_and_length() -> None:
    assert normalise_signature("  a   b\tc  ") == "a b c"
    assert len(normalise_signature("x" * 1000)) <= 200


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "Memory limit of 512 MiB exceeded with 530 MiB used. Consider increasing the memory limit",
            "memory-limit",
        ),
        ("Container called exit(1).", "exit"),
        (
            "The user-provided container failed to start and listen on the port defined by PORT=8080",
            "failed-to-start",
        ),
        ("Default STARTUP TCP probe failed 1 time consecutively for container", "failed-to-start"),
        ("ModuleNotFoundError: No module named 'foo'", "import-error"),
        ("ImportError: cannot import name 'x' from 'y'", "import-error"),
        ("Traceback (most recent call last):", "traceback"),
        ("panic: runtime error: invalid memory address or nil pointer dereference", "panic"),
        ("Segmentation fault (core dumped)", "segfault"),
        ("container was OOMKilled", "oom-killed"),
        ("[CRITICAL] WORKER TIMEOUT (pid:9)", "worker-timeout"),
        ('Exception in thread "main" java.lang.IllegalStateException', "uncaught-exception"),
        ("Container called exit(0).", None),
        ("GET /health 200", None),
        ("payment backend timeout after 3000 ms", None),
    ],
)
def test_crash_kind(message: str, kind: str | None) -> None:
    assert crash_kind(message) == kind


def test_crash_lines_count_as_errors() -> None:
    assert (
        effective_severity(rec(0, "Traceback (most recent call last):", severity="DEFAULT", stream="stderr"))
        == "ERROR"
    )
    assert effective_severity(rec(0, "Container called exit(1).", severity="WARNING")) == "ERROR"
    assert effective_severity(rec(0, "Container called exit(1).", severity="CRITICAL")) == "CRITICAL"
    assert effective_severity(rec(0, "listening on :8080", severity="DEFAULT", stream="stderr")) == "DEFAULT"


# ----------------------------------------------------------------------------------------------- summary


def test_summarise_groups_counts_and_orders() -> None:
    records = [
        rec(1, "started server on port 8080"),
        rec(2, "payment backend timeout after 3000 ms (request id 5f3a9c)", severity="ERROR", insert_id="i1"),
        rec(3, "payment backend timeout after 2875 ms (request id 0b12ee)", severity="ERROR", insert_id="i2"),
        rec(4, "slow query 1200 ms", severity="WARNING"),
        rec(
            5,
            "ModuleNotFoundError: No module named 'foo'",
            severity="DEFAULT",
            stream="stderr",
            insert_id="i3",
        ),
        rec(
            6,
            "payment backend timeout after 3100 ms (request id 77aa01)",
            severity="CRITICAL",
            insert_id="i4",
        ),
        rec(7, "from another revision", severity="ERROR", revision=OLD_REV),
        rec(400, "after the window", severity="ERROR"),
    ]
    s = summarise(records, revision=NEW_REV, window=WINDOW)
    assert s.total == 6
    assert s.by_severity == {"CRITICAL": 1, "ERROR": 3, "WARNING": 1, "INFO": 1}
    first = s.groups[0]
    assert first.count == 3 and first.severity == "CRITICAL"
    assert first.insert_ids == ["i1", "i2", "i4"]
    assert first.first_seen == T0 + timedelta(seconds=2) and first.last_seen == T0 + timedelta(seconds=6)
    assert "3100 ms" in first.example  # the worst line is the example
    assert [g.crash for g in s.crashes] == ["import-error"]
    assert s.crashes[0].streams == ["stderr"]
    assert [g.severity for g in s.groups] == ["CRITICAL", "ERROR", "WARNING", "INFO"]


def test_examples_are_redacted() -> None:
    s = summarise(
        [rec(1, "auth failed for Authorization: Bearer abcdefgh12345678", severity="ERROR")],
        revision=NEW_REV,
        window=WINDOW,
    )
    assert "abcdefgh12345678" not in s.groups[0].example
    assert "[REDACTED]" in s.groups[0].example


def test_real_503s_and_429s_count_even_when_a_2xx_follows() -> None:
    """Issue 18: the rate is judged entry by entry, not by status order; a later 2xx excuses nothing."""
    records = [
        rec(1, status=503, url="https://x/health", instance="i-1", latency=0.01),  # an app's own 503
        rec(2, status=429, url="https://x/health", latency=60.0,  # max instances: queued 60 s, then 429
            message=NO_INSTANCE),
        rec(3, status=200, url="https://x/health", instance="i-1"),
        *[rec(4 + i, status=200, url="https://x/health", instance="i-1") for i in range(6)],
        rec(20, status=503, url="https://x/api/pay?id=7", instance="i-1"),
        rec(21, status=500, url="https://x/api/pay", instance="i-1"),
        rec(22, status=404, url="https://x/missing", instance="i-1"),
    ]
    s = summarise(records, revision=NEW_REV, window=WINDOW)
    assert s.requests == 12 and s.platform_refusals == 0
    assert s.server_errors == 4
    assert s.error_rate_5xx == pytest.approx(4 / 12)
    assert s.server_error_urls == {"503 /health": 1, "429 /health": 1, "503 /api/pay": 1, "500 /api/pay": 1}
    assert s.groups == []  # request logs are not signature groups
    assert s.by_severity == {}


def test_a_platform_refusal_is_classified_by_the_entry_itself_and_excused() -> None:
    """firebase/firebase-functions#965: status 500, 0 ms, no instanceId, "no available instance"."""
    refusal = rec(5, status=500, message=NO_INSTANCE, latency=0.0, insert_id="r1")
    served = [rec(1 + i, status=200, instance="i-1") for i in range(3)]
    s = summarise([*served, refusal], revision=NEW_REV, window=WINDOW)
    assert (s.platform_refusals, s.server_errors, s.error_rate_5xx) == (1, 0, 0.0)
    assert s.refusal_ids == ["r1"] and s.counted_requests == 3
    # any one sign missing and it is the release's failure: an instance answered, or it waited, or no text
    for not_refusal in (rec(5, status=500, message=NO_INSTANCE, latency=0.0, instance="i-1"),
                        rec(5, status=500, message=NO_INSTANCE, latency=3.0),
                        rec(5, status=500, message="", latency=0.0)):
        s = summarise([*served, not_refusal], revision=NEW_REV, window=WINDOW)
        assert (s.platform_refusals, s.server_errors) == (0, 1), not_refusal


def test_probe_requests_are_counted_apart_and_advisory_probes_do_not_gate() -> None:
    from stagecheck.log_analysis.requests import ADVISORY_USER_AGENT, PROBE_USER_AGENT

    records = [
        *[rec(1 + i, status=200, agent=PROBE_USER_AGENT, instance="i-1") for i in range(4)],
        *[rec(10 + i, status=503, agent=ADVISORY_USER_AGENT, instance="i-1") for i in range(3)],
        rec(20, status=200, agent="Mozilla/5.0", instance="i-1"),
        rec(21, status=502, agent="Mozilla/5.0", instance="i-1", url="https://x/api"),
    ]
    s = summarise(records, revision=NEW_REV, window=WINDOW)
    assert s.by_origin == {"advisory": (3, 3), "other": (2, 1), "probe": (4, 0)}
    assert s.server_errors == 1 and s.counted_requests == 6  # advisory probes shown, not gated
    assert s.error_rate_5xx == pytest.approx(1 / 6)
    assert s.server_error_urls == {"502 /api": 1}
    result = judge_logs(s, compare(s, None, LogRules(max_5xx_rate=0.2)), LogRules(max_5xx_rate=0.2))
    rate = next(c for c in result.criteria if c.name.startswith("5xx rate"))
    assert rate.status is Status.PASS
    assert "stagecheck's probes 4 (0 failed)" in rate.observed and "other traffic 2 (1 failed)" in rate.observed
    assert "probes of advisory URLs (not gated) 3 (3 failed)" in rate.observed


def test_naive_or_inverted_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        summarise([], revision=NEW_REV, window=(datetime(2026, 1, 1), datetime(2026, 1, 2)))
    with pytest.raises(ValueError, match="before it starts"):
        previous_window((WINDOW[1], WINDOW[0]))


def test_previous_window_has_equal_length_and_ends_at_start() -> None:
    start, end = previous_window(WINDOW)
    assert end == WINDOW[0]
    assert end - start == WINDOW[1] - WINDOW[0]


# -------------------------------------------------------------------------------------- compare + judge


def _summaries(
    current: list[LogRecord], previous: list[LogRecord] | None
) -> tuple[LogSummary, LogSummary | None]:
    cur = summarise(current, revision=NEW_REV, window=WINDOW)
    prev = (
        summarise(previous, revision=OLD_REV, window=previous_window(WINDOW))
        if previous is not None
        else None
    )
    return cur, prev


def _old(seconds: float, message: str, **kw: Any) -> LogRecord:
    return rec(seconds - 300, message, revision=OLD_REV, **kw)


def test_compare_classifies_new_pre_existing_tolerated_and_below() -> None:
    current = [
        rec(1, "payment backend timeout after 3000 ms (request id 5f3a9c)", severity="ERROR"),
        rec(2, "cache connection reset by peer 10.0.0.3:6379", severity="ERROR"),
        rec(3, "deprecated config key 'foo'", severity="WARNING"),
        rec(4, "known flaky upstream: inventory 502", severity="ERROR"),
        rec(5, "Container called exit(1).", severity="DEFAULT", stream="system"),
    ]
    previous = [_old(10, "cache connection reset by peer 10.0.0.9:6379", severity="ERROR")]
    cur, prev = _summaries(current, previous)
    rules = LogRules(tolerated_signatures=("known flaky upstream",))
    c = compare(cur, prev, rules)
    assert [g.signature for g in c.pre_existing] == ["cache connection reset by peer <ip>"]
    assert {g.signature for g in c.new} == {
        "payment backend timeout after <n> (request id <n>)",
        "Container called exit(<n>).",
    }
    assert [g.crash for g in c.new_crashes] == ["exit"]
    assert len(c.tolerated) == 1 and "known flaky" in c.tolerated[0].signature
    assert [g.severity for g in c.below_threshold] == ["WARNING"]
    assert c.previous_revision == OLD_REV


def test_first_deploy_makes_everything_new_and_regex_tolerance() -> None:
    cur, _ = _summaries(
        [
            rec(1, "db pool exhausted (42 waiting)", severity="ERROR"),
            rec(2, "upstream 504 from pricing", severity="ERROR"),
        ],
        None,
    )
    c = compare(cur, None, LogRules(tolerated_signatures=("/^upstream <n> from (pricing|tax)$/",)))
    assert [g.signature for g in c.new] == ["db pool exhausted (<n> waiting)"]
    assert [g.signature for g in c.tolerated] == ["upstream <n> from pricing"]
    assert c.previous_revision is None


def test_bad_tolerated_regex_is_a_clear_error() -> None:
    cur, _ = _summaries([rec(1, "x", severity="ERROR")], None)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compare(cur, None, LogRules(tolerated_signatures=("/([/",)))


def test_crash_below_threshold_is_still_gated() -> None:
    cur, prev = _summaries(
        [rec(1, "Traceback (most recent call last):", stream="stderr", severity="DEFAULT")], []
    )
    c = compare(cur, prev, LogRules(severity_threshold="CRITICAL"))
    assert [g.crash for g in c.new] == ["traceback"]


def _criterion(result: Any, prefix: str) -> Any:
    return next(c for c in result.criteria if c.name.startswith(prefix))


def test_judge_passes_clean_logs() -> None:
    refusal = rec(2, status=503, message=NO_INSTANCE, latency=0.0)  # Cloud Run's front end: excused
    current = [rec(1, "started"), refusal, rec(3, status=200), rec(4, status=200)]
    cur, prev = _summaries(current, [_old(1, "started")])
    result = judge_logs(cur, compare(cur, prev, LogRules()), LogRules())
    assert result.name == "logs"
    assert result.status is Status.PASS
    assert [c.status for c in result.criteria] == [Status.PASS] * 3
    assert [c.name for c in result.criteria] == [
        "No new ERROR signatures",
        "No crash signatures",
        "5xx rate <= 0 %",
    ]
    assert "1 platform refusal(s) (excused)" in _criterion(result, "5xx").observed
    assert result.data["platform_refusals"] == result.data["cold_start_errors"] == 1


def test_judge_fails_on_new_error_signature_and_lists_evidence() -> None:
    current = [
        rec(1, "payment backend timeout after 3000 ms (request id 5f3a9c)", severity="ERROR", insert_id="e1"),
        rec(2, "payment backend timeout after 2875 ms (request id 0b12ee)", severity="ERROR", insert_id="e2"),
        rec(3, "cache miss storm", severity="ERROR"),
        rec(4, status=200),
    ]
    cur, prev = _summaries(current, [_old(1, "cache miss storm", severity="ERROR")])
    rules = LogRules()
    result = judge_logs(cur, compare(cur, prev, rules), rules)
    assert result.status is Status.FAIL
    assert "1 new ERROR+ signature(s)" in result.summary
    sig = _criterion(result, "No new ERROR")
    assert sig.status is Status.FAIL
    assert sig.observed == "1 new, 1 pre-existing, 0 tolerated"
    new_ev = [e for e in result.evidence if e.data.get("classification") == "new"]
    assert len(new_ev) == 1
    assert new_ev[0].data["count"] == 2 and new_ev[0].data["insert_ids"] == ["e1", "e2"]
    assert "3000 ms" in new_ev[0].data["example"]
    assert [g["signature"] for g in result.data["pre_existing"]] == ["cache miss storm"]


def test_judge_allowance_for_new_signatures_warns() -> None:
    cur, prev = _summaries([rec(1, "novel error", severity="ERROR"), rec(2, status=200)], [])
    rules = LogRules(max_new_signatures=1)
    result = judge_logs(cur, compare(cur, prev, rules), rules)
    assert result.status is Status.WARN
    assert "within the allowance" in result.summary


def test_judge_warns_on_pre_existing_errors_only() -> None:
    cur, prev = _summaries(
        [rec(1, "cache miss storm", severity="ERROR"), rec(2, status=200)],
        [_old(1, "cache miss storm", severity="ERROR")],
    )
    result = judge_logs(cur, compare(cur, prev, LogRules()), LogRules())
    assert result.status is Status.WARN
    assert "1 pre-existing" in result.summary


def test_judge_fails_on_new_crash_even_with_allowance() -> None:
    cur, prev = _summaries(
        [
            rec(1, "ModuleNotFoundError: No module named 'foo'", stream="stderr", severity="DEFAULT"),
            rec(2, status=200),
        ],
        [],
    )
    rules = LogRules(max_new_signatures=5)
    result = judge_logs(cur, compare(cur, prev, rules), rules)
    assert result.status is Status.FAIL
    assert "new crash: import-error" in result.summary
    assert _criterion(result, "No crash").status is Status.FAIL


def test_judge_fails_on_5xx_rate_over_limit() -> None:
    records = [
        rec(1, status=200),
        *[rec(2 + i, status=200) for i in range(8)],
        rec(20, status=500, url="/api"),
    ]
    cur, prev = _summaries(records, [])
    tight = LogRules(max_5xx_rate=0.05)
    result = judge_logs(cur, compare(cur, prev, tight), tight)
    assert result.status is Status.FAIL
    rate = _criterion(result, "5xx rate")
    assert rate.name == "5xx rate <= 5 %"
    assert rate.observed.startswith("10 % (1/10)")
    loose = LogRules(max_5xx_rate=0.2)
    assert judge_logs(cur, compare(cur, prev, loose), loose).status is Status.PASS


def test_judge_warns_when_no_request_logs() -> None:
    cur, prev = _summaries([rec(1, "started")], [])
    result = judge_logs(cur, compare(cur, prev, LogRules()), LogRules())
    assert result.status is Status.WARN
    assert _criterion(result, "5xx").observed == "no request logs in the window"


def test_unreadable_logs_fail_closed_and_redact() -> None:
    result = judge_logs_unavailable("403 from logging: token=abcd1234efgh")
    assert result.status is Status.FAIL
    assert result.summary.startswith("could not read logs: 403")
    assert "abcd1234efgh" not in result.model_dump_json()
    assert result.criteria[0].status is Status.FAIL


def test_entries_of_the_real_logging_client_convert_via_to_api_repr() -> None:
    # the lead's reader gets StructEntry/TextEntry objects from google-cloud-logging; no request is sent
    import google.cloud.logging
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.logging_v2.entries import LogEntry, StructEntry, TextEntry

    client = google.cloud.logging.Client(
        project="p",
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": "http://127.0.0.1:9"},
    )
    resource = {"type": "cloud_run_revision", "labels": {"revision_name": NEW_REV}}
    text = TextEntry.from_api_repr(
        {
            "logName": "projects/p/logs/run.googleapis.com%2Fstderr",
            "resource": resource,
            "insertId": "t1",
            "timestamp": "2026-03-01T12:00:01.5Z",
            "textPayload": "Container called exit(1).",
        },
        client,
    )
    struct = StructEntry.from_api_repr(
        {
            "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
            "resource": resource,
            "severity": "ERROR",
            "timestamp": "2026-03-01T12:00:02Z",
            "jsonPayload": {"message": "db down", "attempt": 3},
        },
        client,
    )
    request = LogEntry.from_api_repr(
        {
            "logName": "projects/p/logs/run.googleapis.com%2Frequests",
            "resource": resource,
            "timestamp": "2026-03-01T12:00:03Z",
            "severity": "ERROR",
            "httpRequest": {
                "requestMethod": "GET",
                "requestUrl": "https://x/pay",
                "status": 502,
                "latency": "1.5s",
            },
        },
        client,
    )
    records = [record_from_entry_dict(e.to_api_repr()) for e in (text, struct, request)]
    assert [r.stream for r in records] == ["stderr", "stdout", "requests"]
    assert records[0].timestamp == T0 + timedelta(seconds=1.5)
    assert records[1].message == "db down" and records[1].severity == "ERROR"
    assert (records[2].http_status, records[2].latency_s) == (502, 1.5)
    s = summarise(records, revision=NEW_REV, window=WINDOW)
    assert [g.crash for g in s.crashes] == ["exit"]
    assert s.server_errors == 1


def test_capped_log_read_warns() -> None:
    cur, prev = _summaries([rec(1, "started"), rec(2, status=200)], [])
    rules = LogRules(max_entries=2)
    assert judge_logs(cur, compare(cur, prev, rules), rules).status is Status.PASS
    capped = judge_logs(cur, compare(cur, prev, rules), rules, truncated=True)
    assert capped.status is Status.WARN
    assert "capped at 2 entries" in capped.summary
    assert capped.data["truncated"] is True


def test_hex_and_all_digit_ids_share_a_signature() -> None:
    # a random 6-hex-digit id is sometimes all digits: both must group together
    a = normalise_signature("cache refresh slow after 2672 ms (570755)")
    b = normalise_signature("cache refresh slow after 1516 ms (2bab34)")
    c = normalise_signature("cache refresh slow after 17 ms (0x1f2e)")
    assert a == b == c == "cache refresh slow after <n> (<n>)"


# ------------------------------------------------------------------- multi-line tracebacks, audit entries


def _line(seconds: float, message: str, *, instance: str = "i1", insert_id: str = "", revision: str = NEW_REV,
          stream: str = "stderr") -> LogRecord:
    return LogRecord(timestamp=T0 + timedelta(seconds=seconds), severity="DEFAULT", message=message,
                     stream=stream, revision=revision, insert_id=insert_id, instance_id=instance)


TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/orders.py", line 88, in handle',
    "    total = price_of(order)",
    '  File "/app/pricing.py", line 21, in price_of',
    '    return DISCOUNTS[order["discount_code"]]',
    "KeyError: 'discount_code'",
]


def _traceback(start: float, *, instance: str = "i1", exception: str | None = None, prefix: str = "t",
               revision: str = NEW_REV) -> list[LogRecord]:
    lines = [*TRACEBACK[:-1], exception or TRACEBACK[-1]]
    return [_line(start + n * 0.001, text, instance=instance, insert_id=f"{prefix}{n}", revision=revision)
            for n, text in enumerate(lines)]


def test_traceback_lines_of_one_instance_become_one_record_keyed_on_the_exception() -> None:
    records = [*_traceback(1.0), _line(1.5, "GET /health 200", stream="stdout")]
    grouped = group_tracebacks(records)
    assert len(grouped) == 2
    tb = grouped[0]
    assert tb.message.splitlines() == TRACEBACK
    assert tb.insert_ids == tuple(f"t{n}" for n in range(6))
    assert normalise_signature(tb.message) == "Traceback: KeyError: 'discount_code'"


def test_interleaved_tracebacks_of_two_instances_stay_apart() -> None:
    a = _traceback(1.0, instance="a", prefix="a")
    b = _traceback(1.0005, instance="b", exception="ValueError: bad price", prefix="b")
    mixed = sorted([*a, *b], key=lambda r: r.timestamp)
    grouped = group_tracebacks(mixed)
    assert sorted(r.message.splitlines()[-1] for r in grouped) == ["KeyError: 'discount_code'", "ValueError: bad price"]


def test_a_chained_traceback_stays_one_block_keyed_on_the_last_exception() -> None:
    first = _traceback(1.0)
    chain = [_line(1.1, ""), _line(1.101, "During handling of the above exception, another exception occurred:"),
             _line(1.102, ""), *_traceback(1.103, exception="RuntimeError: pricing failed", prefix="c")]
    (grouped,) = group_tracebacks([*first, *chain])
    assert grouped.message.splitlines()[-1] == "RuntimeError: pricing failed"


def test_a_traceback_summarises_as_one_signature_named_after_the_exception() -> None:
    records = _traceback(1.0) + _traceback(30.0, prefix="u")
    summary = summarise(records, revision=NEW_REV, window=WINDOW)
    (group,) = summary.groups
    assert group.signature == "Traceback: KeyError: 'discount_code'"
    assert (group.count, group.severity, group.crash) == (2, "ERROR", "traceback")
    assert group.insert_ids[:2] == ["t0", "t1"]
    assert summary.total == 12


def test_an_older_traceback_with_another_exception_does_not_make_a_new_one_pre_existing() -> None:
    cur, prev = _summaries(_traceback(1.0), [*_traceback(-100.0, exception="OSError: disk full", revision=OLD_REV)])
    comparison = compare(cur, prev, LogRules())
    assert [g.signature for g in comparison.new] == ["Traceback: KeyError: 'discount_code'"]
    assert comparison.pre_existing == []


def test_audit_entry_reads_the_status_message() -> None:
    entry = {
        "logName": "projects/p/logs/cloudaudit.googleapis.com%2Fsystem_event",
        "resource": {"type": "cloud_run_revision", "labels": {"revision_name": NEW_REV}},
        "timestamp": "2026-03-01T12:00:01.5Z",
        "severity": "ERROR",
        "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                         "status": {"message": f"Ready condition status changed to False for Revision {NEW_REV} "
                                               "with message: Container called exit(1)."}},
        "labels": {"instanceId": "00f1"},
    }
    record = record_from_entry_dict(entry)
    assert record.stream == "audit" and record.severity == "ERROR"
    assert record.message.startswith("Ready condition status changed to False for Revision")
    assert normalise_signature(record.message).startswith("Ready condition status changed to False for Revision "
                                                          "<revision> with message")


def test_failed_logs_gate_names_the_top_signatures_with_a_redacted_example() -> None:
    records = [rec(1, "ledger write failed for token=sk_live_abcdefghijklmnop1234 after 300 ms", severity="ERROR"),
               rec(2, "ledger write failed for token=sk_live_qrstuvwxyzabcdef5678 after 310 ms", severity="ERROR"),
               *_traceback(3.0)]
    cur, prev = _summaries(records, [])
    result = judge_logs(cur, compare(cur, prev, LogRules()), LogRules())
    assert result.status is Status.FAIL
    assert result.summary.startswith("2 new ERROR+ signature(s) (allowed 0): ")
    assert "x2 (e.g. \"ledger write failed for token=" in result.summary
    assert "sk_live_abcdefghijklmnop1234" not in result.summary
    assert "\"Traceback: KeyError: 'discount_code'\" x1 (e.g. \"KeyError: 'discount_code'\")" in result.summary


def test_an_apps_own_access_log_line_is_not_counted_again() -> None:
    """An app that logs `httpRequest` in its JSON lines (the sample service does) writes a second record of
    a request Cloud Run's request log already holds: only the platform's entry counts."""
    platform = rec(1, status=503, instance="i-1")
    own = LogRecord(timestamp=T0 + timedelta(seconds=1), severity="ERROR", message="GET /health 503",
                    stream="stdout", revision=NEW_REV, http_status=503, instance_id="i-1")
    s = summarise([platform, own], revision=NEW_REV, window=WINDOW)
    assert (s.requests, s.server_errors) == (1, 1) and s.groups == []
