"""The wait for a service's concurrency slot is bounded and configurable, and when it gives up it
says what it waited for, how long, and which flow run holds the slot (real Prefect server)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from prefect import flow, tags, task

from stagecheck.concurrency import (
    ServiceLockError,
    ensure_service_limits,
    limit_name,
    service_slot,
    slot_timeout_message,
)
from stagecheck.settings import ConfigError, load_settings


@task
async def _inspect_stand_in() -> None:
    """A task run tagged with the service, as the real walk's stages are while they hold the slot."""


async def test_slot_wait_gives_up_naming_the_slot_the_time_and_the_holder(prefect_api: None) -> None:
    service = f"slot-{uuid.uuid4().hex[:8]}"
    await ensure_service_limits([service])
    holding, release = asyncio.Event(), asyncio.Event()

    @flow(name=f"holder-{service}", persist_result=False)
    async def holder() -> None:
        with tags(f"service:{service}"):
            async with service_slot(service):
                await _inspect_stand_in()
                holding.set()
                await release.wait()

    async def waiter() -> ServiceLockError:
        await holding.wait()
        with pytest.raises(ServiceLockError) as info:
            async with service_slot(service, timeout_s=1.5):
                pass
        release.set()
        return info.value

    holder_state, error = await asyncio.wait_for(asyncio.gather(holder(return_state=True), waiter()), timeout=120)
    message = str(error)
    assert f"waited 1.5 s for the concurrency slot {limit_name(service)!r}" in message
    assert "held by flow run '" in message
    assert str(holder_state.state_details.flow_run_id) in message
    # once released, the slot is free again: a new wait takes it at once
    async with service_slot(service, timeout_s=30) as waited:
        assert waited < 30


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

