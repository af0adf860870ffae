"""The Logging query language: parsing (precedence, quoting, errors) and evaluation over LogEntry dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox.logfilter import (
    And,
    Compare,
    FilterError,
    Not,
    Or,
    Search,
    compile_filter,
    parse,
    parse_timestamp,
    required_values,
    time_bounds,
)

P = "projects/p/logs/"


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "logName": P + "run.googleapis.com%2Fstdout",
        "resource": {
            "type": "cloud_run_revision",
            "labels": {"service_name": "shop", "revision_name": "shop-00002-abc", "location": "europe-west1"},
        },
        "timestamp": "2026-11-27T18:40:00.000000Z",
        "severity": "INFO",
        "insertId": "id-1",
        "textPayload": "hello world",
    }
    base.update(fields)
    return base


def matches(filter_: str, log_entry: dict[str, Any]) -> bool:
    return compile_filter(filter_)(log_entry)


# --- parsing ---------------------------------------------------------------------------------------


def test_not_binds_tightest_then_or_then_and() -> None:
    # documented example: a OR NOT b AND NOT c OR d == (a OR (NOT b)) AND ((NOT c) OR d)
    assert parse("a OR NOT b AND NOT c OR d") == And(
        (
            Or((Search("a", 0), Not(Search("b", 9)))),
            Or((Not(Search("c", 19)), Search("d", 24))),
        )
    )


def test_or_binds_tighter_than_and_in_evaluation() -> None:
    e = entry(severity="ERROR", textPayload="x")
    # AND-first precedence would read (severity=ERROR AND textPayload:nope) OR textPayload:x -> True
    assert matches("severity=INFO OR textPayload:x AND textPayload:nope", e) is False
    assert matches("(severity=INFO OR textPayload:x) AND textPayload:nope", e) is False
    assert matches("severity=INFO OR (textPayload:x AND textPayload:nope)", e) is False
    assert matches("severity=ERROR OR (textPayload:x AND textPayload:nope)", e) is True


def test_parentheses_override_precedence() -> None:
    e = entry(severity="DEBUG", textPayload="y")
    assert matches("severity=INFO OR (severity=DEBUG textPayload:y)", e) is True
    assert matches("(severity=INFO OR severity=DEBUG) AND NOT (textPayload:y)", e) is False


def test_juxtaposition_is_and_and_minus_is_not() -> None:
    assert parse('severity=ERROR textPayload:"x"') == And(
        (Compare(("severity",), "=", "ERROR", False, 9), Compare(("textPayload",), ":", "x", True, 27))
    )
    assert parse("-textPayload:x") == Not(Compare(("textPayload",), ":", "x", False, 13))
    e = entry(textPayload="a run-abc line")
    assert matches("-textPayload:zzz", e) is True
    assert matches("NOT textPayload:run-abc", e) is False


def test_quoted_strings_with_escapes() -> None:
    e = entry(textPayload='said "hi"\\ then\tleft')
    assert matches(r'textPayload:"said \"hi\"\\ then\tleft"', e) is True
    assert matches(r'textPayload="said \"hi\"\\ then\tleft"', e) is True
    assert matches('textPayload:"said \\"ho"', e) is False
    assert parse(r'x="\u00e9"') == Compare(("x",), "=", "é", True, 2)


def test_unquoted_log_name_and_value_groups() -> None:
    e = entry()
    assert matches(f"logName={P}run.googleapis.com%2Fstdout", e) is True
    assert matches(f"logName={P}run.googleapis.com%2Fstderr", e) is False
    assert matches('logName:"run.googleapis.com%2Fstdout"', e) is True
    assert matches('resource.type=("gae_app" OR "cloud_run_revision")', e) is True
    assert matches('resource.type=("gae_app" OR "gce_instance")', e) is False


def test_leading_and_from_the_python_client_is_tolerated() -> None:
    # google-cloud-logging turns filter_="" into ' AND timestamp>="..."'
    assert matches(' AND timestamp>="2026-11-27T00:00:00.000000+0000"', entry()) is True


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("severity>=ERROR AND", 19, "expected a restriction"),
        ("(severity>=ERROR", 16, "expected ')'"),
        ("severity>=ERROR)", 15, "unbalanced ')'"),
        ('textPayload:"abc', 12, "unterminated string"),
        ("severity>=LOUD", 10, "invalid severity"),
        ('timestamp>="yesterday"', 11, "invalid timestamp"),
        ("textPayload= ", 13, "expected a value"),
        ("OR severity=ERROR", 0, "expected a restriction"),
        ('jsonPayload.x=~"("', 15, "invalid regular expression"),
    ],
)
def test_syntax_errors_name_the_position(text: str, position: int, problem: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(text)
    assert caught.value.position == position
    assert problem in str(caught.value)
    assert f"column {position + 1}" in str(caught.value)


def test_empty_filter_matches_everything() -> None:
    assert parse("   ") is None
    assert matches("", entry()) is True


# --- operators -------------------------------------------------------------------------------------


def test_string_equality_is_case_insensitive_and_exact() -> None:
    e = entry()
    assert matches('resource.labels.service_name="shop"', e) is True
    assert matches('resource.labels.service_name="SHOP"', e) is True
    assert matches('resource.labels.service_name="sho"', e) is False
    assert matches('resource.labels.service_name!="shop"', e) is False
    assert matches('resource.labels.service_name!="other"', e) is True


def test_has_is_case_insensitive_substring_and_star_is_presence() -> None:
    e = entry(jsonPayload={"message": "Payment FAILED for order 7", "nested": {"k": "deep value"}})
    assert matches('jsonPayload.message:"failed"', e) is True
    assert matches('jsonPayload.message:"succeeded"', e) is False
    assert matches('jsonPayload:"deep"', e) is True
    assert matches("jsonPayload.message:*", e) is True
    assert matches("httpRequest:*", e) is False


def test_regex_operators() -> None:
    e = entry(textPayload="GET /api/v2/orders 500")
    assert matches(r'textPayload=~"/api/v\d+/orders"', e) is True
    assert matches(r'textPayload!~"^POST"', e) is True
    assert matches(r'textPayload=~"^post"', e) is False  # regexes are case-sensitive


def test_numbers_compare_numerically() -> None:
    e = entry(httpRequest={"status": 503, "responseSize": "1200", "latency": "0.250000s"})
    assert matches("httpRequest.status>=500", e) is True
    assert matches("httpRequest.status<500", e) is False
    assert matches("httpRequest.status=503", e) is True
    assert matches("httpRequest.status!=503", e) is False
    assert (
        matches("httpRequest.responseSize>999", e) is True
    )  # int64 as a JSON string; "1200" < "999" as text
    assert matches('httpRequest.latency>"0.1s"', e) is True
    assert matches('httpRequest.latency<="0.1s"', e) is False
    assert matches("http_request.status=503", e) is True  # proto field names work too


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">=", "ERROR", [False, False, True, True]),
        (">", "ERROR", [False, False, False, True]),
        ("<", "WARNING", [True, True, False, False]),
        ("<=", "info", [True, True, False, False]),
        ("=", "ERROR", [False, False, True, False]),
        ("!=", "ERROR", [True, True, False, True]),
        (">=", "400", [False, False, True, True]),
    ],
)
def test_severities_compare_by_rank(op: str, value: str, expected: list[bool]) -> None:
    entries = [entry(severity=s) for s in ("DEFAULT", "INFO", "ERROR", "CRITICAL")]
    assert [matches(f"severity{op}{value}", e) for e in entries] == expected


def test_missing_severity_is_default() -> None:
    e = entry()
    del e["severity"]
    assert matches("severity=DEFAULT", e) is True
    assert matches("severity>=DEBUG", e) is False


@pytest.mark.parametrize(
    "bound",
    [
        "2026-11-27T18:39:00.025421+0000",  # what the Python client appends
        "2026-11-27T18:39:00.025421Z",
        "2026-11-27T19:39:00.025421+01:00",
        "2026-11-27T18:39:00.025421",
    ],
)
def test_timestamps_compare_as_instants(bound: str) -> None:
    before = entry(timestamp="2026-11-27T18:39:00.025420Z")
    at = entry(timestamp="2026-11-27T18:39:00.025421Z")
    after = entry(timestamp="2026-11-27T18:39:01Z")  # not canonical: parsed
    results = [matches(f'timestamp>="{bound}"', e) for e in (before, at, after)]
    assert results == [False, True, True]
    assert [matches(f'timestamp<"{bound}"', e) for e in (before, at, after)] == [True, False, False]
    assert matches(f'timestamp="{bound}"', at) is True


def test_timestamp_range_and_unquoted_form() -> None:
    e = entry(timestamp="2026-11-27T18:40:00.000000Z")
    assert matches("timestamp>=2026-11-27T18:00:00Z AND timestamp<=2026-11-27T19:00:00Z", e) is True
    assert matches("timestamp>2026-11-27T18:40:00Z", e) is False


def test_insert_id_and_labels() -> None:
    e = entry(insertId="abc123", labels={"instanceId": "inst-9"})
    assert matches('insertId="abc123"', e) is True
    assert matches('labels.instanceId="inst-9"', e) is True
    assert matches('labels.instanceId="inst-1"', e) is False
    assert matches('labels.instanceId!="inst-1"', e) is True
    assert matches('labels.instanceId="inst-1"', entry()) is False


def test_global_restriction_searches_every_leaf() -> None:
    e = entry(textPayload="Traceback (most recent call last)")
    assert matches('"traceback"', e) is True
    assert matches("shop-00002", e) is True  # a resource label
    assert matches('"no such text"', e) is False


# --- planning helpers ------------------------------------------------------------------------------


def test_required_values_only_from_top_level_conjunction() -> None:
    revision = ("resource", "labels", "revision_name")
    assert required_values(parse('resource.labels.revision_name="R-1" AND severity>=ERROR'), revision) == {
        "r-1"
    }
    assert required_values(
        parse('severity>=ERROR (resource.labels.revision_name="a" OR resource.labels.revision_name=b)'),
        revision,
    ) == {"a", "b"}
    assert required_values(parse('resource.labels.revision_name=("a" OR "b")'), revision) == {"a", "b"}
    assert required_values(parse('resource.labels.revision_name="a" OR severity>=ERROR'), revision) is None
    assert required_values(parse('NOT resource.labels.revision_name="a"'), revision) is None


def test_time_bounds() -> None:
    low, high = time_bounds(
        parse('timestamp>="2026-11-27T18:00:00Z" AND timestamp<"2026-11-27T19:00:00+0000"')
    )
    assert low == datetime(2026, 11, 27, 18, tzinfo=UTC)
    assert high == datetime(2026, 11, 27, 19, tzinfo=UTC)
    assert time_bounds(parse('timestamp>="2026-11-27T18:00:00Z" OR severity=ERROR')) == (None, None)
    assert parse_timestamp("not a time") is None
