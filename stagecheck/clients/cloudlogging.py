"""Cloud Logging API v2 reads, through the unmodified google-cloud-logging client (HTTP/JSON).

`entries.list` is limited to 60 requests per minute per project, a limit that cannot be raised
(Cloud Logging quotas). Every page this module reads costs one request: all of them go through one
`ReadBudget` per project (a token bucket, `logs.reads_per_minute`, default 30/min, shared by every
service of the run), and a read answered 429 or 503 is retried with capped exponential backoff."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions

from stagecheck.clients.api_errors import API_ERRORS, describe_api_error
from stagecheck.clients.identity import api_credentials
from stagecheck.errors import Api
from stagecheck.log_query import revision_filter
from stagecheck.settings import Settings

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


class LogReader:
    """Reads log entries of one project as Logging API JSON dicts, within the project's read budget."""

    def __init__(self, settings: Settings) -> None:
        self.project = settings.project
        self.region = settings.region
        self._kwargs: dict[str, Any] = {"project": settings.project, "_use_grpc": False}
        if settings.endpoints.logging_api:
            self._kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoints.logging_api)
        self._credentials_file = settings.endpoints.credentials_file
        self._client: Any = None
        # one budget per project, shared by every service of the run (and every run in this process)
        self.budget = ReadBudget.for_project(settings.endpoints.logging_api or "https://logging.googleapis.com",
                                             settings.project, settings.logs.reads_per_minute)
        self.retries = settings.logs.read_retries
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def client(self) -> Any:
        if self._client is None:
            import google.cloud.logging

            credentials = api_credentials(self._credentials_file)  # None: ADC
            if credentials is not None:
                self._kwargs["credentials"] = credentials
            self._client = google.cloud.logging.Client(**self._kwargs)
        return self._client

    async def _page(self, body: dict[str, Any], read: LogRead, what: str,
                    deadline: float | None = None) -> dict[str, Any] | None:
        """One entries.list call (one page) within the budget; 429/503 retried with backoff. None (no
        request made) when the budget has no slot before `deadline`."""
        def call() -> dict[str, Any]:
            # the client's own connection (endpoint, credentials, user agent), one request per page
            answer: dict[str, Any] = self.client._connection.api_request(method="POST", path="/entries:list",
                                                                          data=body)
            return answer

        attempt = 0
        while True:
            if await self.budget.acquire(deadline) is None:
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
                   deadline: float | None = None) -> LogRead:
        """Up to max_entries entries matching filter_, newest first or oldest first. With `deadline`
        (time.monotonic): pages the budget cannot start before it are not read (`declined`)."""
        read = LogRead()
        token: str | None = None
        while len(read.entries) < max_entries:
            body: dict[str, Any] = {"resourceNames": [f"projects/{self.project}"], "filter": filter_,
                                    "orderBy": "timestamp desc" if newest_first else "timestamp asc",
                                    "pageSize": min(PAGE_SIZE_MAX, max_entries - len(read.entries))}
            if token:
                body["pageToken"] = token
            answer = await self._page(body, read, what, deadline)
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
        filter_ = revision_filter(project=self.project, region=self.region, service=service,
                                  revision=revision, start=start, end=end)
        return await self.read(filter_, max_entries=max_entries, newest_first=newest_first,
                               what=f"read logs of {revision}", deadline=deadline)

    async def revision_entries(self, *, service: str, revision: str, start: datetime,
                               end: datetime | None = None, max_entries: int = 5000) -> list[dict[str, Any]]:
        """Entries of the revision in [start, end], oldest first, at most max_entries."""
        read = await self.read_revision(service=service, revision=revision, start=start, end=end,
                                        max_entries=max_entries)
        return read.entries
