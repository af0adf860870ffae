"""Whether Cloud Run's front end refuses an ID token the moment its `exp` passes, or allows a few minutes of
clock skew, is unsure (sandbox fidelity `expired_token`): the probes pass either way, because IdTokens renews a
token before it expires (REFRESH_MARGIN_S) and a stage never starts with a token past its `exp`. The tokens here
are the sandbox's, minted with a lifetime of a few seconds so that one expires inside the test."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from stagecheck.clients.identity import IdTokens, token_expiry
from stagecheck.model import Status
from stagecheck.prober import ProbeTarget
from stagecheck.settings import ProbePolicy, UrlKind
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, unique_name

POLICY = ProbePolicy(deadline_s=20, consecutive_successes=2, initial_backoff_s=0.1, max_backoff_s=0.5,
                     success_interval_s=0.05)
LIFETIME_S = 5  # far inside REFRESH_MARGIN_S: every token is renewed before the next stage uses it


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.parametrize(("switch", "stale_status"), [("reject", 401), ("grace", 200)])
async def test_probes_never_send_an_expired_token_whichever_way_expiry_is_enforced(
    run_clients: RunClients, sample_image: Any, fidelity: Any, switch: str, stale_status: int,
) -> None:
    from tasks.probe import probe_urls

    minted: list[str] = []

    def mint(audience: str) -> str:
        token = str(run_clients.admin("POST", "/sandbox/v1/iam/id-token",
                                      {"audience": audience, "lifetime_s": LIFETIME_S})["id_token"])
        minted.append(token)
        return token

    name = unique_name("tokexp")
    try:
        svc = deploy(run_clients, name, sample_image.ref)
        fidelity(expired_token=switch)
        tokens = IdTokens(None, mint=mint)
        target = ProbeTarget(url=f"{svc.uri}/health", kind=UrlKind.SERVICE, audience=svc.uri)
        async with httpx.AsyncClient(trust_env=False) as http:
            first = await probe_urls.fn(http, "probe-service", [target], POLICY, tokens=tokens, service=name)
            [stale] = minted
            await asyncio.sleep(max(0.0, token_expiry(stale) + 1 - time.time()))  # until the first is past `exp`
            # the switch is in force: the token the first stage used is now refused, or still taken
            sent_stale = await http.get(target.url, headers={"Authorization": f"Bearer {stale}"})
            second = await probe_urls.fn(http, "probe-service", [target], POLICY, tokens=tokens, service=name)
    finally:
        run_clients.services.delete_service(name=run_clients.service_name(name)).result(polling=FAST_POLL, timeout=60)
    assert first.status is Status.PASS, first.summary
    assert sent_stale.status_code == stale_status
    # the second stage renewed the token instead of sending the expired one, and passed
    assert second.status is Status.PASS, second.summary
    assert len(minted) == 2 and minted[1] != stale and token_expiry(minted[1]) > token_expiry(stale)
