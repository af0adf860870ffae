"""What a request that no instance took within the cold-start hold gets, as Cloud Run answers it."""

from __future__ import annotations

from typing import Any

from sandbox import model
from sandbox.instances import RevisionInstance
from sandbox.logstore import LogStore
from sandbox.proxy import NO_INSTANCE, _no_instance
from sandbox.runlog import RunLog


def _instance(state: Any) -> RevisionInstance:
    spec = model.ContainerSpec(image="img", env=(), command=(), args=(), container_port=8080,
                               memory_bytes=512 * 2**20, cpus=1.0, startup_probe={})
    instance = RevisionInstance(service="shop", revision="shop-00001-abc", spec=spec, runtime=None,  # type: ignore[arg-type]
                                log=RunLog(LogStore("p"), "p", "europe-west1"), startup_timeout_s=240)
    instance.state = state
    return instance


def test_a_request_held_past_the_hold_while_the_instance_starts_gets_429_no_available_instance() -> None:
    response = _no_instance(_instance("STARTING"))
    assert response.status_code == 429 and bytes(response.body).decode() == NO_INSTANCE
    assert NO_INSTANCE == "The request was aborted because there was no available instance."


def test_a_request_whose_instance_failed_to_start_gets_503() -> None:
    assert _no_instance(_instance("STOPPED")).status_code == 503
    assert _no_instance(None).status_code == 503
