"""The Cloud Logging reader: one read budget per project, 429/503 retried with backoff, newest-first
reads with truncation — through the real google-cloud-logging client against the sandbox's Logging API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.logstore import container_entry
from stagecheck.clients.cloudlogging import LogReader, ReadBudget, retry_delay
from stagecheck.errors import StageError
from stagecheck.settings import Endpoints, LogRules, ServiceConfig, Settings
from tests.sandbox.logging_server import LoggingSandbox, serve_logging

PROJECT = "reader-proj"
REV = "shop-00001-aaa"


@pytest.fixture
def logging_api() -> Iterator[LoggingSandbox]:
    with serve_logging(PROJECT) as running:
        yield running


def settings(endpoint: str, credentials_file: str | None = None, **logs: float) -> Settings:
    return Settings(project=PROJECT, region="europe-west1", registry="127.0.0.1:5000/x",
                    services=(ServiceConfig(name="shop"),), logs=LogRules(**logs),  # type: ignore[arg-type]
                    endpoints=Endpoints(logging_api=endpoint, credentials_file=credentials_file))


def fast(reader: LogReader) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    reader._sleep = sleep
    return slept


def add_lines(api: LoggingSandbox, count: int) -> datetime:
    start = datetime.now(UTC) - timedelta(seconds=count + 5)
    for n in range(count):
        api.store.append(container_entry(project=PROJECT, location="europe-west1", service="shop", revision=REV,
                                         stream="stdout", line=f"line {n}", timestamp=start + timedelta(seconds=n)))
    return start


def test_the_budget_allows_a_burst_then_paces_reads() -> None:
    now = [0.0]
    budget = ReadBudget(30, burst=3, clock=lambda: now[0])
    waits = [budget.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 2.0, 4.0])
    now[0] = 60.0  # a minute later the bucket is full again, never fuller than the burst
    assert [budget.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 2.0])


def test_at_most_burst_plus_rate_reads_start_in_any_minute() -> None:
    now = [0.0]
    budget = ReadBudget(30, burst=3, clock=lambda: now[0])
    starts = [budget.reserve() for _ in range(200)]  # everyone asks at t=0: each starts at its wait
    assert sum(1 for s in starts if s < 60.0) <= 33


def test_a_caller_with_a_deadline_takes_no_slot_past_it() -> None:
    now = [0.0]
    budget = ReadBudget(30, burst=1, clock=lambda: now[0])
    assert budget.reserve() == 0.0  # the burst is spent: the next slot starts 2 s from now

    async def ask(deadline: float) -> float | None:
        return await budget.acquire(deadline)

    assert asyncio.run(ask(1.5)) is None  # declined, nothing taken
    assert (budget.granted, budget.declined) == (1, 1)
    assert budget.reserve() == pytest.approx(2.0)  # the slot a declined caller did not take is still the next


def test_a_cancelled_waiter_gives_back_only_the_latest_slot() -> None:
    now = [0.0]
    budget = ReadBudget(30, burst=1, clock=lambda: now[0])

    async def scenario() -> tuple[list[float], list[float]]:
        asleep = asyncio.Event()

        async def sleep(seconds: float) -> None:
            asleep.set()
            await asyncio.sleep(3600)

        budget._sleep = sleep
        assert budget.reserve() == 0.0
        waiter = asyncio.create_task(budget.acquire())  # the slot at 2 s, the latest reservation
        await asleep.wait()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        after_latest = [budget.reserve()]  # as if the cancelled waiter never asked: 2 s again
        asleep.clear()
        middle = asyncio.create_task(budget.acquire())  # 4 s
        await asleep.wait()
        after_latest.append(budget.reserve())  # 6 s: someone reserved after the waiter
        middle.cancel()
        await asyncio.gather(middle, return_exceptions=True)
        return after_latest, [budget.reserve()]  # not the latest: its slot stays spent, the next is 8 s

    after_latest, after_middle = asyncio.run(scenario())
    assert after_latest == pytest.approx([2.0, 6.0])
    assert after_middle == pytest.approx([8.0])
    assert budget.returned == 1


def test_cancelled_waiters_never_let_more_reads_start() -> None:
    now = [0.0]
    budget = ReadBudget(30, burst=3, clock=lambda: now[0])
    starts: list[float] = []
    for n in range(300):  # callers arrive every 0.5 s; every third one is cancelled right after asking
        now[0] = n * 0.5
        taken = budget._take(None)
        assert taken is not None
        wait, ticket = taken
        if n % 3 == 2 and budget._give_back(ticket):
            continue
        starts.append(now[0] + wait)
    starts.sort()
    for first in starts:  # any 60 s window: at most burst + 30
        assert sum(1 for t in starts if first <= t < first + 60.0) <= 33


def test_readers_of_one_project_share_one_budget() -> None:
    one, two = LogReader(settings("http://127.0.0.1:9")), LogReader(settings("http://127.0.0.1:9"))
    assert one.budget is two.budget
    other = LogReader(settings("http://127.0.0.1:9", reads_per_minute=20))
    assert other.budget is not one.budget


def test_retry_delays_grow_and_are_capped() -> None:
    assert [retry_delay(n, 0.999) for n in range(7)] == pytest.approx([1, 2, 4, 8, 16, 16, 16], rel=1e-3)
    assert retry_delay(0, 0.0) == 0.75


def test_429_and_503_are_retried_with_backoff(logging_api: LoggingSandbox) -> None:
    start = add_lines(logging_api, 3)
    logging_api.faults.add("LoggingServiceV2.ListLogEntries", count=1, status=429)
    logging_api.faults.add("LoggingServiceV2.ListLogEntries", count=1, status=503)
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file))
    slept = fast(reader)
    read = asyncio.run(reader.read_revision(service="shop", revision=REV, start=start))
    assert [e["textPayload"] for e in read.entries] == ["line 0", "line 1", "line 2"]
    assert (read.requests, read.retried) == (3, 2)
    assert len(slept) == 2 and slept[1] > slept[0]


def test_a_read_still_rate_limited_after_the_retries_fails_with_a_reason(logging_api: LoggingSandbox) -> None:
    start = add_lines(logging_api, 1)
    logging_api.faults.add("LoggingServiceV2.ListLogEntries", count=-1, status=429)
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file, read_retries=2))
    fast(reader)
    with pytest.raises(StageError, match="still 429 after 2 retries"):
        asyncio.run(reader.read_revision(service="shop", revision=REV, start=start))


def test_newest_first_reads_keep_the_newest_and_say_they_were_truncated(logging_api: LoggingSandbox) -> None:
    start = add_lines(logging_api, 10)
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file))
    newest = asyncio.run(reader.read_revision(service="shop", revision=REV, start=start, max_entries=4,
                                              newest_first=True))
    assert [e["textPayload"] for e in newest.entries] == ["line 9", "line 8", "line 7", "line 6"]
    assert newest.truncated and newest.requests == 1
    whole = asyncio.run(reader.read_revision(service="shop", revision=REV, start=start, max_entries=10))
    assert len(whole.entries) == 10 and not whole.truncated


def test_the_settle_check_sees_the_last_probe_on_a_busy_revision_and_reports_the_cap(
        logging_api: LoggingSandbox) -> None:
    from sandbox.logstore import request_entry
    from tasks.logs import read_settled

    start = add_lines(logging_api, 20)  # more than max_entries before the last probe
    probe_at = datetime.now(UTC)
    logging_api.store.append(request_entry(project=PROJECT, location="europe-west1", service="shop", revision=REV,
                                           method="GET", url="http://shop/health", status=200, latency_s=0.01,
                                           timestamp=probe_at))
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file))
    records, settled, truncated = asyncio.run(read_settled(
        reader, service="shop", revision=REV, start=start, last_probe_at=probe_at,
        rules=LogRules(max_entries=5, settle_s=2)))
    assert settled and truncated
    assert len(records) == 5 and any(r.stream == "requests" for r in records)
