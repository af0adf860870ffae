"""The project's Cloud Logging read budget, enforced by the Prefect server across processes and workers.

Cloud Logging allows 60 `entries.list` calls per minute per project, shared by everything that reads the
project. With a Prefect API configured (`PREFECT_API_URL`: a worker's flow run, `stagecheck validate`'s own
server, a team server or Prefect Cloud), every read takes a slot of the global concurrency limit
`stagecheck-logging-reads-<project>` in rate-limit mode: the limit is the burst and its slots decay at
`reads_per_minute / 60` per second, so all runs on all workers together start at most `burst +
reads_per_minute` reads in any minute (Prefect "Global concurrency limits and rate limits",
https://docs.prefect.io/v3/how-to-guides/workflows/global-concurrency-limits). The reader creates the limit
when it is missing; an existing one keeps the server's values (a team may tune it in the UI), except that a
limit without slot decay (which the server refuses for rate limiting) is given the configured decay.

A slot is asked for with the request `prefect.concurrency.asyncio.rate_limit()` makes
(`POST /v2/concurrency_limits/increment`, mode `rate_limit`; 423 with `Retry-After` while none is free), in a
loop of our own rather than through `rate_limit()` itself: Prefect's acquisition service handles the
requests of one process one after the other and starts a caller's timeout only when it reaches the caller,
and a caller that gave up still takes (and wastes) its slot later. A bake's read must take no slot past the
end of its watch and a cancelled read must take none at all. Without a Prefect API, or while it fails (a
warning says so, once), the in-process token bucket (`ReadBudget`) is the fallback.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, ClassVar

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from stagecheck.clients.cloudlogging import ReadBudget

LIMIT_PREFIX = "stagecheck-logging-reads-"
POLL_S = 0.1  # how often a waiting blocking acquisition looks whether its read was cancelled


def read_limit_name(project: str) -> str:
    """The global concurrency limit holding the project's Logging read budget."""
    return f"{LIMIT_PREFIX}{project}"


def configured_api_url() -> str | None:
    """The Prefect API this process talks to (None: no server configured, the in-process budget applies)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def decay_per_second(per_minute: float) -> float:
    """Pure: the slot decay that lets `per_minute` reads start per minute on average."""
    return per_minute / 60.0


class ServerReadBudget:
    """One project's read budget on the Prefect server (same interface as `ReadBudget.acquire`)."""

    _shared: ClassVar[dict[tuple[str, str, float, int], ServerReadBudget]] = {}
    _ensured: ClassVar[set[tuple[str, str]]] = set()
    _lock = threading.Lock()

    def __init__(self, api_url: str, project: str, per_minute: float, burst: int, fallback: ReadBudget) -> None:
        self.api_url, self.name = api_url, read_limit_name(project)
        self.per_minute, self.burst = per_minute, burst
        self.fallback = fallback
        self.granted = 0
        self.waited_s = 0.0
        self.declined = 0
        self.fell_back = 0  # reads paced by the in-process budget because the Prefect API failed
        self._warned = False

    @classmethod
    def for_project(cls, api_url: str, project: str, per_minute: float, fallback: ReadBudget) -> ServerReadBudget:
        """The one server budget of a project per Prefect API in this process."""
        key = (api_url, project, per_minute, fallback.burst)
        with cls._lock:
            budget = cls._shared.get(key)
            if budget is None or budget.fallback is not fallback:
                budget = cls._shared[key] = cls(api_url, project, per_minute, fallback.burst, fallback)
            return budget

    async def ensure_limit(self, client: PrefectClient) -> None:
        """Create the limit when missing; give an existing one without slot decay the configured decay."""
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        if (self.api_url, self.name) in self._ensured:
            return
        try:
            existing = await client.read_global_concurrency_limit_by_name(self.name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                    name=self.name, limit=self.burst, active=True,
                    slot_decay_per_second=decay_per_second(self.per_minute)))
            except ObjectAlreadyExists:  # created meanwhile by another reader
                pass
        else:
            if existing.slot_decay_per_second <= 0:
                await client.update_global_concurrency_limit(self.name, GlobalConcurrencyLimitUpdate(
                    slot_decay_per_second=decay_per_second(self.per_minute)))
        self._ensured.add((self.api_url, self.name))

    async def acquire(self, deadline: float | None = None, cancelled: threading.Event | None = None) -> float | None:
        """Wait for a slot; the seconds waited. With `deadline` (time.monotonic): None, and nothing taken,
        when the server's next slot starts after it; also None when `cancelled` is set while waiting."""
        from prefect import get_client

        started = time.monotonic()
        try:
            async with get_client() as client:
                await self.ensure_limit(client)
                while True:
                    try:
                        answer = await client.increment_concurrency_slots(names=[self.name], slots=1,
                                                                          mode="rate_limit")
                    except httpx.HTTPStatusError as exc:
                        if exc.response.status_code != 423:
                            raise
                        retry_s = float(exc.response.headers.get("Retry-After", "1"))
                    else:
                        if not answer.json():  # the limit was deleted meanwhile: create it again
                            self._ensured.discard((self.api_url, self.name))
                            await self.ensure_limit(client)
                            continue
                        waited = time.monotonic() - started
                        self.granted += 1
                        self.waited_s += waited
                        return waited
                    if deadline is not None and time.monotonic() + retry_s > deadline:
                        self.declined += 1
                        return None
                    if await _pause(retry_s, cancelled):
                        return None
        except (httpx.HTTPError, OSError, RuntimeError, ValueError) as exc:
            return await self._fall_back(exc, deadline, cancelled)

    def acquire_blocking(self, deadline: float | None = None, cancelled: threading.Event | None = None
                         ) -> float | None:
        """`acquire` from a plain thread (the coalesced reads' thread); same answers."""
        return asyncio.run(self.acquire(deadline, cancelled))

    async def _fall_back(self, exc: BaseException, deadline: float | None,
                         cancelled: threading.Event | None) -> float | None:
        from prefect.logging import get_logger

        if not self._warned:
            self._warned = True
            get_logger("stagecheck.logging").warning(
                "the Prefect API did not grant a Logging read slot (%s: %s): reads of this process are paced "
                "by its own budget, which other processes do not share", type(exc).__name__, exc)
        self.fell_back += 1
        taken = self.fallback._take(deadline)
        if taken is None:
            return None
        wait, ticket = taken
        if await _pause(wait, cancelled):
            self.fallback._give_back(ticket)
            return None
        return wait


async def _pause(seconds: float, cancelled: threading.Event | None) -> bool:
    """Sleep `seconds`; True (stopped early) when `cancelled` is set meanwhile."""
    if cancelled is None:
        await asyncio.sleep(seconds)
        return False
    end = time.monotonic() + seconds
    while not cancelled.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(POLL_S, left))
    return True
