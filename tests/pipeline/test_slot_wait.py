"""The wait for a service's concurrency slot is bounded and configurable, and when it gives up it
says what it waited for, how long, and which flow run holds the slot (real Prefect server)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_client, tags, task

from stagecheck.concurrency import (
    ServiceLockError,
    ensure_service_limits,
    forget_holder,
    limit_name,
    read_holder,
    service_slot,
    service_tag,
    slot_timeout_message,
)
from stagecheck.settings import ConfigError, load_settings


@task
async def _inspect_stand_in() -> None:
    """A task run inside the slot, as the real walk's stages are."""


async def _give_up_waiting(service: str, holding: asyncio.Event, release: asyncio.Event,
                           timeout_s: float) -> ServiceLockError:
    """Once the holder holds the slot: wait `timeout_s` for it, give up, then let the holder go."""
    await holding.wait()
    with pytest.raises(ServiceLockError) as info:
        async with service_slot(service, timeout_s=timeout_s):
            pass
    release.set()
    return info.value


async def test_slot_wait_gives_up_naming_the_slot_the_time_and_the_holder(prefect_api: None) -> None:
    service = f"slot-{uuid.uuid4().hex[:8]}"
    await ensure_service_limits([service])
    holding, release = asyncio.Event(), asyncio.Event()

    @flow(name=f"holder-{service}", persist_result=False)
    async def holder() -> None:
        async with service_slot(service):
            await _inspect_stand_in()
            holding.set()
            await release.wait()

    holder_state, error = await asyncio.wait_for(asyncio.gather(
        holder(return_state=True), _give_up_waiting(service, holding, release, 1.5)), timeout=120)
    message = str(error)
    assert f"waited 1.5 s for the concurrency slot {limit_name(service)!r}" in message
    assert "held by flow run '" in message
    assert str(holder_state.state_details.flow_run_id) in message
    # once released, the slot is free again: a new wait takes it at once
    async with service_slot(service, timeout_s=30) as waited:
        assert waited < 30


async def test_without_the_holder_record_the_wait_names_the_running_flow_run_tagged_with_the_service(
        prefect_api: None) -> None:
    """The fallback when the holder's record is lost: the running flow runs tagged `service:<name>` (what a
    validation's flow run carries), never the ones of another service."""
    service = f"slot-{uuid.uuid4().hex[:8]}"
    await ensure_service_limits([service])
    holding, release = asyncio.Event(), asyncio.Event()

    @flow(name=f"holder-{service}", persist_result=False)
    async def holder() -> None:
        async with service_slot(service):
            recorded = await read_holder(service)
            assert recorded is not None
            await forget_holder(service, recorded.lease_id)  # the record lost: only the tag names the run
            assert await read_holder(service) is None
            holding.set()
            await release.wait()

    @flow(name=f"bystander-{service}", persist_result=False)
    async def bystander() -> None:  # running at the same time, tagged with another service
        await release.wait()

    with tags(service_tag(service)):  # a task copies the context: the flow run is created with the tag
        held = asyncio.ensure_future(holder(return_state=True))
    with tags(service_tag(f"{service}-other")):
        other = asyncio.ensure_future(bystander(return_state=True))
    holder_state, _, error = await asyncio.wait_for(asyncio.gather(
        held, other, _give_up_waiting(service, holding, release, 1.0)), timeout=120)
    message = str(error)
    assert "held by flow run '" in message
    assert str(holder_state.state_details.flow_run_id) in message
    assert f"bystander-{service}" not in message and message.count("flow run '") == 1


def test_slot_timeout_message_without_a_known_holder() -> None:
    unknown = slot_timeout_message("web", 60, None)
    assert "waited 60 s" in unknown and "could not be read" in unknown
    crashed = slot_timeout_message("web", 60, [])
    assert "lease frees it after at most 300 s" in crashed


def test_slot_wait_is_configurable_and_bounded(tmp_path: Path) -> None:
    config = tmp_path / "stagecheck.toml"
    base = 'project = "demo-project"\nregion = "europe-west1"\nregistry = "r"\n'
    config.write_text(base + 'slot_wait_s = 90\n[[services]]\nname = "web"\n')
    assert load_settings(config, environ={}).slot_wait_s == 90
    assert load_settings(config, environ={"STAGECHECK_SLOT_WAIT_S": "5"}).slot_wait_s == 5
    config.write_text(base + '[[services]]\nname = "web"\n')
    assert load_settings(config, environ={}).slot_wait_s == 1800
    for bad, rule in (("0", "greater than 0"), ("1e9", "at most 86400 seconds")):
        with pytest.raises(ConfigError, match=rule):
            load_settings(config, environ={"STAGECHECK_SLOT_WAIT_S": bad})



@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_dry_run_takes_no_slot_so_it_never_waits_behind_a_release(prefect_api: None, scenario: Any) -> None:
    """A dry run builds and contacts no Cloud Run API: it runs while a release of the service holds the
    slot (before, it waited for it: up to `slot_wait_s`, here 5 s, then FAIL at the lock gate)."""
    from tests.pipeline.test_e2e import run_flow

    service = f"dry-{uuid.uuid4().hex[:8]}"
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}])
    config.write_text("slot_wait_s = 5\n" + config.read_text())  # a top-level key: before the tables
    scenario.commit()
    await ensure_service_limits([service])
    async with service_slot(service):  # a release of the service holds its slot all along
        run = await asyncio.wait_for(run_flow(scenario, config, dry_run=True), timeout=120)
        report = run.report(service)
        assert report["verdict"] == "pass", report
        assert [s["name"] for s in report["stages"]] == ["syntax", "build"]
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(limit_name(service))
        assert limit.active_slots == 1  # only the holder's
