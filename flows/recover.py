"""The recovery flow: put back the traffic split a killed release left on its services.

A validation writes a rollout record on the Cloud Run service before it moves traffic and removes it when
the release has passed or been rolled back (`stagecheck.rollout`). A record still there means the run died
mid-release. This flow, per service: releases the service's concurrency slot when its holder's flow run has
ended (a killed run never releases it), takes the slot (a validation still running is waited for, bounded
by `slot_wait_s`), restores the recorded split (verified against what serves) and removes the record.

Started by `stagecheck recover --service NAME`, or by the Automation on a crashed validation flow run
(`crashed_run`: then the crashed run's own parameters say which config and services, and only records that
run wrote are recovered).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import ValidationError

from flows.params import ValidationRequest
from stagecheck.concurrency import (
    ServiceLockError,
    ensure_service_limits,
    lock_failed,
    release_stale_holder,
    service_slot,
)
from stagecheck.model import StageResult, Status
from stagecheck.redact import redact
from stagecheck.settings import ConfigError

FLOW_NAME = "stagecheck-recover"
RUN_PREFIX = "prefect.flow-run."


def crashed_run_id(value: str) -> UUID:
    """Pure: the flow run id in an event's resource id (`prefect.flow-run.<id>`) or a bare id."""
    text = value.strip()
    return UUID(text[len(RUN_PREFIX):] if text.startswith(RUN_PREFIX) else text)


def recovery_request(services: list[str], config: str, sandbox: bool, state_dir: str,
                     crashed_parameters: dict[str, Any] | None) -> ValidationRequest:
    """Pure: what to recover: the crashed validation's own config and services when recovering one, else
    the arguments."""
    if crashed_parameters is not None:
        keys = ("config", "services", "sandbox", "state_dir")
        return ValidationRequest(**{k: crashed_parameters[k] for k in keys if crashed_parameters.get(k) is not None})
    return ValidationRequest(config=config, services=services, sandbox=sandbox, state_dir=state_dir)


def _run_name() -> str:
    params = flow_run.parameters or {}
    if params.get("crashed_run"):
        return f"recover-after-{str(params['crashed_run']).rsplit('.', 1)[-1][:8]}"
    return f"recover-{'+'.join(params.get('services') or []) or 'all'}"


async def _read_parameters(run_id: UUID) -> dict[str, Any]:
    from prefect import get_client

    async with get_client() as client:
        return dict((await client.read_flow_run(run_id)).parameters)


@flow(name=FLOW_NAME, log_prints=False, persist_result=False, flow_run_name=_run_name)
async def recover(
    services: list[str] | None = None,
    config: str = "stagecheck.toml",
    sandbox: bool = False,
    state_dir: str = ".stagecheck",
    crashed_run: str | None = None,
) -> list[dict[str, str]] | State:
    """Restore the traffic split that a killed release left on its Cloud Run services, and remove its record.

    Args:
        services: Cloud Run services to recover; empty means every service in the config
        config: Path of the stagecheck.toml (relative to the working directory)
        sandbox: Target the local sandbox (endpoints from STATE_DIR/sandbox.json)
        state_dir: Where the sandbox writes sandbox.json
        crashed_run: A crashed validation flow run (id, or the event resource `prefect.flow-run.<id>`):
            its own parameters are used, and only the records it wrote are recovered
    """
    from flows.validate import gate_value
    from tasks.common import Clients
    from tasks.rollout import recover_service

    logger = get_run_logger()
    only_for: UUID | None = None
    try:
        crashed_parameters = None
        if crashed_run:
            only_for = crashed_run_id(crashed_run)
            crashed_parameters = await _read_parameters(only_for)
        request = recovery_request(services or [], config, sandbox, state_dir, crashed_parameters)
        settings = request.load()
        chosen = [settings.service(name).name for name in request.services] or [s.name for s in settings.services]
    except (ConfigError, ValidationError, ValueError) as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))
    me = flow_run.get_id()
    me_id = UUID(me) if me else None
    clients = Clients.from_settings(settings)
    results: list[StageResult] = []
    try:
        for service in chosen:
            try:  # a recovery deployment in a user's own pool has no setup step: create a missing limit
                await ensure_service_limits([service], repair=False)
            except Exception as exc:  # the lock gate that follows says what to do
                logger.warning("could not create the concurrency limit of %s: %s", service, exc)
            released = await release_stale_holder(service, me_id)
            if released:
                logger.info("%s", released)
            try:
                async with service_slot(service, settings.slot_wait_s):
                    result, _ = await gate_value(await recover_service(
                        clients.cloudrun, service, settings.deploy_timeout_s, me_id, only_for))
            except ServiceLockError as exc:
                result = lock_failed(service, exc)
            logger.info("%s: %s %s", service, result.status.value, result.summary)
            results.append(result)
    finally:
        await clients.aclose()
    summary = [{"service": s, "status": r.status.value, "summary": redact(r.summary)}
               for s, r in zip(chosen, results, strict=True)]
    failed = [f"{s}: {r.summary}" for s, r in zip(chosen, results, strict=True) if r.status is Status.FAIL]
    if failed:
        return Failed(message=redact("; ".join(failed)), data=summary)
    return summary

