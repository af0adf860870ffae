"""One validation per Cloud Run service at a time.

Each service has a Prefect global concurrency limit of 1 slot (`stagecheck-service-<name>`). The
setup (`stagecheck serve`, `stagecheck validate`) creates the limits; the flow holds the slot for the
whole per-service walk, acquired with `strict=True`: a missing limit fails the run loudly instead of
limiting nothing. A second run for the same service waits; runs for other services proceed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency

from stagecheck.model import Criterion, StageResult, Status

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

LIMIT_PREFIX = "stagecheck-service-"
SLOTS_PER_SERVICE = 1


class ServiceLockError(Exception):
    """The per-service slot could not be taken (the limit is missing or the API refused)."""


def limit_name(service: str) -> str:
    """The global concurrency limit guarding one Cloud Run service."""
    return f"{LIMIT_PREFIX}{service}"


async def ensure_limits(client: PrefectClient, services: Iterable[str]) -> list[str]:
    """Create (or repair to 1 active slot) the limit of each service; returns the limit names."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    names = [limit_name(s) for s in dict.fromkeys(services)]
    for name in names:
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=SLOTS_PER_SERVICE, active=True))
            except ObjectAlreadyExists:  # created concurrently by another setup: fine
                pass
            continue
        if existing.limit != SLOTS_PER_SERVICE or not existing.active:
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=SLOTS_PER_SERVICE, active=True))
    return names


@asynccontextmanager
async def service_slot(service: str) -> AsyncIterator[float]:
    """Hold the service's slot for the body; yields how long it waited for it (seconds).

    Raises ServiceLockError (with what to do) when the limit does not exist."""
    name = limit_name(service)
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(concurrency(name, occupy=1, strict=True))
        except ConcurrencySlotAcquisitionError as exc:
            raise ServiceLockError(
                f"cannot take the concurrency slot {name!r} for service {service!r}: {exc}. "
                f"Create it with `prefect gcl create {name} --limit 1` (or run `stagecheck serve` / "
                "`stagecheck validate`, which create the limits of the services they validate)") from None
        yield time.monotonic() - started


def lock_failed(service: str, error: ServiceLockError) -> StageResult:
    """Pure: the FAIL stage a service gets when its slot cannot be taken (fail closed, reported)."""
    return StageResult(name="lock", status=Status.FAIL, summary=str(error),
                       criteria=[Criterion(name="Service slot taken", stage="lock", status=Status.FAIL,
                                           expected=f"the concurrency limit {limit_name(service)!r} exists",
                                           observed=str(error))])


async def ensure_service_limits(services: Iterable[str]) -> list[str]:
    """`ensure_limits` on the configured Prefect API (or the ephemeral one a local flow run uses)."""
    from prefect import get_client

    async with get_client() as client:
        return await ensure_limits(client, services)
