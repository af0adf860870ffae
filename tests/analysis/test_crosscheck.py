"""The request-log cross-check: our requests found by User-Agent, their error share beside the generator's."""

from __future__ import annotations

from stagecheck.analysis.crosscheck import cross_check, logged_requests
from stagecheck.analysis.load import USER_AGENT
from stagecheck.model import Status


def entry(status: int, agent: str = USER_AGENT) -> dict:
    return {"httpRequest": {"status": status, "userAgent": agent, "requestUrl": "/"}}


ENTRIES = [entry(200)] * 95 + [entry(500)] * 5 + [entry(429)] * 2 + [entry(500, "stagecheck-probe/0.1")] * 7 + \
    [{"textPayload": "starting"}]


def test_only_our_requests_are_counted_and_429_is_not_judged() -> None:
    logged = logged_requests(ENTRIES, USER_AGENT)
    assert logged == {"requests": 100, "errors": 5, "statuses": {"200": 95, "429": 2, "500": 5}}


def test_agreeing_shares_pass_and_disagreeing_ones_warn() -> None:
    logged = {"candidate": logged_requests(ENTRIES, USER_AGENT), "baseline": {"requests": 100, "errors": 0}}
    ok = cross_check({"baseline": (100, 0), "candidate": (100, 6)}, logged)
    assert ok.status is Status.PASS
    assert "candidate: generator 6/100 failed, request logs 5/100" in ok.observed
    off = cross_check({"baseline": (100, 0), "candidate": (100, 30)}, logged)
    assert off.status is Status.WARN


def test_no_log_entries_for_an_arm_that_was_loaded_warns() -> None:
    assert cross_check({"baseline": (100, 0)}, {}).status is Status.WARN
