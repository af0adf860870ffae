"""One validation per Cloud Run service at a time.

Each service has a Prefect global concurrency limit of 1 slot (`stagecheck-service-<name>`). The
setup (`stagecheck serve`, `stagecheck validate`) creates the limits, and so does the flow for a limit
that is missing (a deployment in a user's own pool has no setup step); the flow holds the slot for the
whole per-service walk, acquired with `strict=True`: a limit that still does not exist (the API refused
to create it) fails the run loudly instead of limiting nothing. A second run for the same service waits
(bounded by `slot_wait_s`, saying once whom it waits for); runs for other services proceed.

Prefect's API does not show who holds a lease, so the holder records itself (lease id, flow run, since
when, process) in the table artifact `stagecheck-slot-<service>` when it takes the slot, and adds a
"released" row to it before it lets go. A waiting run (or the recovery flow) that finds the recorded
holder's flow run ended — Crashed, Failed, Cancelled, or deleted: its process was killed and never
released the slot — releases that lease at once, instead of after a lease that a server without its lease
reaper (Prefect's temporary server) never expires.

Why an artifact and not a Variable: creating an artifact is one INSERT on the server, while setting or
deleting a Variable reads it first in the same transaction, and on a SQLite Prefect server such a write
meets "database is locked" (503) whenever the server's own services commit in between — which costs the
client's 2 s back-off at the end of every other run (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

import httpx
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency
from pydantic import BaseModel, ConfigDict

from stagecheck.liveness import ProcessRef, is_gone, this_process
from stagecheck.model import Criterion, StageResult, Status
from stagecheck.progress import progress
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


def service_tag(service: str) -> str:
    """The tag of a flow run that validates the service (set once the run knows its services)."""
    return f"service:{service}"


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
ATTEMPT_S = 3.0  # between two looks at who holds the slot while waiting for it
HOLDER_KEY_PREFIX = "stagecheck-slot-"
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class SlotHolder(BaseModel):
    """Who holds a service's slot, the latest row of its holder artifact while it is held: Prefect's API does
    not show a lease's holder, and a waiting run (or recovery) needs the lease id to release a dead holder's slot."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    lease_id: UUID
    flow_run_id: UUID | None = None
    flow_run_name: str | None = None
    since: datetime
    process: ProcessRef | None = None  # the process holding it (a killed one is seen gone on its host)

    def describe(self) -> str:
        run = f"flow run {self.flow_run_name!r} ({self.flow_run_id})" if self.flow_run_name else \
            f"flow run {self.flow_run_id}" if self.flow_run_id else "a process outside any flow run"
        return f"{run}, holding it since {self.since:%Y-%m-%d %H:%M:%S} UTC"


def holder_key(service: str) -> str:
    """The key of the service's holder artifact (one version per take and per release of its slot)."""
    return f"{HOLDER_KEY_PREFIX}{service}"


HELD, RELEASED = "held", "released"


def holder_row(holder: SlotHolder | None, lease_id: UUID, at: datetime) -> dict[str, str | int | None]:
    """Pure: the artifact row recording a holder that took the slot with `lease_id` (or, for None, its release)."""
    process = holder.process if holder is not None else None
    return {"state": HELD if holder is not None else RELEASED, "lease_id": str(lease_id),
            "flow_run_id": str(holder.flow_run_id) if holder is not None and holder.flow_run_id else None,
            "flow_run_name": holder.flow_run_name if holder is not None else None,
            "since": (holder.since if holder is not None else at).isoformat(),
            "process_host": process.host if process else None, "process_pid": process.pid if process else None,
            "process_started": process.started if process else None}


def holder_from_row(row: object) -> SlotHolder | None:
    """Pure: the holder a row records; None for a release row or a row that is not one of ours."""
    if not isinstance(row, dict) or row.get("state") != HELD:
        return None
    try:
        process = (ProcessRef(host=row["process_host"], pid=row["process_pid"], started=row.get("process_started"))
                   if row.get("process_host") and row.get("process_pid") is not None else None)
        return SlotHolder(lease_id=row["lease_id"], flow_run_id=row.get("flow_run_id"),
                          flow_run_name=row.get("flow_run_name"), since=row["since"], process=process)
    except (KeyError, ValueError, TypeError):
        return None


def stale_holder(holder: SlotHolder, holder_state: str | None, *, run_found: bool, me: UUID | None,
                 process_gone: bool | None = None) -> str | None:
    """Pure: why a recorded holder no longer holds its slot for real (its flow run ended, Crashed/Failed/
    Cancelled/Completed, or no longer exists; or its process is gone while the server still shows the run
    active — a killed CLI's temporary server never learns of the kill), or None when it may still be
    running (or is this run)."""
    if holder.flow_run_id is None or (me is not None and holder.flow_run_id == me):
        return None
    if not run_found:
        return f"its flow run {holder.flow_run_id} no longer exists"
    if holder_state in TERMINAL_STATES:
        return f"its flow run ended {holder_state.title()}"
    if process_gone and holder.process is not None:
        return f"its {holder.process.describe()} is gone (killed) while the run still shows {holder_state or 'active'}"
    return None


async def read_holder(service: str) -> SlotHolder | None:
    """The recorded holder of the service's slot (the latest row of its artifact); None when the slot was
    released since, nothing is recorded, or the record is unreadable."""
    import json

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    try:
        async with get_client() as client:
            latest = await client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=[holder_key(service)])), limit=1)
        if not latest:
            return None
        rows = json.loads(latest[0].data) if isinstance(latest[0].data, str) else latest[0].data
        return holder_from_row(rows[0]) if isinstance(rows, list) and rows else None
    except Exception:  # unreadable or malformed: the wait falls back to the lease and the message says less
        return None


async def _write_row(service: str, row: dict[str, str | int | None], description: str) -> None:
    """One more version of the holder artifact: a table of one row (what the UI shows), of this flow run."""
    import json

    from prefect import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    async with get_client() as client:
        await client.create_artifact(ArtifactCreate(key=holder_key(service), type="table", description=description,
                                                    data=json.dumps([row]), flow_run_id=this_flow_run()[0]))


async def _record_holder(service: str, lease_id: UUID | None) -> None:
    if lease_id is None:
        return
    me = this_flow_run()
    holder = SlotHolder(lease_id=lease_id, flow_run_id=me[0], flow_run_name=me[1], since=datetime.now(UTC),
                        process=this_process())
    try:
        await _write_row(service, holder_row(holder, lease_id, holder.since),
                         f"the slot {limit_name(service)!r} is held by {holder.describe()}")
    except Exception as exc:  # without the record a crash of this run frees the slot only when its lease expires
        _logger().warning("could not record the holder of %s: %s", limit_name(service), exc)


async def forget_holder(service: str, lease_id: UUID | None) -> None:
    """Record that the holder with `lease_id` let go of the slot (when it is still the one recorded)."""
    holder = await read_holder(service)
    if holder is not None and lease_id is not None and holder.lease_id == lease_id:
        try:
            await _write_row(service, holder_row(None, lease_id, datetime.now(UTC)),
                             f"the slot {limit_name(service)!r} was released by {holder.describe()}")
        except Exception:  # a leftover record names a finished run: the next waiter releases nothing real
            pass


async def release_stale_holder(service: str, me: UUID | None = None) -> str | None:
    """Release the slot of a recorded holder whose flow run has ended (crashed, killed) or is gone, at once
    instead of after a lease that a server may never expire; returns what was released (None: nothing)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    holder = await read_holder(service)
    if holder is None or holder.flow_run_id is None:
        return None
    async with get_client() as client:
        try:
            run = await client.read_flow_run(holder.flow_run_id)
            state, found = (run.state.type.value if run.state else None), True
        except ObjectNotFound:
            state, found = None, False
        why = stale_holder(holder, state, run_found=found, me=me,
                           process_gone=is_gone(holder.process) if holder.process is not None else None)
        if why is None:
            return None
        await client.release_concurrency_slots_with_lease(holder.lease_id)
        # a lease the server no longer knows (lost with a restarted server's memory) released nothing; the
        # record still naming it means nobody acquired after it, so the taken slot is the dead holder's
        limit = await client.read_global_concurrency_limit_by_name(limit_name(service))
        again = await read_holder(service)
        if limit.active_slots >= limit.limit and again is not None and again.lease_id == holder.lease_id:
            await client.release_concurrency_slots(names=[limit_name(service)], slots=1,
                                                   occupancy_seconds=(datetime.now(UTC) - holder.since).total_seconds())
    await forget_holder(service, holder.lease_id)
    message = f"released the slot {limit_name(service)!r} held by {holder.describe()}: {why}"
    _logger().warning("%s", message)
    return message


@asynccontextmanager
async def service_slot(service: str, timeout_s: float = DEFAULT_SLOT_WAIT_S) -> AsyncIterator[float]:
    """Hold the service's slot for the body; yields how long it waited for it (seconds).

    Waits at most `timeout_s` for another validation of the service to finish, saying once whom it waits
    for (flow run, since when); a holder whose flow run has ended (Crashed, Failed, Cancelled) is released
    at once. Raises ServiceLockError (with what to do) when the limit does not exist or the wait gives up;
    the latter names the slot, how long it waited and the flow run holding it."""
    from prefect.concurrency.context import ConcurrencyContext

    name = limit_name(service)
    started = time.monotonic()
    deadline = started + timeout_s
    me = _this_flow_run()
    announced = False
    async with AsyncExitStack() as stack:
        leases = stack.enter_context(ConcurrencyContext())  # where `concurrency` records the granted lease
        while True:
            attempt_s = max(0.05, min(ATTEMPT_S, deadline - time.monotonic()))
            try:
                # one request per attempt, never cut short: a timeout that cancels a request the server has
                # already granted leaks that slot until its lease expires (Prefect's acquisition service
                # wraps the request in the timeout); so no timeout, no retry, and a 423 is "not yet"
                await stack.enter_async_context(concurrency(name, occupy=1, strict=True, max_retries=0,
                                                            lease_duration=LEASE_S, holder=me))
                break
            except ConcurrencySlotAcquisitionError as exc:
                if _locked(exc):
                    if await _release_if_stale(service, me):
                        continue
                    if time.monotonic() >= deadline:
                        raise ServiceLockError(slot_timeout_message(service, timeout_s, await slot_holders(service))
                                               ) from None
                    if not announced:
                        announced = True
                        await _announce_wait(service, timeout_s)
                    await asyncio.sleep(attempt_s)
                    continue
                raise ServiceLockError(
                    f"cannot take the concurrency slot {name!r} for service {service!r}: {exc}. "
                    f"Create it with `prefect gcl create {name} --limit 1` (or run `stagecheck serve` / "
                    "`stagecheck validate`, which create the limits of the services they validate)") from None
        lease_id = leases.cleanup_lease_ids[-1] if leases.cleanup_lease_ids else None
        await _record_holder(service, lease_id)
        stack.push_async_callback(forget_holder, service, lease_id)
        yield time.monotonic() - started


def _locked(exc: ConcurrencySlotAcquisitionError) -> bool:
    """Pure: the acquisition was refused because the slot is taken (423 Locked), not for a missing limit."""
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


async def _announce_wait(service: str, timeout_s: float) -> None:
    """Say once, in the run's log and on the CLI's live display, whom the run waits for."""
    held = await slot_holders(service)
    holder = f"held by {', '.join(held)}" if held else "holder unknown"
    _logger().warning("waiting up to %g s for the concurrency slot %r of service %r: %s", timeout_s,
                      limit_name(service), service, holder)
    progress().stage_started(service, f"lock: waiting up to {timeout_s:g} s for the slot, {holder}")


async def _release_if_stale(service: str, me: ConcurrencyLeaseHolder | None) -> bool:
    try:
        return await release_stale_holder(service, me.id if me else None) is not None
    except Exception as exc:  # the wait goes on; the lease still frees a dead holder's slot in the end
        _logger().warning("could not check the holder of %s: %s", limit_name(service), exc)
        return False


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.logging import get_logger, get_run_logger

    try:
        return get_run_logger()
    except Exception:
        return get_logger("stagecheck.concurrency")


def this_flow_run() -> tuple[UUID | None, str | None]:
    """(id, name) of the flow run this code runs in, or (None, None) outside one."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None, None
    return ctx.flow_run.id, ctx.flow_run.name


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
    run_id, _ = this_flow_run()
    return None if run_id is None else ConcurrencyLeaseHolder(type="flow_run", id=run_id)


async def slot_holders(service: str) -> list[str] | None:
    """Who holds the service's slot: the recorded holder (flow run, since when), else the running flow runs
    (other than this one) tagged with the service.

    Prefect's API does not expose a lease's holder: the holder records itself in an artifact (`SlotHolder`),
    and a validation tags its flow run `service:<name>` before it takes the slot. None when the API fails."""
    recorded = await read_holder(service)
    mine = _this_flow_run()
    if recorded is not None and (mine is None or recorded.flow_run_id != mine.id):
        return [recorded.describe()]
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    me = _this_flow_run()
    run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                               id=FlowRunFilterId(not_any_=[me.id]) if me else None,
                               tags=FlowRunFilterTags(all_=[service_tag(service)]))
    try:
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=run_filter, limit=5)
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
