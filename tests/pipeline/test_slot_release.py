"""A service slot whose holder's flow run has ended (Crashed, as a worker reports a killed flow process) is
released at once by the next run waiting for it, instead of after a lease a server may never expire."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.states import Crashed

from stagecheck.concurrency import (
    LEASE_S,
    SlotHolder,
    ensure_service_limits,
    holder_from_row,
    holder_key,
    holder_row,
    limit_name,
    read_holder,
    service_slot,
    stale_holder,
)
from stagecheck.liveness import ProcessRef


def _hold_slot(service: str) -> tuple[asyncio.Event, asyncio.Event, asyncio.Future[Any]]:
    """A flow run that takes the service's slot, sets `holding`, and keeps the slot until `release` is set."""
    holding, release = asyncio.Event(), asyncio.Event()

    @flow(name=f"holder-{service}", persist_result=False)
    async def holder() -> None:
        async with service_slot(service):
            holding.set()
            await release.wait()

    return holding, release, asyncio.ensure_future(holder(return_state=True))


async def test_a_crashed_holders_slot_is_released_by_the_next_waiter(prefect_api: None) -> None:
    service = f"crash-{uuid.uuid4().hex[:8]}"
    await ensure_service_limits([service])
    holding, release, held = _hold_slot(service)
    try:
        await asyncio.wait_for(holding.wait(), timeout=60)
        recorded = await read_holder(service)
        assert recorded is not None and recorded.flow_run_id is not None
        assert recorded.flow_run_name and recorded.since <= datetime.now(UTC)
        async with get_client() as client:
            # the flow process is gone: its worker reports the run Crashed; the lease is still unexpired
            await client.set_flow_run_state(recorded.flow_run_id, Crashed(message="killed"), force=True)
            assert (await client.read_global_concurrency_limit_by_name(limit_name(service))).active_slots == 1
        # well within the lease: only the release of the crashed holder's lease can let this in
        async with service_slot(service, timeout_s=LEASE_S / 5) as waited:
            assert waited < LEASE_S / 5
            taken = await read_holder(service)
            assert taken is not None and taken.lease_id != recorded.lease_id
            async with get_client() as client:
                assert (await client.read_global_concurrency_limit_by_name(limit_name(service))).active_slots == 1
        assert await read_holder(service) is None  # a normal release forgets the holder
        async with get_client() as client:  # the holder artifact's history, oldest first
            history = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[holder_key(service)])), sort=ArtifactSort.CREATED_DESC)
        rows = [json.loads(str(a.data))[0] for a in reversed(history)]
        assert [(r["state"], r["lease_id"]) for r in rows] == [
            ("held", str(recorded.lease_id)),  # the crashed run took it
            ("released", str(recorded.lease_id)),  # the waiter released its lease
            ("held", str(taken.lease_id)),  # and took the slot
            ("released", str(taken.lease_id))]  # and let go
        assert rows[0]["flow_run_id"] == str(recorded.flow_run_id)
        async with get_client() as client:
            assert (await client.read_global_concurrency_limit_by_name(limit_name(service))).active_slots == 0
    finally:
        release.set()
        await asyncio.wait_for(held, timeout=60)


def test_which_holders_are_stale() -> None:
    run = uuid.uuid4()
    holder = SlotHolder(lease_id=uuid.uuid4(), flow_run_id=run, flow_run_name="validate-web-1234567",
                        since=datetime(2026, 12, 2, 4, 0, tzinfo=UTC))
    for state in ("CRASHED", "FAILED", "CANCELLED", "COMPLETED"):
        assert stale_holder(holder, state, run_found=True, me=None) == f"its flow run ended {state.title()}"
    for alive in ("RUNNING", "PENDING", "PAUSED", "CANCELLING", None):
        assert stale_holder(holder, alive, run_found=True, me=None) is None
    assert "no longer exists" in str(stale_holder(holder, None, run_found=False, me=None))
    assert stale_holder(holder, "CRASHED", run_found=True, me=run) is None  # never this run itself
    assert "'validate-web-1234567'" in holder.describe() and "since 2026-12-02 04:00:00 UTC" in holder.describe()
    killed = holder.model_copy(update={"process": ProcessRef(host="h", pid=4242, started=7)})
    assert stale_holder(killed, "RUNNING", run_found=True, me=None, process_gone=True) == \
        "its process 4242 on h is gone (killed) while the run still shows RUNNING"
    assert stale_holder(killed, "RUNNING", run_found=True, me=None, process_gone=False) is None
    assert stale_holder(killed, "RUNNING", run_found=True, me=None, process_gone=None) is None  # another host
    assert stale_holder(holder, "RUNNING", run_found=True, me=None, process_gone=True) is None  # no process known


def test_a_holder_row_reads_back_as_the_holder_and_a_release_row_as_none() -> None:
    lease, since = uuid.uuid4(), datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    holder = SlotHolder(lease_id=lease, flow_run_id=uuid.uuid4(), flow_run_name="validate-web-1234567", since=since,
                        process=ProcessRef(host="h", pid=4242, started=7))
    row = holder_row(holder, lease, since)
    assert row["state"] == "held" and row["lease_id"] == str(lease) and row["process_pid"] == 4242
    assert holder_from_row(row) == holder
    outside = SlotHolder(lease_id=lease, since=since)  # a process outside any flow run, /proc unreadable
    assert holder_from_row(holder_row(outside, lease, since)) == outside
    released = holder_row(None, lease, since)
    assert released["state"] == "released" and released["lease_id"] == str(lease)
    assert holder_from_row(released) is None
    for foreign in ({"state": "held"}, {"state": "held", "lease_id": "not-a-uuid", "since": "x"}, ["held"], None):
        assert holder_from_row(foreign) is None  # never trusted, never raises


class _Recorder:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []

    def stage_started(self, service: str, stage: str) -> None:
        self.started.append((service, stage))

    def stage_finished(self, service: str, result: object) -> None:
        pass

    def service_finished(self, report: object, path: object) -> None:
        pass


async def test_a_waiting_run_says_at_once_whom_it_waits_for_and_a_live_holder_is_not_released(
        prefect_api: None) -> None:
    from stagecheck.concurrency import ServiceLockError
    from stagecheck.progress import current_progress

    service = f"live-{uuid.uuid4().hex[:8]}"
    await ensure_service_limits([service])
    holding, release, held = _hold_slot(service)
    recorder = _Recorder()
    token = current_progress.set(recorder)
    try:
        await asyncio.wait_for(holding.wait(), timeout=60)
        recorded = await read_holder(service)
        assert recorded is not None
        try:
            async with service_slot(service, timeout_s=4):
                raise AssertionError("the slot of a running holder was taken")
        except ServiceLockError as exc:
            assert recorded.describe() in str(exc)
        [(who, line)] = recorder.started
        assert who == service and line.startswith("lock: waiting up to 4 s for the slot, held by ")
        assert str(recorded.flow_run_id) in line and "holding it since" in line
        assert await read_holder(service) == recorded  # the live holder keeps its slot
    finally:
        current_progress.reset(token)
        release.set()
        await asyncio.wait_for(held, timeout=60)


HOLDER_SCRIPT = """
import asyncio, sys
from prefect import flow
from stagecheck.concurrency import service_slot

@flow(name="killed-holder", persist_result=False)
async def holder() -> None:
    async with service_slot(sys.argv[1]):
        print("holding", flush=True)
        await asyncio.sleep(3600)

asyncio.run(holder())
"""


async def test_a_killed_holder_whose_run_still_shows_running_is_released_at_once(prefect_api: None) -> None:
    """What a SIGKILLed `stagecheck validate` leaves: its temporary server dies with it, so its run stays Running
    and its lease is never reaped; the holder's process is gone, and that frees the slot for the next run."""
    import os
    import signal
    import sys

    from prefect.settings import get_current_settings

    service = f"killed-{uuid.uuid4().hex[:8]}"
    await ensure_service_limits([service])
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER_SCRIPT, service,
                                                 stdout=asyncio.subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=120)
        assert line.decode().strip() == "holding"
        recorded = await read_holder(service)
        assert recorded is not None and recorded.process is not None and recorded.process.pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    async with get_client() as client:
        run = await client.read_flow_run(recorded.flow_run_id)  # type: ignore[arg-type]
        assert run.state is not None and run.state.type.value == "RUNNING"  # nobody told the server
        assert (await client.read_global_concurrency_limit_by_name(limit_name(service))).active_slots == 1
    async with service_slot(service, timeout_s=LEASE_S / 5) as waited:  # well within the lease
        assert waited < LEASE_S / 5
        taken = await read_holder(service)
        assert taken is not None and taken.lease_id != recorded.lease_id
    async with get_client() as client:
        assert (await client.read_global_concurrency_limit_by_name(limit_name(service))).active_slots == 0
