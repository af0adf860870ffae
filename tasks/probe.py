"""Stages `probe-tagged` and `probe-serving`: health probes of the revision's URLs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.log_analysis.requests import probe_user_agent
from stagecheck.model import Criterion, StageResult, Status
from stagecheck.probe_auth import auth_failures
from stagecheck.prober import ProbeResult, ProbeTarget, probe_many, probe_websocket
from stagecheck.settings import ProbeAuth, ProbeMode, ProbePolicy
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:  # google.auth's JWT and crypto modules: loaded where ID tokens are first minted
    from stagecheck.clients.identity import IdTokens


async def with_credentials(targets: Sequence[ProbeTarget], policy: ProbePolicy, tokens: IdTokens | None,
                           service: str) -> list[ProbeTarget]:
    """The targets with their ID-token header (probes.auth = "id_token"), stagecheck's User-Agent (an
    advisory URL's probes marked: `log_analysis.requests`) and the meaning of a 401/403.
    A token that cannot be minted raises StageError (the stage fails with the reason)."""
    out: list[ProbeTarget] = []
    identity = tokens.identity if tokens is not None else "the run's identity"
    for target in targets:
        token = None
        if policy.auth == ProbeAuth.ID_TOKEN and target.audience and tokens is not None \
                and target.mode != ProbeMode.OFF:
            token = await tokens.headers(target.audience)
        errors = auth_failures(auth=policy.auth, audience=target.audience if token else None, identity=identity,
                               service=service)
        # the target's own headers (e.g. the Host of a load-balancer tag route) stay; the token joins them;
        # the User-Agent says the request is stagecheck's probe, of an advisory URL or not (request logs)
        agent = {"User-Agent": probe_user_agent(target.mode == ProbeMode.ADVISORY)}
        headers = {**agent, **(target.headers or {}), **(token or {})}
        out.append(replace(target, headers=headers, auth_errors=errors))
    return out


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


def with_unprobed(result: StageResult, unprobed: Sequence[Criterion], label: str = "") -> StageResult:
    """Pure: the rows of URLs that could not be probed join the stage; a required URL nobody knows FAILs it,
    and a stage left with nothing probed (every URL closed by ingress) FAILs: nothing could decide."""
    if not unprobed:
        return result
    result.criteria.extend(unprobed)
    if any(c.status is Status.FAIL for c in unprobed):
        result.status = Status.FAIL
        result.summary = f"{label}{next(c for c in unprobed if c.status is Status.FAIL).observed}"
    elif result.status is Status.SKIP:
        result.status = Status.FAIL
        result.summary = f"{label}no URL left to probe: {unprobed[0].observed}"
    return result


@task(name="probe", cache_policy=NO_CACHE, task_run_name=stage_run_name(label_param="label"))
async def probe_urls(http: httpx.AsyncClient, name: str, targets: list[ProbeTarget], policy: ProbePolicy,
                     websocket: ProbeTarget | None = None, label: str = "", tokens: IdTokens | None = None,
                     service: str = "", unprobed: list[Criterion] | None = None) -> StageResult:
    """Probe the URLs (ID tokens per probes.auth; a 401/403 fails naming the permission or audience);
    `unprobed`: rows of URLs that could not be probed (see `with_unprobed`)."""
    async def body() -> tuple[StageResult, None]:
        results = await probe_many(http, await with_credentials(targets, policy, tokens, service), policy)
        # the WebSocket exchange runs after the HTTP probes warmed the revision up
        if websocket is not None:
            ws = (await with_credentials([websocket], policy, tokens, service))[0]
            results.append(await probe_websocket(ws.url, timeout_s=policy.request_timeout_s * 2,
                                                 kind=ws.kind, mode=ws.mode, headers=ws.headers))
        return probe_stage_result(name, results, label), None

    result, _ = await guarded(name, body, None)
    result = with_unprobed(result, unprobed or [], label)
    return gate(result, result)
