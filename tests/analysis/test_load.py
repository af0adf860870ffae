"""The load generator against real HTTP servers on 127.0.0.1: only the two tag URLs, the same mix on both
arms, caps, 429/Retry-After, the circuit breaker, latency from the intended send time."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from stagecheck.analysis.config import AnalysisSettings, RequestSpec
from stagecheck.analysis.load import USER_AGENT, UnsafeTarget, request_url, run_load
from stagecheck.analysis.openapi import get_operations, request_mix
from stagecheck.analysis.schedule import Arm, schedule
from tests.analysis.arm_server import ArmServer, Gauge, serving


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as c:
        yield c


MIX = (RequestSpec(path="/", weight=3), RequestSpec(path="/items?page=2"), RequestSpec(path="/redirect"))


async def test_only_the_two_tag_urls_are_ever_sent_to(client: httpx.AsyncClient) -> None:
    with serving(ArmServer()) as elsewhere, serving(ArmServer()) as base, serving(ArmServer()) as cand:
        base.redirect_to = cand.redirect_to = f"{elsewhere.base}/stolen"
        result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base}, MIX,
                                AnalysisSettings(rps=10), 2.0, seed=3)
    assert elsewhere.hits == []
    assert len(base.hits) == len(cand.hits) == 20
    assert {h.user_agent for h in base.hits + cand.hits} == {USER_AGENT}
    assert Counter(h.path for h in base.hits) == Counter(h.path for h in cand.hits)  # the same mix
    assert {h.method for h in base.hits + cand.hits} == {"GET"}
    redirects = [s for s in result.samples if s.path == "/redirect"]
    assert redirects and {s.status for s in redirects} == {302}  # not followed


@pytest.mark.parametrize("path", ["//evil.example/x", "/@evil.example"])
def test_a_path_cannot_name_another_host(path: str) -> None:
    try:
        spec = RequestSpec.model_construct(path=path, weight=1.0, method="GET", allow_unsafe=False)
        url = request_url("http://127.0.0.1:8080", spec)
    except UnsafeTarget:
        return
    assert (url.host, url.port) == ("127.0.0.1", 8080)


def test_config_rejects_a_protocol_relative_path() -> None:
    with pytest.raises(ValueError, match="single '/'"):
        RequestSpec(path="//evil.example/")


async def test_in_flight_cap_and_latency_from_the_intended_send_time(client: httpx.AsyncClient) -> None:
    gauge = Gauge()
    with serving(ArmServer(delay_s=0.3, gauge=gauge)) as base, serving(ArmServer(delay_s=0.3, gauge=gauge)) as cand:
        result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base},
                                (RequestSpec(path="/"),), AnalysisSettings(rps=5, max_in_flight=2), 2.0, seed=1)
    assert gauge.peak == 2
    # 2 in flight x 0.3 s serve ~6.7 requests/s of the 10 scheduled: the queue shows in the latencies
    waits = sorted(s.latency_ms for s in result.samples)
    assert waits[0] >= 300
    assert waits[-1] > 600


async def test_429_pauses_both_arms_for_retry_after(client: httpx.AsyncClient) -> None:
    with serving(ArmServer(throttle_first=1)) as base, serving(ArmServer()) as cand:
        result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base},
                                (RequestSpec(path="/"),), AnalysisSettings(rps=2), 3.0, seed=2)
    assert result.throttled == 1
    throttled_at = base.hits[0].at  # the baseline's first request got the 429
    later = sorted(h.at - throttled_at for h in base.hits + cand.hits if h.at > throttled_at)
    assert later and [t for t in later if t < 0.95] == []  # nothing sent to either arm for Retry-After: 1
    assert all(s.status == 200 for s in result.samples)


async def test_circuit_breaker_stops_a_failing_candidate(client: httpx.AsyncClient) -> None:
    with serving(ArmServer()) as base, serving(ArmServer(status=500)) as cand:
        result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base},
                                (RequestSpec(path="/"),), AnalysisSettings(rps=20, breaker_min_requests=10), 10.0)
    assert result.breaker_tripped and "10 of 10" in result.breaker_tripped
    assert result.stopped_at_s < 3.0
    assert result.arm(Arm.CANDIDATE).errors == result.arm(Arm.CANDIDATE).requests == 10


async def test_deadline_stops_the_load(client: httpx.AsyncClient) -> None:
    with serving(ArmServer()) as base, serving(ArmServer()) as cand:
        result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base},
                                (RequestSpec(path="/"),), AnalysisSettings(rps=5), 1.5)
    assert max(s.sent_s for s in result.samples) < 1.5
    assert len(base.hits) == len(cand.hits) == 8  # round(5 * 1.5)


def test_schedule_is_open_loop_at_the_rate_in_every_second() -> None:
    slots = schedule(MIX, 7.0, 10.0, seed=5)
    for second in range(10):
        for arm in Arm:
            assert sum(1 for s in slots if s.arm is arm and second <= s.at_s < second + 1) == 7
        block = [s for s in slots if second <= s.at_s < second + 1]
        assert Counter(s.request.path for s in block if s.arm is Arm.BASELINE) == \
            Counter(s.request.path for s in block if s.arm is Arm.CANDIDATE)
    orders = {tuple(s.arm for s in slots if sec <= s.at_s < sec + 1) for sec in range(10)}
    assert len(orders) > 1  # randomised interleaving, not a fixed pattern


def test_openapi_mix_takes_gets_without_required_parameters() -> None:
    doc = {"paths": {
        "/": {"get": {}},
        "/items": {"get": {"parameters": [{"name": "page", "in": "query", "required": False}]}},
        "/items/{id}": {"get": {}},
        "/search": {"get": {"parameters": [{"name": "q", "in": "query", "required": True}]}},
        "/scoped": {"parameters": [{"name": "X", "in": "header", "required": True}], "get": {}},
        "/orders": {"post": {}},
        "/new": {"get": {}},
    }}
    assert get_operations(doc) == ("/", "/items", "/new")
    old = {"paths": {k: v for k, v in doc["paths"].items() if k != "/new"}}
    assert [r.path for r in request_mix(old, doc)] == ["/", "/items"]


async def test_a_stop_event_ends_the_load_early(client: httpx.AsyncClient) -> None:
    """The flow sets it when the bake fails: the release rolls back at once, the load with it."""
    stop = asyncio.Event()
    with serving(ArmServer()) as base, serving(ArmServer()) as cand:
        asyncio.get_running_loop().call_later(0.5, stop.set)
        result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base},
                                (RequestSpec(path="/"),), AnalysisSettings(rps=5), 30.0, stop=stop)
    assert result.stopped_at_s < 2.0
    assert 1 <= len(base.hits) <= 5
