"""One validation per Cloud Run service at a time.

Each service has a Prefect global concurrency limit of 1 slot (`stagecheck-service-<name>`). The
setup (`stagecheck serve`, `stagecheck validate`) creates the limits, and so does the flow for a limit
that is missing (a deployment in a user's own pool has no setup step); the flow holds the slot for the
whole per-service walk, acquired with `strict=True`: a limit that still does not exist (the API refused
to create it) fails the run loudly instead of limiting nothing. A second run for the same service waits;
runs for other services proceed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency

from stagecheck.model import Criterion, StageResult, Status
from stagecheck.stages import Stage

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

LIMIT_PREFIX = "stagecheck-service-"
SLOTS_PER_SERVICE = 1


class ServiceLockError(Exception):
    """The per-service slot could not be taken (the limit is missing or the API refused)."""


def limit_name(service: str) -> str:
    """The global concurrency limit guarding one Cloud Run service."""
    return f"{LIMIT_PREFIX}{service}"


async def ensure_limits(client: PrefectClient, services: Iterable[str], *, repair: bool = True) -> list[str]:
    """Create (or, with `repair`, repair to 1 active slot) the limit of each service; returns the limit names."""
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
        if repair and (existing.limit != SLOTS_PER_SERVICE or not existing.active):
            await client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=SLOTS_PER_SERVICE, active=True))
    return names


DEFAULT_SLOT_WAIT_S = 1800.0  # Settings.slot_wait_s
LEASE_S = 300.0  # a crashed holder's slot comes free after this (the lease is no longer renewed)


@asynccontextmanager
async def service_slot(service: str, timeout_s: float = DEFAULT_SLOT_WAIT_S) -> AsyncIterator[float]:
    """Hold the service's slot for the body; yields how long it waited for it (seconds).

    Waits at most `timeout_s` for another validation of the service to finish. Raises
    ServiceLockError (with what to do) when the limit does not exist or the wait gives up; the
    latter names the slot, how long it waited and, when the API shows it, the flow run holding it."""
    name = limit_name(service)
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(concurrency(name, occupy=1, strict=True, timeout_seconds=timeout_s,
                                                        lease_duration=LEASE_S, holder=_this_flow_run()))
        except ConcurrencySlotAcquisitionError as exc:
            raise ServiceLockError(
                f"cannot take the concurrency slot {name!r} for service {service!r}: {exc}. "
                f"Create it with `prefect gcl create {name} --limit 1` (or run `stagecheck serve` / "
                "`stagecheck validate`, which create the limits of the services they validate)") from None
        except TimeoutError:  # AcquireConcurrencySlotTimeoutError
            holders = await slot_holders(service)
            raise ServiceLockError(slot_timeout_message(service, timeout_s, holders)) from None
        yield time.monotonic() - started


def slot_timeout_message(service: str, timeout_s: float, holders: list[str] | None) -> str:
    """Pure: why the wait for a service's slot gave up, naming the holder when it is known."""
    if holders:
        held = f"held by {', '.join(holders)}"
    elif holders is None:
        held = "the holder could not be read from the Prefect API"
    else:
        held = "no running flow run of this service found: a crashed run's lease frees it after at most " \
               f"{LEASE_S:g} s"
    return (f"waited {timeout_s:g} s for the concurrency slot {limit_name(service)!r} of service {service!r} "
            f"(another validation of it is running), then gave up: {held}; raise slot_wait_s to wait longer")


def _this_flow_run() -> ConcurrencyLeaseHolder | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    return ConcurrencyLeaseHolder(type="flow_run", id=ctx.flow_run.id)


async def slot_holders(service: str) -> list[str] | None:
    """Running flow runs (other than this one) with task runs of this service: who holds its slot.

    Prefect's API does not expose a lease's holder; a validation tags its service's task runs
    `service:<name>` while it holds the slot, so those runs are the holder. None when the API fails."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    me = _this_flow_run()
    run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                               id=FlowRunFilterId(not_any_=[me.id]) if me else None)
    try:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=run_filter, limit=5,
                task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[f"service:{service}"])))
    except Exception:  # the message still says what was waited for and how long
        return None
    return [f"flow run {run.name!r} ({run.id}, started {run.start_time:%Y-%m-%d %H:%M:%S} UTC)"
            if run.start_time else f"flow run {run.name!r} ({run.id})" for run in runs]


def lock_failed(service: str, error: ServiceLockError) -> StageResult:
    """Pure: the FAIL stage a service gets when its slot cannot be taken (fail closed, reported)."""
    return StageResult(name=Stage.LOCK, status=Status.FAIL, summary=str(error),
                       criteria=[Criterion(name="Service slot taken", stage=Stage.LOCK, status=Status.FAIL,
                                           expected=f"the concurrency limit {limit_name(service)!r} exists",
                                           observed=str(error))])


async def ensure_service_limits(services: Iterable[str], *, repair: bool = True) -> list[str]:
    """`ensure_limits` on the configured Prefect API (or the ephemeral one a local flow run uses)."""
    from prefect import get_client

    async with get_client() as client:
        return await ensure_limits(client, services, repair=repair)
