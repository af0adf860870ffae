"""Failure notification, the fallback: POST a short summary of each failed verdict to a webhook.

The Prefect way is the Automation `stagecheck-failed-verdicts` (prefect.yaml, registered by `stagecheck
serve`): the server sends every `stagecheck.validation.failed` event to a notification block. When that
automation is registered and enabled on the run's Prefect API, this task sends nothing (no double
message). It remains for where no automation can act: `stagecheck validate` on a laptop runs on a
temporary Prefect server that stops with the CLI (often before its automations would fire) and that
nobody configured, and workspaces without the notification block.

The webhook URL is a secret (a Slack URL carries its token): it comes from the Prefect Secret block
`stagecheck-webhook-url`, else from the env `STAGECHECK_WEBHOOK_URL`, and appears in no log, body or
report. Delivery is best effort: an undeliverable notification is logged, it never changes the verdict.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import cast

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stagecheck.model import ServiceReport
from stagecheck.notify import failure_summary
from stagecheck.redact import hold_secret_values
from stagecheck.verdict_events import FAILED_VERDICTS_AUTOMATION

WEBHOOK_SECRET_BLOCK = "stagecheck-webhook-url"
WEBHOOK_ENV = "STAGECHECK_WEBHOOK_URL"
ATTEMPTS = 3
RETRY_DELAYS_S = (0.5, 2.0)
TIMEOUT_S = 10.0


def resolve_webhook_url(block_value: str | None, environ: Mapping[str, str]) -> str | None:
    """Pure: the Secret block's value when the block exists, else the env variable, else None."""
    if block_value is not None:
        return block_value.strip() or None
    return environ.get(WEBHOOK_ENV, "").strip() or None


async def webhook_url(environ: Mapping[str, str]) -> str | None:
    from prefect.blocks.system import Secret

    try:
        block = cast("Secret[str]", await Secret.aload(WEBHOOK_SECRET_BLOCK))
    except ValueError:  # no such block on this server
        return resolve_webhook_url(None, environ)
    return resolve_webhook_url(str(block.get() or ""), environ)


async def automation_notifies() -> bool:
    """Is the failed-verdicts Automation registered and enabled on this Prefect API (it notifies then)?"""
    from prefect import get_client

    try:
        async with get_client() as client:
            found = await client.read_automations_by_name(FAILED_VERDICTS_AUTOMATION)
    except Exception:  # unknown: the task notifies (a double message beats none)
        return False
    return any(automation.enabled for automation in found)


async def post_summary(http: httpx.AsyncClient, url: str, body: dict[str, object]) -> str | None:
    """POST with a few retries on connection errors and 5xx; None when delivered, else why not
    (the reason never contains the URL)."""
    problem = "not attempted"
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(RETRY_DELAYS_S[min(attempt - 1, len(RETRY_DELAYS_S) - 1)])
        try:
            resp = await http.post(url, json=body)
        except httpx.TimeoutException:
            problem = f"no answer from the webhook within {http.timeout.read or TIMEOUT_S:g} s ({attempt + 1} attempt(s))"
            continue
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__} reaching the webhook"
            continue
        if resp.is_success:
            return None
        problem = f"the webhook answered HTTP {resp.status_code}"
        if resp.status_code < 500 and resp.status_code != 429:
            break
    return problem


@task(name="notify-failure", cache_policy=NO_CACHE)
async def notify_failure(reports: list[ServiceReport]) -> int:
    """One message per failed report, unless the Automation sends them; returns how many it delivered."""
    logger = get_run_logger()
    if await automation_notifies():
        logger.info("failed verdicts are notified by the Automation %r (its notification block)",
                    FAILED_VERDICTS_AUTOMATION)
        return 0
    url = await webhook_url(os.environ)
    if url is None:
        logger.info("no failure webhook configured (Secret block %r or env %s): not notifying",
                    WEBHOOK_SECRET_BLOCK, WEBHOOK_ENV)
        return 0
    hold_secret_values([url])  # from a Secret block: masked in every output from here on
    delivered = 0
    async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as http:
        for report in reports:
            problem = await post_summary(http, url, failure_summary(report, secret_values=[url]))
            if problem is None:
                delivered += 1
                logger.info("failure of %s notified", report.service)
            else:
                logger.warning("failure notification for %s not delivered: %s", report.service, problem)
    return delivered
