"""The Cloud Logging reader: one read budget per project, 429/503 retried with backoff, newest-first
reads with truncation — through the real google-cloud-logging client against the sandbox's Logging API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.logstore import container_entry
from stagecheck.clients.cloudlogging import LogRead, LogReader, ReadBudget, retry_delay
from stagecheck.errors import StageError
from stagecheck.settings import Endpoints, LogRules, ServiceConfig, Settings
from tests.sandbox.logging_server import LoggingSandbox, serve_logging

PROJECT = "reader-proj"
REV = "shop-00001-aaa"


@pytest.fixture
def logging_api() -> Iterator[LoggingSandbox]:
    with serve_logging(PROJECT) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_prefect_api() -> Iterator[None]:
    """These tests exercise the in-process read budget, the one a run without a Prefect API uses; a session-wide
    test server of another test in this process (prefect_test_harness) must not switch them to the server's."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield



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


def test_an_empty_page_with_a_next_page_token_is_not_the_end(logging_api: LoggingSandbox) -> None:
    """ListLogEntriesResponse: "If entries is empty, nextPageToken may still be returned, indicating that
    more entries may exist." The sandbox answers so every other call here; the reader pages on."""
    start = add_lines(logging_api, 10)
    logging_api.pages.every = 2  # calls 1, 3, 5 ...: an empty page and a token
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file))
    fast(reader)
    read = asyncio.run(reader.read_revision(service="shop", revision=REV, start=start, max_entries=100))
    assert [e["textPayload"] for e in read.entries] == [f"line {n}" for n in range(10)]
    assert read.requests == 2 and not read.truncated and logging_api.pages.answered == 1
    newest = asyncio.run(reader.read_revision(service="shop", revision=REV, start=start, max_entries=3,
                                              newest_first=True))
    assert [e["textPayload"] for e in newest.entries] == ["line 9", "line 8", "line 7"]
    assert newest.truncated and logging_api.pages.answered == 2


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


# ------------------------------------------------------------------ coalesced reads


def add_service_lines(api: LoggingSandbox, service: str, revision: str, count: int, start: datetime,
                      step_s: float = 1.0) -> list[str]:
    lines = [f"{service} line {n}" for n in range(count)]
    for n, line in enumerate(lines):
        api.store.append(container_entry(project=PROJECT, location="europe-west1", service=service,
                                         revision=revision, stream="stdout", line=line,
                                         timestamp=start + timedelta(seconds=n * step_s)))
    return lines


def list_calls(api: LoggingSandbox) -> int:
    return sum(1 for r in api.requests if r == "POST /v2/entries:list")


def drained(reader: LogReader, slots_ahead: int) -> None:
    """Empty the read budget and reserve `slots_ahead` more slots: the next read waits for a slot."""
    for _ in range(reader.budget.burst + slots_ahead):
        reader.budget.reserve()


def test_a_coalesced_filter_matches_exactly_the_union_of_the_revision_filters() -> None:
    from sandbox.logfilter import compile_filter
    from stagecheck.clients.cloudlogging import RevisionWindow, coalesced_filter, revision_filter

    t0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    windows = [RevisionWindow("europe-west1", "a", "a-00001-x", t0, t0 + timedelta(seconds=10)),
               RevisionWindow("europe-west1", "b", "b-00002-y", t0 + timedelta(seconds=5))]
    entries = [container_entry(project=PROJECT, location=loc, service=svc, revision=rev, stream="stdout",
                               line="x", timestamp=t0 + timedelta(seconds=s))
               for loc in ("europe-west1", "us-central1")
               for svc, rev in (("a", "a-00001-x"), ("b", "b-00002-y"), ("a", "a-00009-z"))
               for s in (-1, 0, 4, 5, 10, 11)]
    union = [compile_filter(revision_filter(project=PROJECT, region="europe-west1", service=w.service,
                                            revision=w.revision, start=w.start, end=w.end)) for w in windows]
    coalesced = compile_filter(coalesced_filter(windows))
    expected = [e for e in entries if any(f(e) for f in union)]
    assert len(expected) == 7  # a: 0, 4, 5, 10; b: 5, 10, 11 (europe-west1 only)
    assert [e for e in entries if coalesced(e)] == expected
    for e in entries:  # the split by window agrees with the filter, window by window
        for window, own in zip(windows, union, strict=True):
            assert window.matches(e) == own(e)


def test_a_window_matches_nanosecond_timestamps_like_the_api() -> None:
    from stagecheck.clients.cloudlogging import RevisionWindow

    end = datetime(2026, 12, 2, 4, 0, 0, 500000, tzinfo=UTC)
    window = RevisionWindow("r1", "a", "a-1", end - timedelta(seconds=1), end)

    def entry(stamp: str) -> dict[str, object]:
        return {"resource": {"labels": {"service_name": "a", "revision_name": "a-1", "location": "r1"}},
                "timestamp": stamp}

    assert window.matches(entry("2026-12-02T04:00:00.500000000Z"))
    assert not window.matches(entry("2026-12-02T04:00:00.500000001Z"))  # past the end by 1 ns
    assert window.matches(entry("2026-12-02T05:00:00.1+01:00"))
    assert not window.matches(entry("not a time"))


def test_a_shared_page_decides_a_read_only_when_nothing_of_it_can_follow() -> None:
    from stagecheck.clients.cloudlogging import RevisionWindow, share_page

    t0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    a, b = RevisionWindow("r1", "a", "a-1", t0), RevisionWindow("r1", "b", "b-1", t0)

    def entry(service: str, n: int) -> dict[str, object]:
        return {"resource": {"labels": {"service_name": service, "revision_name": f"{service}-1", "location": "r1"}},
                "timestamp": f"2026-12-02T04:00:{n:02d}Z", "textPayload": f"{service}{n}"}

    page = [entry("b", 1), entry("a", 2), entry("b", 3), entry("b", 4)]
    last, cut = share_page(page, [(a, 5), (b, 2)], complete=True)
    assert last is not None and [e["textPayload"] for e in last.entries] == ["a2"] and not last.truncated
    assert cut is not None and [e["textPayload"] for e in cut.entries] == ["b1", "b3"] and cut.truncated
    more_a, more_b = share_page(page, [(a, 5), (b, 2)], complete=False)
    assert more_a is None  # more of a's entries may be on the next page: a reads alone
    assert more_b is not None and more_b.truncated and len(more_b.entries) == 2
    assert share_page(page, [(b, 3)], complete=False) == [None]  # exactly max: more may follow or not


def test_reads_of_several_services_waiting_for_a_slot_share_one_request(logging_api: LoggingSandbox) -> None:
    """Three services read from three threads (each its own event loop) while the budget is empty:
    the sandbox sees one entries.list, and each read gets its own entries only, as alone."""
    import threading

    start = datetime.now(UTC) - timedelta(seconds=30)
    expected = {svc: add_service_lines(logging_api, svc, f"{svc}-00001-abc", n, start)
                for svc, n in (("shop", 4), ("cart", 2), ("pay", 0))}
    add_service_lines(logging_api, "shop", "shop-00000-old", 3, start)  # another revision: not asked for
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file, reads_per_minute=60))
    drained(reader, 2)  # the next slot starts in about 3 s
    before = list_calls(logging_api)
    reads: dict[str, LogRead] = {}

    def read(svc: str) -> None:
        reads[svc] = asyncio.run(reader.read_revision(service=svc, revision=f"{svc}-00001-abc", start=start))

    threads = [threading.Thread(target=read, args=(svc,)) for svc in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert list_calls(logging_api) - before == 1
    for svc, lines in expected.items():
        assert [e["textPayload"] for e in reads[svc].entries] == lines
        assert (reads[svc].requests, reads[svc].shared, reads[svc].truncated) == (1, 1, False)
    assert reader.coalescer.served >= 3


def test_a_read_the_shared_page_does_not_decide_reads_alone_with_its_own_pages(
        logging_api: LoggingSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import stagecheck.clients.cloudlogging as cloudlogging

    monkeypatch.setattr(cloudlogging, "PAGE_SIZE_MAX", 5)  # pages of 5: the shared page cannot hold it all
    start = datetime.now(UTC) - timedelta(seconds=60)
    few = add_service_lines(logging_api, "cart", "cart-00001-abc", 3, start, step_s=0.1)  # first in time
    many = add_service_lines(logging_api, "shop", REV, 12, start + timedelta(seconds=1))
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file, reads_per_minute=60))
    drained(reader, 0)  # the next slot in about 1 s

    async def both() -> tuple[LogRead, LogRead]:
        return await asyncio.gather(
            reader.read_revision(service="shop", revision=REV, start=start, max_entries=20),
            reader.read_revision(service="cart", revision="cart-00001-abc", start=start, max_entries=2))

    before = list_calls(logging_api)
    shop, cart = asyncio.run(both())
    assert [e["textPayload"] for e in cart.entries] == few[:2] and cart.truncated  # decided by the shared page
    assert (cart.requests, cart.shared) == (1, 1)
    assert [e["textPayload"] for e in shop.entries] == many and not shop.truncated  # read alone, 3 pages
    assert shop.shared == 1 and shop.requests == 1 + 3
    assert list_calls(logging_api) - before == 1 + 3


def test_a_read_cancelled_while_waiting_leaves_the_others_served_and_the_last_gives_its_slot_back(
        logging_api: LoggingSandbox) -> None:
    start = datetime.now(UTC) - timedelta(seconds=30)
    lines = add_service_lines(logging_api, "cart", "cart-00001-abc", 2, start)
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file, reads_per_minute=60))

    async def one_cancelled() -> LogRead:
        drained(reader, 1)  # about 2 s ahead
        kept = asyncio.create_task(reader.read_revision(service="cart", revision="cart-00001-abc", start=start))
        dropped = asyncio.create_task(reader.read_revision(service="shop", revision=REV, start=start))
        await asyncio.sleep(0.05)
        dropped.cancel()
        return await kept

    before = list_calls(logging_api)
    kept = asyncio.run(one_cancelled())
    assert [e["textPayload"] for e in kept.entries] == lines and list_calls(logging_api) - before == 1

    async def all_cancelled() -> None:
        drained(reader, 1)
        tasks = [asyncio.create_task(reader.read_revision(service=s, revision=f"{s}-1", start=start))
                 for s in ("a", "b")]
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    returned = reader.budget.returned
    before = list_calls(logging_api)
    asyncio.run(all_cancelled())
    assert reader.budget.returned == returned + 1  # the batch's slot went back to the bucket
    assert not reader.coalescer._open
    assert list_calls(logging_api) == before


def test_a_failing_coalesced_request_fails_each_read_in_its_own_words_and_429_is_retried(
        logging_api: LoggingSandbox) -> None:
    start = datetime.now(UTC) - timedelta(seconds=30)
    add_service_lines(logging_api, "cart", "cart-00001-abc", 2, start)
    reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file, reads_per_minute=60))
    slept: list[float] = []
    reader.coalescer._sleep = slept.append

    async def two() -> list[LogRead | BaseException]:
        drained(reader, 0)
        return list(await asyncio.gather(
            reader.read_revision(service="cart", revision="cart-00001-abc", start=start),
            reader.read_revision(service="shop", revision=REV, start=start), return_exceptions=True))

    logging_api.faults.add("LoggingServiceV2.ListLogEntries", count=1, status=429)
    cart, shop = asyncio.run(two())
    assert isinstance(cart, LogRead) and isinstance(shop, LogRead)
    assert len(cart.entries) == 2 and not shop.entries
    assert (cart.requests, cart.retried) == (2, 1) and (shop.requests, shop.retried) == (2, 1)
    assert slept and slept[0] >= 0.75

    logging_api.faults.add("LoggingServiceV2.ListLogEntries", count=1, status=403)
    failures = asyncio.run(two())
    assert [type(f) for f in failures] == [StageError, StageError]
    assert "read logs of cart-00001-abc" in str(failures[0]) and f"read logs of {REV}" in str(failures[1])


def test_a_shared_answer_that_cannot_be_split_fails_every_read_closed() -> None:
    """A malformed answer (an entry that is not an object) fails each waiting read with a reason; none hangs."""

    from stagecheck.clients.cloudlogging import Coalescer, RevisionWindow, _Batch, _Waiting

    budget = ReadBudget(60)
    coalescer = Coalescer(budget)
    t0 = datetime.now(UTC)
    waiting = [_Waiting(RevisionWindow("europe-west1", s, f"{s}-1", t0), 10, f"read logs of {s}-1") for s in "ab"]

    class Reader:
        project, region, retries = PROJECT, "europe-west1", 0

        class client:  # the shape of google.cloud.logging.Client used here: the sandbox never answers malformed
            class _connection:
                @staticmethod
                def api_request(**_: object) -> dict[str, object]:
                    return {"entries": ["not an entry"]}

    batch = _Batch(Reader(), "europe-west1", False, time.monotonic(), 1, list(waiting))  # type: ignore[arg-type]
    coalescer._open.append(batch)
    coalescer._run(batch)
    for w in waiting:
        with pytest.raises(StageError, match=f"{w.what} \\(malformed answer\\)"):
            w.outcome.result(timeout=5)


def test_a_level_field_is_default_on_cloud_run_and_gated_only_when_opted_in(logging_api: LoggingSandbox) -> None:
    """`{"level": "error"}` is no severity in Cloud Logging (only `severity` is): the entry is DEFAULT and
    the gate does not see it, unless `logs.severity_fields = ["level"]` says where the app writes it."""
    from stagecheck.model import Status
    from stagecheck.settings import ProbePolicy
    from tasks.logs import analyse_logs

    start = datetime.now(UTC) - timedelta(seconds=30)
    for n in range(3):
        logging_api.store.append(container_entry(
            project=PROJECT, location="europe-west1", service="shop", revision=REV, stream="stdout",
            line=f'{{"level": "error", "msg": "ledger write failed (order {n})"}}',
            timestamp=start + timedelta(seconds=n)))
    raw = logging_api.store.list_entries(resource_names=[f"projects/{PROJECT}"], filter_="")[0]
    assert {e["severity"] for e in raw} == {"DEFAULT"}

    def judged(rules: LogRules) -> Any:
        reader = LogReader(settings(logging_api.endpoint, logging_api.credentials_file))
        return asyncio.run(analyse_logs.fn(reader, service="shop", revision=REV, previous_revision=None,
                                           start=start, last_probe_at=None, rules=rules, probes=ProbePolicy()))

    unseen = judged(LogRules())
    assert unseen.data["by_severity"] == {"DEFAULT": 3} and not unseen.data["new"]
    opted = judged(LogRules(severity_fields=("level",)))
    assert opted.status is Status.FAIL and opted.data["by_severity"] == {"ERROR": 3}
    assert [g["severity"] for g in opted.data["new"]] == ["ERROR"]
