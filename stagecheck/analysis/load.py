"""The bounded load generator (I/O): the schedule's requests sent to the two tag URLs, timed.

Safe by construction: a request URL is the arm's tag URL plus a validated path, checked against the arm's
scheme, host and port before sending (never another host; redirects are not followed); GET/HEAD unless a
request opts in; at most `rps` per arm (<= 25) and `max_in_flight` requests at once; a 429 pauses both arms
for its Retry-After (capped) and is not a sample; it stops at its deadline, and when the candidate fails
most of its requests (the circuit breaker). Latency counts from the intended send time, so a stall shows
up in the figures instead of thinning the sample (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from stagecheck.analysis.config import AnalysisSettings, RequestSpec
from stagecheck.analysis.judge import ArmSamples
from stagecheck.analysis.schedule import Arm, Slot, schedule

USER_AGENT = "stagecheck-load/0.1"  # beside the prober's "stagecheck-probe/0.1": recognisable in request logs
MAX_RETRY_AFTER_S = 30.0


class UnsafeTarget(ValueError):
    """A request URL that would leave its arm's tag URL."""


@dataclass
class Sample:
    arm: Arm
    path: str
    intended_s: float  # from the start
    sent_s: float
    latency_ms: float  # from the intended send time to the end of the response
    status: int | None  # None: no answer (timeout, connection error)
    error: str | None = None


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    throttled: int = 0  # 429 answers (not samples)
    breaker_tripped: str | None = None
    stopped_at_s: float = 0.0
    started: float = 0.0  # the clock's reading at the start (intended times count from it)
    candidate_sent: int = 0
    candidate_failed: int = 0

    def is_error(self, s: Sample) -> bool:
        return s.status is None or s.status >= 400

    def arm(self, arm: Arm) -> ArmSamples:
        mine = [s for s in self.samples if s.arm is arm]
        ok = [s.latency_ms for s in mine if not self.is_error(s)]
        return ArmSamples.of(ok, len(mine), sum(self.is_error(s) for s in mine))


def request_url(base_url: str, spec: RequestSpec) -> httpx.URL:
    """The arm's URL for a request; UnsafeTarget if it would reach any other origin."""
    base = httpx.URL(base_url)
    url = httpx.URL(base_url.rstrip("/") + spec.path)
    if spec.path.startswith("//") or (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        raise UnsafeTarget(f"{spec.path} would leave {base_url}")
    return url


def retry_after_s(value: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else 1.0
    except ValueError:
        return 1.0  # an HTTP date: wait a second and let the next 429 say again


async def run_load(
    client: httpx.AsyncClient, targets: Mapping[Arm, str], requests: tuple[RequestSpec, ...],
    settings: AnalysisSettings, duration_s: float, *, seed: int = 0,
    headers: Callable[[Arm], Awaitable[dict[str, str]]] | None = None,
    clock: Callable[[], float] = time.monotonic, stop: asyncio.Event | None = None,
) -> LoadResult:
    """Send the schedule to the two arms for `duration_s` (the deadline; `stop` ends it earlier) and return
    every sample."""
    urls = {slot_arm: {r.path: request_url(targets[slot_arm], r) for r in requests} for slot_arm in Arm}
    plan = schedule(requests, settings.rps, duration_s, seed)
    result = LoadResult()
    gate = asyncio.Semaphore(settings.max_in_flight)
    start = result.started = clock()
    resume_at = 0.0
    stop = stop or asyncio.Event()

    async def one(slot: Slot) -> None:
        nonlocal resume_at
        async with gate:
            sent = clock() - start
            extra = await headers(slot.arm) if headers else {}
            try:
                resp = await client.request(slot.request.method, urls[slot.arm][slot.request.path],
                                            headers={"User-Agent": USER_AGENT, **extra},
                                            timeout=settings.request_timeout_s)
                status, err = resp.status_code, None
            except httpx.HTTPError as exc:
                status, err = None, f"{type(exc).__name__}: {exc}"[:200]
            done = clock() - start
        if status == 429:
            result.throttled += 1
            resume_at = max(resume_at, done + retry_after_s(resp.headers.get("retry-after")))
            return
        sample = Sample(slot.arm, slot.request.path, slot.at_s, sent, (done - slot.at_s) * 1000, status, err)
        result.samples.append(sample)
        tripped = _breaker(result, sample, settings)
        if tripped:
            result.breaker_tripped = tripped
            stop.set()

    tasks: list[asyncio.Task[None]] = []
    for slot in plan:
        if stop.is_set():
            break
        now = clock() - start
        wait = max(slot.at_s, resume_at) - now
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
                break
            except TimeoutError:
                pass
        if slot.at_s < resume_at or clock() - start >= duration_s:
            continue  # throttled window (Retry-After) or past the deadline: not sent, not a sample
        tasks.append(asyncio.create_task(one(slot)))
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=settings.request_timeout_s + 1)
        for t in late:
            t.cancel()
    result.stopped_at_s = clock() - start
    return result


def _breaker(result: LoadResult, sample: Sample, settings: AnalysisSettings) -> str | None:
    if sample.arm is not Arm.CANDIDATE:
        return None
    result.candidate_sent += 1
    result.candidate_failed += result.is_error(sample)
    sent, failed = result.candidate_sent, result.candidate_failed
    if sent >= settings.breaker_min_requests and failed / sent >= settings.breaker_error_share:
        return (f"circuit breaker: the candidate failed {failed} of {sent} requests "
                f"(>= {settings.breaker_error_share:.0%}); load stopped")
    return None
