"""Stages `probe-tagged` and `probe-serving`: health probes of the revision's URLs."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.model import StageResult, Status
from stagecheck.prober import ProbeResult, ProbeTarget, probe_many, probe_websocket
from stagecheck.settings import ProbeMode, ProbePolicy
from tasks.common import guarded


def probe_stage_result(name: str, results: Sequence[ProbeResult], label: str = "") -> StageResult:
    """Pure: FAIL if a gating probe failed, WARN if any warned, SKIP if nothing was probed."""
    statuses = [r.status for r in results]
    if not results or all(s is Status.SKIP for s in statuses):
        status = Status.SKIP
    elif Status.FAIL in statuses:
        status = Status.FAIL
    elif Status.WARN in statuses:
        status = Status.WARN
    else:
        status = Status.PASS
    worst = next((r for r in results if r.status is status), None)
    summary = f"{label}{worst.summary() if worst else 'nothing to probe'}"
    if status is Status.FAIL and worst is not None:
        summary = f"{label}{worst.kind} URL failed: {worst.reason}"
    return StageResult(name=name, status=status, summary=summary,
                       evidence=[r.evidence() for r in results],
                       criteria=[r.criterion(name) for r in results if r.status is not Status.SKIP or r.mode != ProbeMode.OFF])


@task(name="probe", cache_policy=NO_CACHE)
async def probe_urls(http: httpx.AsyncClient, name: str, targets: list[ProbeTarget], policy: ProbePolicy,
                     websocket: ProbeTarget | None = None, label: str = "") -> StageResult:
    async def body() -> StageResult:
        results = await probe_many(http, targets, policy)
        # the WebSocket exchange runs after the HTTP probes warmed the revision up
        if websocket is not None:
            results.append(await probe_websocket(websocket.url, timeout_s=policy.request_timeout_s * 2,
                                                 kind=websocket.kind, mode=websocket.mode))
        return probe_stage_result(name, results, label)

    return await guarded(name, body)
