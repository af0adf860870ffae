"""Stage `contract`: the API contract the candidate serves against the one that serves now, before any
traffic moves (the decision: stagecheck.contract.stage)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.documents import Fetched, fetch
from stagecheck.contract.findings import ContractAudit
from stagecheck.contract.stage import Served, decide_contract
from stagecheck.errors import StageError
from stagecheck.ingress import closed_by_ingress
from stagecheck.model import StageResult, Status
from stagecheck.probe_auth import tag_audience_retry
from stagecheck.settings import ContractSettings, ProbeAuth, ProbePolicy, UrlKind
from stagecheck.stages import Stage
from tasks.base_tag import baseline_url
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:
    from stagecheck.clients.cloudrun import CloudRun
    from stagecheck.clients.identity import IdTokens


def _served(got: Fetched) -> Served:
    return Served(url=got.url, status=got.status, body=got.body, described=got.describe())


@task(name="contract", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.CONTRACT))
async def audit_contract(cloudrun: CloudRun, http: httpx.AsyncClient, tokens: IdTokens | None, service: str,
                         contract: ContractSettings, probes: ProbePolicy, *, baseline_revision: str | None,
                         candidate_url: str | None, audience: str | None, timeout_s: float, ingress: str = "",
                         in_vpc: bool = False) -> tuple[StageResult, ContractAudit | None]:
    """Fetch the OpenAPI document from the serving revision (through a tag URL; `sc-base` added when it has
    none, traffic unchanged) and from the candidate's tag URL, with ID tokens as the probes send them, and
    audit the change (oasdiff's rules, the ignore file, `fail_on`)."""
    async def body() -> tuple[StageResult, ContractAudit | None]:
        if baseline_revision is None:
            return StageResult(name=Stage.CONTRACT, status=Status.SKIP,
                               summary="first deployment: no serving revision to compare with"), None
        closed = closed_by_ingress(ingress, UrlKind.TAGGED, in_vpc=in_vpc)
        if closed is not None:  # a 404 from a closed tag URL would read as "no document": say why instead
            return StageResult(name=Stage.CONTRACT, status=Status.WARN,
                               summary=f"not audited: the tag URLs are {closed}"), None
        if candidate_url is None:
            raise StageError("the candidate has no tag URL to read its API document from")
        ignore_lines: list[str] = []
        if contract.ignore_file is not None:
            try:
                ignore_lines = (await asyncio.to_thread(Path(contract.ignore_file).read_text)).splitlines()
            except OSError as exc:
                raise StageError(f"contract.ignore_file {contract.ignore_file}: {exc.strerror or exc}") from None
        base_url, tag, added = await baseline_url(cloudrun, service, baseline_revision, timeout_s)
        headers: dict[str, str] = {}
        if probes.auth == ProbeAuth.ID_TOKEN and audience and tokens is not None:
            headers = await tokens.headers(audience)
        path = contract.openapi_path

        async def document(url: str) -> Fetched:
            """The document at a tag URL; a 401 is asked once more with the tag URL as the token's audience, as
            the tagged probe does (no source says which audience a tag URL accepts: stagecheck.probe_auth)."""
            got = await fetch(http, f"{url}{path}", headers=headers, request_timeout_s=probes.request_timeout_s,
                              deadline_s=probes.deadline_s, retry_statuses=tuple(probes.retry_statuses))
            other = tag_audience_retry(UrlKind.TAGGED, url, audience, got.status, probes)
            if other is None or tokens is None:
                return got
            return await fetch(http, f"{url}{path}", headers=await tokens.headers(other),
                               request_timeout_s=probes.request_timeout_s, deadline_s=probes.deadline_s,
                               retry_statuses=tuple(probes.retry_statuses))

        base, cand = await asyncio.gather(document(base_url), document(candidate_url))
        notes = [f"{baseline_revision} tagged {tag} for this comparison (traffic unchanged)" if added
                 else f"{baseline_revision} read through its tag {tag}"]
        return await asyncio.to_thread(
            decide_contract, _served(base), _served(cand), path=path, baseline_revision=baseline_revision,
            fail_on=contract.fail_on, ignore_lines=ignore_lines,
            ignore_file=str(contract.ignore_file) if contract.ignore_file else None, notes=notes)

    result, audit = await guarded(Stage.CONTRACT, body, None)
    return gate(result, (result, audit))
