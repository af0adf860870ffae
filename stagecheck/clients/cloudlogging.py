"""Cloud Logging API v2 reads, through the unmodified google-cloud-logging client (HTTP/JSON).

`entries.list` is limited to 60 requests per minute per project, a limit that cannot be raised
(Cloud Logging quotas). Every page this module reads costs one request: all of them take a slot of the
project's read budget (`logs.reads_per_minute`, default 30/min, bursts of 3): with a Prefect API, the
server's rate limit that every process and worker shares (`ServerReadBudget`, read_quota.py); without
one, the in-process token bucket `ReadBudget`. A read answered 429 or 503 is retried with capped
exponential backoff.
Reads of one project that wait for a slot at the same time share it: one `entries.list` whose filter
ORs their filters serves all of them (`Coalescer`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions

from stagecheck.clients.api_errors import API_ERRORS, describe_api_error
from stagecheck.clients.identity import api_credentials
from stagecheck.clients.read_quota import ServerReadBudget, configured_api_url
from stagecheck.errors import Api
from stagecheck.log_query import RESOURCE_TYPE, revision_filter, timestamp_term, window_terms
from stagecheck.settings import Settings


@dataclass(frozen=True)
class RevisionWindow:
    """What one read asks for: a revision's entries in [start, end] (end None: up to now)."""

    region: str
    service: str
    revision: str
    start: datetime
    end: datetime | None = None

    def matches(self, entry: dict[str, Any]) -> bool:
        """Pure: does this Logging API entry belong to the window (labels and timestamp, to the ns)?"""
        labels = (entry.get("resource") or {}).get("labels") or {}
        if (labels.get("service_name"), labels.get("revision_name"), labels.get("location")) != (
                self.service, self.revision, self.region):
            return False
        at = _ns(str(entry.get("timestamp", "")))
        if at is None:
            return False
        return at >= _ns_of(self.start) and (self.end is None or at <= _ns_of(self.end))


def _ns_of(when: datetime) -> int:
    """The instant as integer nanoseconds since the epoch, truncated to the microsecond like the filter's."""
    return _ns(timestamp_term(when)) or 0


def _ns(stamp: str) -> int | None:
    """Pure: an RFC 3339 timestamp (up to nanoseconds, `Z` or an offset) as integer ns since the epoch."""
    match = _STAMP.fullmatch(stamp.strip())
    if match is None:
        return None
    base, fraction, zone = match.group(1), match.group(2) or "", match.group(3)
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        whole = datetime.fromisoformat(base + zone)
    except ValueError:
        return None
    return int(whole.timestamp()) * 1_000_000_000 + int((fraction + "000000000")[:9])


_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:?\d\d)")


def coalesced_filter(windows: Sequence[RevisionWindow]) -> str:
    """Pure: one Logs Explorer query matching every window's entries (an OR of the revision filters)."""
    either = " OR ".join("(" + " AND ".join(window_terms(region=w.region, service=w.service, revision=w.revision,
                                                         start=w.start, end=w.end)) + ")" for w in windows)
    return f"{RESOURCE_TYPE} AND ({either})"


RETRIED = (gexc.TooManyRequests, gexc.ServiceUnavailable)
PAGE_SIZE_MAX = 1000  # entries.list rejects larger pages


class ReadBudget:
    """A token bucket for entries.list calls: `per_minute` on average, bursts of at most `burst`.

    In any 60 s window at most `burst + per_minute` requests start, so 30/min with a burst of 3 stays
    far below Cloud Logging's 60/min per project even when every service of a run reads at once.
    Each caller reserves the next free slot under a (thread) lock and sleeps outside it, so waiters are
    served in arrival order and the budget works across event loops and threads. A caller that only
    wants a slot before a deadline (a bake's read near its end) takes none past it; a caller cancelled
    while waiting gives its slot back when nobody reserved after it (exactly as if it never asked;
    later reservations keep theirs, so the budget is never exceeded)."""

    _shared: dict[tuple[str, str, float], ReadBudget] = {}
    _shared_lock = threading.Lock()

    def __init__(self, per_minute: float, burst: int = 3, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a read budget needs per_minute > 0 and burst >= 1")
        self.per_minute, self.burst = per_minute, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)  # may go negative: slots reserved by waiting callers
        self._updated = clock()
        self._lock = threading.Lock()
        self.granted = 0
        self.waited_s = 0.0
        self.declined = 0  # no slot before the caller's deadline: nothing taken
        self.returned = 0  # cancelled waiters whose slot went back to the bucket
        self._ticket = 0  # the latest reservation, while it can still be given back (0: none)
        self._last: tuple[float, float] = (0.0, 0.0)  # its (wait, clock at reservation)

    @classmethod
    def for_project(cls, endpoint: str, project: str, per_minute: float) -> ReadBudget:
        """The one budget of a project (per Logging endpoint) in this process, shared by every reader."""
        key = (endpoint, project, per_minute)
        with cls._shared_lock:
            budget = cls._shared.get(key)
            if budget is None:
                budget = cls._shared[key] = cls(per_minute)
            return budget

    def next_wait(self) -> float:
        """The seconds a caller asking now would wait for its slot (nothing taken)."""
        with self._lock:
            now = self._clock()
            tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.per_minute / 60.0)
            return max(0.0, (1.0 - tokens) * 60.0 / self.per_minute)

    def reserve(self) -> float:
        """Take the next slot; the seconds to wait before using it."""
        taken = self._take(None)
        assert taken is not None  # no deadline: always a slot
        return taken[0]

    def _take(self, deadline: float | None) -> tuple[float, int] | None:
        """(wait, ticket) of the next slot, or None (nothing taken) when it starts after `deadline`."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.per_minute / 60.0)
            self._updated = now
            wait = max(0.0, (1.0 - self._tokens) * 60.0 / self.per_minute)
            if deadline is not None and now + wait > deadline:
                self.declined += 1
                return None
            self._tokens -= 1.0
            self.granted += 1
            self.waited_s += wait
            self._ticket = self.granted
            self._last = (wait, now)
            return wait, self._ticket

    def _give_back(self, ticket: int) -> bool:
        """Undo reservation `ticket` if it is still the latest and its slot has not started."""
        with self._lock:
            wait, at = self._last
            if ticket != self._ticket or self._clock() >= at + wait:
                return False
            self._tokens += 1.0  # the bucket as if the reservation never happened (the refill is path-free)
            self._ticket = 0
            self.granted -= 1
            self.waited_s -= wait
            self.returned += 1
            return True

    async def acquire(self, deadline: float | None = None) -> float | None:
        """Wait for a slot; the seconds waited. With `deadline` (on the budget's clock): None, and
        nothing taken, when no slot starts before it."""
        taken = self._take(deadline)
        if taken is None:
            return None
        wait, ticket = taken
        if wait > 0:
            try:
                await self._sleep(wait)
            except asyncio.CancelledError:
                self._give_back(ticket)
                raise
        return wait


def retry_delay(attempt: int, rand: float) -> float:
    """Pause before retry `attempt` (0-based) of a read answered 429/503: 1, 2, 4, 8, 16, 16 ... s, the
    upper quarter of it randomised (so that services throttled together do not retry together)."""
    base = min(16.0, 2.0 ** min(attempt, 8))
    return base * (0.75 + 0.25 * rand)


@dataclass
class LogRead:
    """Entries of one read (Logging API JSON dicts, in the order asked for) and what it cost."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False  # max_entries reached while more entries matched
    requests: int = 0  # entries.list calls, retries included
    retried: int = 0  # of which answered 429/503 and retried
    declined: bool = False  # stopped early: the budget had no slot before the caller's deadline
    shared: int = 0  # of the requests, made for this read and other waiting reads at once (coalesced)


def share_page(entries: Sequence[dict[str, Any]], wants: Sequence[tuple[RevisionWindow, int]],
               complete: bool) -> list[LogRead | None]:
    """Pure: split one coalesced page among the reads it was asked for, `wants` = (window, max_entries).

    A read gets exactly what it would have got alone (the page keeps the order asked for, and a
    subsequence of it is that read's own order) when the page decides it: the page was the last one
    (`complete`: every matching entry is in it), or it holds more than max_entries of the read's entries
    (the first max_entries, truncated). Otherwise None: more of its entries may follow, it reads alone."""
    shares: list[LogRead | None] = []
    for window, max_entries in wants:
        mine = [e for e in entries if window.matches(e)]
        if complete or len(mine) > max_entries:
            shares.append(LogRead(entries=mine[:max_entries], truncated=len(mine) > max_entries))
        else:
            shares.append(None)
    return shares


ALONE = "alone"  # the shared slot came with nobody else waiting: the read makes it, alone
AGAIN = "again"  # the shared page did not decide the read: it reads alone (a slot of its own)
ASK = "ask"  # the batch got no slot before its opener's deadline, this read's is later: it asks alone
MAX_SHARED = 20  # reads served by one coalesced request (the filter stays far below 20,000 chars)


@dataclass(eq=False)
class _Waiting:
    window: RevisionWindow
    max_entries: int
    what: str
    deadline: float | None = None
    outcome: concurrent.futures.Future[LogRead | str] = field(default_factory=concurrent.futures.Future)


@dataclass(eq=False)
class _Batch:
    """Reads of one project waiting for the same budget slot; read together when the slot starts."""

    reader: LogReader
    region: str
    newest_first: bool
    starts_at: float  # time.monotonic() (with a server budget: unknown until granted, inf)
    ticket: int
    waiting: list[_Waiting] = field(default_factory=list)
    deadline: float | None = None  # with a server budget: the opener's deadline (no slot past it)
    started: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)


def _settle(outcome: concurrent.futures.Future[LogRead | str], value: LogRead | str | BaseException) -> None:
    try:
        if isinstance(value, BaseException):
            outcome.set_exception(value)
        else:
            outcome.set_result(value)
    except concurrent.futures.InvalidStateError:  # the read was cancelled meanwhile
        pass


class Coalescer:
    """One `entries.list` for the reads of a project that wait for a slot at the same time.

    A revision read that would wait for the project's read budget joins the batch of reads already
    waiting for a slot that has not started (same order, same region, a slot before its deadline), or
    reserves the next slot and opens a batch. When the slot starts, one request whose filter ORs the
    waiting reads' filters is made (in a thread: readers may live on several event loops) and its page
    is split by revision and window (`share_page`); a read the page does not decide reads alone. A read
    cancelled while waiting leaves its batch; the last one to leave gives the slot back."""

    _shared: dict[tuple[str, str, float, str | None, str | None], Coalescer] = {}
    _shared_lock = threading.Lock()

    def __init__(self, budget: ReadBudget, *, sleep: Callable[[float], None] = time.sleep,
                 server: ServerReadBudget | None = None) -> None:
        self.budget = budget
        self.server = server  # the Prefect server's rate limit: a batch waits for its slot, then starts
        self._sleep = sleep
        self._lock = threading.Lock()
        self._open: list[_Batch] = []
        self.requests = 0  # coalesced requests made (retries included)
        self.served = 0  # reads decided by them

    @classmethod
    def for_project(cls, key: tuple[str, str, float, str | None], budget: ReadBudget,
                    server: ServerReadBudget | None = None) -> Coalescer:
        full = (*key, server.api_url if server else None)
        with cls._shared_lock:
            coalescer = cls._shared.get(full)
            if coalescer is None or coalescer.budget is not budget or coalescer.server is not server:
                coalescer = cls._shared[full] = cls(budget, server=server)
            return coalescer

    def _join_server(self, reader: LogReader, waiting: _Waiting, newest_first: bool,
                     deadline: float | None) -> _Batch:
        """With a server budget: join a batch still waiting for its slot (same order and region; one whose
        opener gives up earlier than this read would only when this read has a deadline no later), else
        open one and ask the server for its slot (when it comes nobody else waits: the read goes alone)."""
        with self._lock:
            for batch in self._open:
                if (not batch.started and batch.newest_first == newest_first and batch.region == reader.region
                        and len(batch.waiting) < MAX_SHARED and (batch.deadline is None or (
                            deadline is not None and deadline >= batch.deadline))):
                    batch.waiting.append(waiting)
                    return batch
            batch = _Batch(reader, reader.region, newest_first, float("inf"), 0, [waiting], deadline=deadline)
            self._open.append(batch)
        context = contextvars.copy_context()  # the Prefect settings (API URL) of the caller
        threading.Thread(target=context.run, args=(self._run, batch), name="logging-coalesced-read",
                         daemon=True).start()
        return batch

    def _join(self, reader: LogReader, waiting: _Waiting, newest_first: bool,
              deadline: float | None) -> _Batch | LogRead | None:
        """The batch `waiting` joined; None: a slot is free now (read alone); a declined LogRead."""
        with self._lock:
            now = time.monotonic()
            for batch in self._open:
                if (not batch.started and batch.newest_first == newest_first and batch.region == reader.region
                        and batch.starts_at > now and (deadline is None or batch.starts_at <= deadline)
                        and len(batch.waiting) < MAX_SHARED):
                    batch.waiting.append(waiting)
                    return batch
            if self.budget.next_wait() <= 0:
                return None
            taken = self.budget._take(deadline)
            if taken is None:
                return LogRead(declined=True)
            wait, ticket = taken
            batch = _Batch(reader, reader.region, newest_first, now + wait, ticket, [waiting])
            self._open.append(batch)
        threading.Thread(target=self._run, args=(batch,), name="logging-coalesced-read", daemon=True).start()
        return batch

    def _leave(self, batch: _Batch, waiting: _Waiting) -> None:
        with self._lock:
            if batch.started or waiting not in batch.waiting:
                return
            batch.waiting.remove(waiting)
            if not batch.waiting:
                self._open.remove(batch)
                batch.cancelled.set()
                if self.server is None:
                    self.budget._give_back(batch.ticket)

    def _run(self, batch: _Batch) -> None:
        granted: bool | None = True
        if self.server is not None:  # the server's slot (none taken when cancelled or past the deadline)
            try:
                granted = self.server.acquire_blocking(batch.deadline, batch.cancelled) is not None
            except Exception:  # every read asks alone (and meets the failure in its own words)
                granted = None
        elif batch.cancelled.wait(max(0.0, batch.starts_at - time.monotonic())):
            return
        with self._lock:
            if batch.cancelled.is_set():
                return
            batch.started = True
            self._open.remove(batch)
            waiting = list(batch.waiting)
        if not granted:  # no slot before the opener's deadline: reads with a later one ask alone
            for w in waiting:
                late = (granted is not None and w.deadline is not None and batch.deadline is not None
                        and w.deadline <= batch.deadline)
                _settle(w.outcome, LogRead(declined=True) if late else ASK)
            return
        if len(waiting) == 1:
            _settle(waiting[0].outcome, ALONE)
            return
        try:
            answer, requests, retried = self._request(batch, waiting)
        except BaseException as exc:  # every waiting read gets the failure, in its own words
            for w in waiting:
                _settle(w.outcome, _failure(exc, w.what))
            return
        try:
            entries = answer.get("entries") or []
            if not isinstance(entries, list):
                raise ValueError("entries is not a list")
            shares = share_page(entries, [(w.window, w.max_entries) for w in waiting],
                                complete=not answer.get("nextPageToken"))
        except Exception as exc:  # an answer that cannot be split: every read fails closed, none hangs
            for w in waiting:
                _settle(w.outcome, describe_api_error(ValueError(f"{type(exc).__name__}: {exc}"),
                                                      f"{w.what} (malformed answer)", Api.LOGGING))
            return
        for w, share in zip(waiting, shares, strict=True):
            if share is None:
                _settle(w.outcome, AGAIN)
                continue
            share.requests, share.retried, share.shared = requests, retried, requests
            self.served += 1
            _settle(w.outcome, share)

    def _request(self, batch: _Batch, waiting: list[_Waiting]) -> tuple[dict[str, Any], int, int]:
        """The coalesced entries.list call (its slot has started); 429/503 retried with backoff."""
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{batch.reader.project}"],
            "filter": coalesced_filter([w.window for w in waiting]),
            "orderBy": "timestamp desc" if batch.newest_first else "timestamp asc",
            "pageSize": min(PAGE_SIZE_MAX, sum(w.max_entries + 1 for w in waiting)),
        }
        requests = retried = 0
        while True:
            requests += 1
            self.requests += 1
            try:
                answer: dict[str, Any] = batch.reader.client._connection.api_request(
                    method="POST", path="/entries:list", data=body)
                return answer, requests, retried
            except RETRIED as exc:
                if retried >= batch.reader.retries:
                    raise _Exhausted(exc, retried) from None
                self._sleep(retry_delay(retried, random.random()))
                retried += 1
                if self.server is not None:
                    self.server.acquire_blocking()
                else:
                    self._sleep(self.budget.reserve())

    async def read(self, reader: LogReader, window: RevisionWindow, *, max_entries: int, newest_first: bool,
                   what: str, deadline: float | None) -> LogRead | str | None:
        """A LogRead decided by a coalesced request (or declined); ALONE / AGAIN / None: read alone
        (ALONE: with the slot already started for it; AGAIN and None: asking the budget)."""
        waiting = _Waiting(window, max_entries, what, deadline)
        joined = (self._join_server(reader, waiting, newest_first, deadline) if self.server is not None
                  else self._join(reader, waiting, newest_first, deadline))
        if not isinstance(joined, _Batch):
            return joined
        try:
            outcome = await asyncio.wait_for(
                asyncio.wrap_future(waiting.outcome),
                None if deadline is None or self.server is None else max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            self._leave(joined, waiting)
            raise
        except TimeoutError:  # no slot for it before its deadline (the batch waits on for the others)
            self._leave(joined, waiting)
            if waiting.outcome.done() and not waiting.outcome.cancelled():
                return waiting.outcome.result()
            return LogRead(declined=True)
        return None if outcome == ASK else outcome


class _Exhausted(Exception):
    def __init__(self, cause: Exception, retried: int) -> None:
        super().__init__(str(cause))
        self.cause, self.retried = cause, retried


def _failure(exc: BaseException, what: str) -> BaseException:
    """The StageError a read would have raised alone for this failure of the coalesced request."""
    if isinstance(exc, _Exhausted):
        code = getattr(exc.cause, "code", "")
        return describe_api_error(exc.cause, f"{what} (still {code} after {exc.retried} retries)", Api.LOGGING)
    if isinstance(exc, API_ERRORS):
        return describe_api_error(exc, what, Api.LOGGING)
    return exc


class LogReader:
    """Reads log entries of one project as Logging API JSON dicts, within the project's read budget."""

    def __init__(self, settings: Settings) -> None:
        self.project = settings.project
        self.region = settings.region
        self._kwargs: dict[str, Any] = {"project": settings.project, "_use_grpc": False}
        if settings.endpoints.logging_api:
            self._kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoints.logging_api)
        self._credentials_file = settings.endpoints.credentials_file
        self._credentials_block = settings.gcp_credentials_block
        self._client: Any = None
        # one budget per project, shared by every service of the run (and every run in this process); with
        # a Prefect API, the server's (shared by every process and worker); the in-process one is the fallback
        self.budget = ReadBudget.for_project(settings.endpoints.logging_api or "https://logging.googleapis.com",
                                             settings.project, settings.logs.reads_per_minute)
        api_url = configured_api_url()
        self.server_budget = None if api_url is None else ServerReadBudget.for_project(
            api_url, settings.project, settings.logs.reads_per_minute, self.budget)
        self.retries = settings.logs.read_retries
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        # reads of the project waiting for a slot at the same time share it (one coalesced request)
        self.coalesce = True
        self.coalescer = Coalescer.for_project(
            (settings.endpoints.logging_api or "https://logging.googleapis.com", settings.project,
             settings.logs.reads_per_minute, self._credentials_file), self.budget, self.server_budget)

    @property
    def client(self) -> Any:
        if self._client is None:
            import google.cloud.logging

            credentials = api_credentials(self._credentials_file, self._credentials_block)  # None: ADC
            if credentials is not None:
                self._kwargs["credentials"] = credentials
            self._client = google.cloud.logging.Client(**self._kwargs)
        return self._client

    async def _page(self, body: dict[str, Any], read: LogRead, what: str,
                    deadline: float | None = None, slot_started: bool = False) -> dict[str, Any] | None:
        """One entries.list call (one page) within the budget; 429/503 retried with backoff. None (no
        request made) when the budget has no slot before `deadline`. `slot_started`: the first
        attempt's slot was already taken from the budget (and has started)."""
        def call() -> dict[str, Any]:
            # the client's own connection (endpoint, credentials, user agent), one request per page
            answer: dict[str, Any] = self.client._connection.api_request(method="POST", path="/entries:list",
                                                                          data=body)
            return answer

        attempt = 0
        while True:
            if slot_started:
                slot_started = False
            elif await (self.server_budget or self.budget).acquire(deadline) is None:
                return None
            read.requests += 1
            try:
                return await asyncio.to_thread(call)
            except RETRIED as exc:
                if attempt >= self.retries:
                    raise describe_api_error(exc, f"{what} (still {exc.code} after {attempt} retries)", Api.LOGGING) from None
                read.retried += 1
                await self._sleep(retry_delay(attempt, random.random()))
                attempt += 1
            except API_ERRORS as exc:
                raise describe_api_error(exc, what, Api.LOGGING) from None

    async def read(self, filter_: str, *, max_entries: int, newest_first: bool, what: str,
                   deadline: float | None = None, slot_started: bool = False) -> LogRead:
        """Up to max_entries entries matching filter_, newest first or oldest first. With `deadline`
        (time.monotonic): pages the budget cannot start before it are not read (`declined`)."""
        read = LogRead()
        token: str | None = None
        first = slot_started
        while len(read.entries) < max_entries:
            body: dict[str, Any] = {"resourceNames": [f"projects/{self.project}"], "filter": filter_,
                                    "orderBy": "timestamp desc" if newest_first else "timestamp asc",
                                    "pageSize": min(PAGE_SIZE_MAX, max_entries - len(read.entries))}
            if token:
                body["pageToken"] = token
            answer = await self._page(body, read, what, deadline, slot_started=first)
            first = False
            if answer is None:
                read.declined = True
                return read
            entries = answer.get("entries") or []
            if not isinstance(entries, list):
                raise describe_api_error(ValueError("entries is not a list"), f"{what} (malformed answer)", Api.LOGGING)
            read.entries.extend(entries)
            token = answer.get("nextPageToken") or None
            if not token:
                return read
        read.entries = read.entries[:max_entries]
        read.truncated = True
        return read

    async def read_revision(self, *, service: str, revision: str, start: datetime, end: datetime | None = None,
                            max_entries: int = 5000, newest_first: bool = False,
                            deadline: float | None = None) -> LogRead:
        """The revision's entries in [start, end]: the newest max_entries of them when newest_first
        (only the pages the budget can start before `deadline`, when given)."""
        what = f"read logs of {revision}"
        shared = None if not self.coalesce else await self.coalescer.read(
            self, RevisionWindow(self.region, service, revision, start, end), max_entries=max_entries,
            newest_first=newest_first, what=what, deadline=deadline)
        if isinstance(shared, LogRead):  # decided by a request shared with other waiting reads (or declined)
            return shared
        filter_ = revision_filter(project=self.project, region=self.region, service=service,
                                  revision=revision, start=start, end=end)
        read = await self.read(filter_, max_entries=max_entries, newest_first=newest_first, what=what,
                               deadline=deadline, slot_started=shared == ALONE)
        if shared == AGAIN:  # the shared request did not decide this read: it counts too
            read.requests += 1
            read.shared += 1
        return read

    async def revision_entries(self, *, service: str, revision: str, start: datetime,
                               end: datetime | None = None, max_entries: int = 5000) -> list[dict[str, Any]]:
        """Entries of the revision in [start, end], oldest first, at most max_entries."""
        read = await self.read_revision(service=service, revision=revision, start=start, end=end,
                                        max_entries=max_entries)
        return read.entries
