"""What the Prefect API shows of a validation: the failing gate's task run ends Failed (carrying its
stage result), the others Completed, and the runs are named after service, commit and step. Read back
through the Prefect client, against the sandbox, on a temporary Prefect server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.pipeline.test_e2e import baseline, created, run_flow, serving  # noqa: F401  (created: a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


async def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return list(await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))))


async def _verdict_events(service: str, within_s: float = 30) -> list[Any]:
    """The verdict events about `service`, read back through the API's events filter (events reach the
    server asynchronously: awaited, not slept on)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from stagecheck.verdict_events import FAILED_EVENT, PASSED_EVENT, service_resource_id

    deadline = time.monotonic() + within_s
    async with get_client() as client:
        while True:
            page = await client.read_events(filter=EventFilter(
                event=EventNameFilter(name=[PASSED_EVENT, FAILED_EVENT]),
                resource=EventResourceFilter(id=[service_resource_id(service)])), limit=10)
            if page.events or time.monotonic() > deadline:
                return list(page.events)
            await asyncio.sleep(0.5)


async def test_failed_gate_ends_its_task_run_failed_and_runs_are_named(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client

    service = created("states")
    before = baseline(run_clients, service, sample_image.digest_ref)
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": f"proxy.service.{service}", "count": -1, "status": 500})
    try:
        scenario.add_service("svc")
        config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[50, 100]")
        sha = scenario.commit()
        run = await run_flow(scenario, config)  # no git_sha: the flow resolves HEAD and names the run after it
    finally:
        run_clients.admin("DELETE", f"/sandbox/v1/faults?method=proxy.service.{service}")
    assert run.report(service)["decided_by"] == "probe-serving"
    assert serving(run_clients, service) == {before: 100}

    flow_run_id = run.state.state_details.flow_run_id
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
    assert flow_run.name == f"validate-{service}-{sha[:7]}"
    assert f"service:{service}" in flow_run.tags  # the run is found by its service (UI filter, slot holder)
    assert flow_run.state is not None and flow_run.state.is_failed()

    task_runs = await _task_runs(flow_run_id)
    # untagged task runs: Prefect asks the API for tag concurrency slots before every tagged task run
    assert [t.name for t in task_runs if t.tags] == []
    states = {t.name: t.state for t in task_runs}
    failing = f"probe-serving [50 %] · {service}"
    assert failing in states, sorted(states)
    assert states[failing].is_failed()
    assert "probe-serving failed: [50 %] service URL failed" in (states[failing].message or "")
    # the gates before it passed, and so did the rollback that followed
    for name in (f"inspect · {service}", f"build · {service}", "push", f"deploy · {service}",
                 f"probe-tagged · {service}", f"traffic [step 1/2: 50 %] · {service}",
                 f"rollback [probe-serving] · {service}"):
        assert states[name].is_completed(), (name, states[name])

    events = await _verdict_events(service)
    assert [e.event for e in events] == ["stagecheck.validation.failed"]
    event = events[0]
    report = run.report(service)
    assert event.resource["stagecheck.project"] == report["project"]
    assert event.resource["stagecheck.region"] == report["region"]
    assert event.payload["verdict"] == "fail" and event.payload["decided_by"] == "probe-serving"
    assert event.payload["git_sha"] == sha and event.payload["revision"] == report["revision"]["name"]
    assert event.payload["report"].endswith(".json") and service in event.payload["report"]
    assert any(r.id == f"prefect.flow-run.{flow_run_id}" for r in event.related)


async def test_passed_release_emits_its_event(prefect_api: None, scenario: Any, run_clients: Any,
                                              created: Any) -> None:  # noqa: F811
    service = created("event")
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]", bake_s=0)
    sha = scenario.commit()
    run = await run_flow(scenario, config, git_sha=sha, git_ref="refs/heads/main")
    assert run.state.is_completed(), run.state.message
    events = await _verdict_events(service)
    assert [e.event for e in events] == ["stagecheck.validation.passed"]
    payload = events[0].payload
    report = run.report(service)
    assert (payload["verdict"], payload["decided_by"]) == ("pass", None)
    assert (payload["git_sha"], payload["git_ref"]) == (sha, "refs/heads/main")
    assert payload["revision"] == report["revision"]["name"]
    assert events[0].resource["prefect.resource.name"] == service
