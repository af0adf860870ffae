"""Stage `analysis`: the candidate against the baseline under the same load, judged with statistics.

Runs beside the bake. The revision that served before the release (or, with `baseline = "fresh"`, its copy
deployed beside the candidate: tasks/control.py) answers on the `sc-base` tag for the duration (a 0 % target: traffic unchanged; removed afterwards, also on failure); the candidate on its own
tag URL. Decisions: stagecheck/analysis (judge, stage); load: stagecheck/analysis/load.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.analysis.arms import BASE_TAG, tag_uri, with_base_tag, without_base_tag
from stagecheck.analysis.config import AnalysisSettings, RequestSpec
from stagecheck.analysis.crosscheck import cross_check, logged_requests
from stagecheck.analysis.judge import judge
from stagecheck.analysis.load import USER_AGENT, LoadResult, run_load
from stagecheck.analysis.openapi import request_mix
from stagecheck.analysis.schedule import Arm
from stagecheck.analysis.stage import analysis_result, not_analysed
from stagecheck.errors import StageError
from stagecheck.model import StageResult
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:
    from stagecheck.clients.cloudlogging import LogReader
    from stagecheck.clients.cloudrun import CloudRun
    from stagecheck.clients.identity import IdTokens
    from tasks.control import Control

LOG_READ_WAIT_S = 20.0  # the cross-check's log reads give up (declined) rather than hold the verdict longer


async def _openapi_mix(http: httpx.AsyncClient, urls: dict[Arm, str], settings: AnalysisSettings,
                       headers: dict[Arm, dict[str, str]]) -> tuple[RequestSpec, ...]:
    docs: dict[Arm, Any] = {}
    for arm, url in urls.items():
        resp = await http.get(f"{url.rstrip('/')}{settings.openapi_path}", headers=headers[arm],
                              timeout=settings.request_timeout_s)
        if resp.status_code != 200:
            raise StageError(f"no [analysis] paths and {settings.openapi_path} answered {resp.status_code} on the "
                             f"{arm}: set [analysis] paths")
        docs[arm] = resp.json()
    mix = request_mix(docs[Arm.BASELINE], docs[Arm.CANDIDATE])
    if not mix:
        raise StageError(f"{settings.openapi_path} lists no GET operation without required parameters: "
                         "set [analysis] paths")
    return mix


async def _first_answer(http: httpx.AsyncClient, url: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One unmeasured request before the load: how long an arm took to answer (a cold start shows here)."""
    started = time.monotonic()
    try:
        resp = await http.get(url, headers={"User-Agent": USER_AGENT, **headers}, timeout=timeout_s)
        status: int | None = resp.status_code
    except httpx.HTTPError:
        status = None
    return {"seconds": round(time.monotonic() - started, 3), "status": status, "url": url}


@task(name="analysis", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.ANALYSIS, label_param="label"))
async def analyse_release(cloudrun: CloudRun, http: httpx.AsyncClient, *, service: str, baseline_revision: str | None,
                          candidate_url: str | None, audience: str | None, settings: AnalysisSettings,
                          duration_s: float, timeout_s: float, label: str = "",
                          tokens: IdTokens | None = None, stop: asyncio.Event | None = None,
                          reader: LogReader | None = None, candidate_revision: str | None = None,
                          control: Control | None = None) -> StageResult:
    """Tag the baseline `sc-base` (`control`: the fresh copy of the serving revision, which `baseline_revision`
    then names), send the same open-loop request mix to both arms for `duration_s` (or
    until `stop` is set: the bake failed), judge candidate vs baseline per metric
    (stagecheck.analysis.judge), remove the tag."""
    from stagecheck.clients.cloudrun import split_from_proto

    async def body() -> tuple[StageResult, None]:
        if not baseline_revision or not candidate_url:
            why = "no revision served before this release" if not baseline_revision else "the candidate has no tag URL"
            return not_analysed(why, settings), None
        svc = await cloudrun.set_traffic(service, with_base_tag(split_from_proto(
            (await _service(cloudrun, service)).traffic), baseline_revision), timeout_s)
        try:
            base_url = tag_uri(svc.traffic_statuses, BASE_TAG)
            if base_url is None:
                raise StageError(f"Cloud Run gave the {BASE_TAG} tag of {baseline_revision} no URL")
            urls = {Arm.BASELINE: base_url, Arm.CANDIDATE: candidate_url}
            auth = await tokens.headers(audience) if tokens is not None and audience else {}
            headers = {arm: dict(auth) for arm in Arm}
            mix = settings.paths or await _openapi_mix(http, urls, settings, headers)
            first = {str(arm): await _first_answer(http, f"{url.rstrip('/')}{mix[0].path}", headers[arm],
                                                   settings.request_timeout_s) for arm, url in urls.items()}

            async def arm_headers(arm: Arm) -> dict[str, str]:
                return headers[arm]

            seed = int(time.time())  # the block order; recorded so a schedule can be replayed
            began = datetime.now(UTC)
            load = await run_load(http, urls, mix, settings, duration_s, seed=seed, headers=arm_headers, stop=stop)
        finally:
            current = await _service(cloudrun, service)
            await cloudrun.set_traffic(service, without_base_tag(split_from_proto(current.traffic)), timeout_s)
        stopped = f"load stopped at {load.stopped_at_s:.1f} s: the bake failed" if stop and stop.is_set() else None
        result = _judged(load, settings, first, mix, base_url, candidate_url, baseline_revision, label, stopped)
        if control is not None:
            result.data["analysis"]["baseline"].update(kind="fresh", copied_from=control.copied_from,
                                                       image=control.image)
            result.evidence.insert(0, control.evidence)
        result.data["analysis"]["seed"] = seed
        if reader is not None and candidate_revision:
            await _cross_check(result, reader, service, {Arm.BASELINE: baseline_revision,
                                                         Arm.CANDIDATE: candidate_revision}, began, load)
        return result, None

    result, _ = await guarded(Stage.ANALYSIS, body, None)
    return gate(result, result)


async def _cross_check(result: StageResult, reader: LogReader, service: str, revisions: dict[Arm, str],
                       began: datetime, load: LoadResult) -> None:
    """The request logs' status codes of our requests beside the generator's (a criterion and the data)."""
    logged: dict[str, dict[str, Any]] = {}
    for arm, revision in revisions.items():
        try:
            read = await reader.read_revision(service=service, revision=revision, start=began,
                                              deadline=time.monotonic() + LOG_READ_WAIT_S)
        except (StageError, OSError, ValueError) as exc:  # evidence only: the judgement stands without it
            result.data["analysis"]["request_logs_error"] = f"{type(exc).__name__}: {exc}"
            return
        logged[str(arm)] = {**logged_requests(read.entries, USER_AGENT), "declined": read.declined,
                            "truncated": read.truncated}
    generator = {str(arm): (load.arm(arm).requests, load.arm(arm).errors) for arm in Arm}
    result.criteria.append(cross_check(generator, logged))
    result.data["analysis"]["request_logs"] = logged


async def _service(cloudrun: CloudRun, service: str) -> Any:
    svc = await cloudrun.get_service(service)
    if svc is None:
        raise StageError(f"service {service} disappeared during the analysis")
    return svc


def _judged(load: LoadResult, settings: AnalysisSettings, first: dict[str, Any], mix: tuple[RequestSpec, ...],
            base_url: str, candidate_url: str, baseline_revision: str, label: str, stopped: str | None) -> StageResult:
    base, cand = load.arm(Arm.BASELINE), load.arm(Arm.CANDIDATE)
    summary = (f"{base.requests} baseline / {cand.requests} candidate requests in {load.stopped_at_s:.1f} s at "
               f"{settings.rps:g} rps per arm; {load.throttled} throttled (429)")
    facts = {
        "summary": summary, "stopped_early": load.breaker_tripped or stopped, "throttled": load.throttled,
        "rps": settings.rps, "duration_s": round(load.stopped_at_s, 2),
        "paths": [{"path": r.path, "weight": r.weight, "method": r.method} for r in mix],
        "baseline": {"revision": baseline_revision, "url": base_url, "tag": BASE_TAG, "kind": "serving"},
        "candidate": {"url": candidate_url},
        "first_answer": first,
        "latencies_ms": {"baseline": [round(v, 2) for v in base.latencies_ms],
                         "candidate": [round(v, 2) for v in cand.latencies_ms]},
    }
    return analysis_result(judge(base, cand, settings), settings, facts=facts, label=label)
