"""The deployments on a real Prefect server with a real process worker, against the sandbox.

One batch of runs is started together (the `batch` fixture) and the tests read what happened
through the API: a merge event (emitted with `stagecheck notify-merge`), two runs for service `a`,
one for `b` (fails its smoke test; `a` and `b` meet in their smoke stage), one for `nolimit` (its concurrency limit was removed:
the run creates it).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from cli.commands import notify_merge
from stagecheck.concurrency import limit_name
from tests.server.conftest import POOL, Deployed

pytestmark = [pytest.mark.server, pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(420)]

RUNS_DEADLINE_S = 300.0


def client_for(url: str) -> Any:
    from prefect.client.orchestration import PrefectClient

    return PrefectClient(api=url)


async def poll(condition: Any, within_s: float, interval: float = 0.5) -> Any:
    """Await `condition()` until it returns something truthy (returned), or fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(interval)


@dataclass
class Window:
    """When a run did its per-service work: its service-tagged task runs (`<stage> · <service>`, the smoke
    stage included: that is where `a` and `b` meet), first start to last end."""

    start: datetime
    end: datetime

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass
class Batch:
    runs: dict[str, Any]  # label -> final FlowRun
    windows: dict[str, Window]
    merge_run: Any


async def _runs_of(client: Any, deployment_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return list(await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC))


async def _all_running(client: Any, run_ids: list[UUID]) -> bool:
    runs = [await client.read_flow_run(run_id) for run_id in run_ids]
    return all(run.state is not None and run.state.is_running() for run in runs)


async def _final(client: Any, run_id: UUID) -> Any:
    run = await client.read_flow_run(run_id)
    return run if run.state is not None and run.state.is_final() else None


async def _window(client: Any, run_id: UUID, service: str) -> Window:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    mine = [t for t in tasks if t.name.endswith(f" · {service}") and t.start_time and t.end_time]
    assert mine, f"run {run_id} has no finished task runs for {service}"
    return Window(start=min(t.start_time for t in mine), end=max(t.end_time for t in mine))


@pytest.fixture(scope="session")
async def batch(deployed: Deployed) -> Batch:
    project, manual = deployed.project, deployed.ids["manual"]
    code = await asyncio.to_thread(notify_merge.main, [
        "--sha", project.sha, "--ref", "refs/heads/main", "--repo", project.repo_name,
        "--api-url", deployed.server.url])
    assert code == 0
    plan = {"a1": "a", "a2": "a", "b": "b", "nolimit": "nolimit"}
    async with client_for(deployed.server.url) as client:
        created = {label: await client.create_flow_run_from_deployment(
            manual, parameters=project.request(key)) for label, key in plan.items()}
        # release `a`'s slot only once both `a` runs are Running: the one holding the slot and the
        # one waiting for it (a flow run is Running while it waits for the concurrency slot)
        try:
            await poll(lambda: _all_running(client, [created["a1"].id, created["a2"].id]), within_s=RUNS_DEADLINE_S)
        finally:
            project.release.touch()
        merge_runs = await poll(lambda: _runs_of(client, deployed.ids["on-merge"]), within_s=60)
        finals = {}
        for label, run in {**created, "merge": merge_runs[0]}.items():
            finals[label] = await poll(lambda run=run: _final(client, run.id), within_s=RUNS_DEADLINE_S)
        windows = {label: await _window(client, finals[label].id, project.services[plan[label]])
                   for label in ("a1", "a2", "b")}
    return Batch(runs=finals, windows=windows, merge_run=finals.pop("merge"))


async def test_run_started_through_the_api_executes_on_the_worker_and_publishes_artifacts(
        deployed: Deployed, batch: Batch) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    service = deployed.project.services["a"]
    for label in ("a1", "a2"):
        run = batch.runs[label]
        assert run.state.is_completed(), f"{label}: {run.state.name}: {run.state.message}"
        assert run.work_pool_name == POOL and run.infrastructure_pid
        assert run.parameters["services"] == [service]
    async with client_for(deployed.server.url) as client:
        artifacts = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[batch.runs["a1"].id])))
    by_key = {a.key: a for a in artifacts}
    report = by_key[f"stagecheck-report-{service}"]
    assert report.description.startswith("PASS") and service in str(report.data)
    assert deployed.project.sha[:7] in str(report.data)
    assert by_key[f"stagecheck-criteria-{service}"].type == "table"


async def test_two_runs_for_the_same_service_serialise(batch: Batch) -> None:
    first, second = sorted(("a1", "a2"), key=lambda label: batch.windows[label].start)
    held, waited = batch.windows[first], batch.windows[second]
    # the second run was already running while the first held the service ...
    assert batch.runs[second].start_time < held.end
    # ... and its service work began only after the first's had ended
    assert waited.start >= held.end, f"service work overlapped: {held} and {waited}"


async def test_runs_for_different_services_overlap(batch: Batch) -> None:
    b = batch.windows["b"]
    assert b.overlaps(batch.windows["a1"]) or b.overlaps(batch.windows["a2"]), (
        f"service b {b} waited for service a {batch.windows['a1']} / {batch.windows['a2']}")


async def test_failed_verdict_posts_a_summary_without_the_secret(deployed: Deployed, batch: Batch) -> None:
    run = batch.runs["b"]
    service = deployed.project.services["b"]
    assert run.state.is_failed()
    posts = [r for r in deployed.webhook.received if r.body.get("stagecheck", {}).get("service") == service]
    assert len(posts) == 1, deployed.webhook.received
    post = posts[0]
    assert post.path.endswith(deployed.webhook.token)  # it went to the URL from the Secret block
    facts = post.body["stagecheck"]
    assert facts["verdict"] == "fail" and facts["failed_gate"]
    assert str(run.id) in facts["flow_run_url"]
    assert service in post.body["text"] and facts["failed_gate"] in post.body["text"]
    assert deployed.webhook.token not in json.dumps(post.body)
    assert not [r for r in deployed.webhook.received
                if r.body.get("stagecheck", {}).get("service") == deployed.project.services["a"]]


async def test_a_missing_concurrency_limit_is_created_by_the_run(deployed: Deployed, batch: Batch) -> None:
    """A deployment in a user's own pool has no setup step: the run creates the limit it needs (1 slot)
    instead of failing at the lock gate."""
    run = batch.runs["nolimit"]
    service = deployed.project.services["nolimit"]
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    report = json.loads((deployed.project.root / "reports" / f"{service}-latest.json").read_text())
    assert report["verdict"] == "pass"
    assert "lock" not in [s["name"] for s in report["stages"]]
    async with client_for(deployed.server.url) as client:
        limit = await client.read_global_concurrency_limit_by_name(limit_name(service))
    assert limit.limit == 1 and limit.active


async def test_merge_event_starts_a_run_for_its_sha(deployed: Deployed, batch: Batch) -> None:
    project = deployed.project
    run = batch.merge_run
    request = run.parameters
    assert request["git_sha"] == project.sha and request["git_ref"] == "refs/heads/main"
    assert request["services"] == [project.services["m"]] and request["dry_run"] is True
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    report = json.loads((project.root / "reports" / f"{project.services['m']}-latest.json").read_text())
    assert report["git_sha"] == project.sha


def next_six_am(tz: ZoneInfo, now: datetime) -> datetime:
    local = now.astimezone(tz)
    candidate = local.replace(hour=6, minute=0, second=0, microsecond=0)
    return candidate if candidate > local else candidate + timedelta(days=1)


async def test_scheduled_deployment_has_its_next_run_at_the_cron_time(deployed: Deployed) -> None:
    tz = ZoneInfo("Europe/Berlin")
    async with client_for(deployed.server.url) as client:
        now = datetime.now(tz)
        scheduled = await poll(lambda: _runs_of(client, deployed.ids["nightly"]), within_s=90)
        assert scheduled[0].auto_scheduled and scheduled[0].state.is_scheduled()
        assert scheduled[0].expected_start_time == next_six_am(tz, now)
        assert all(r.expected_start_time.astimezone(tz).time().isoformat() == "06:00:00" for r in scheduled)
        # the production target: same cron, schedule registered but off, so nothing is scheduled
        production = await client.read_deployment(deployed.ids["production"])
        assert [s.active for s in production.schedules] == [False]
        assert await _runs_of(client, deployed.ids["production"]) == []


async def test_ensure_limits_creates_one_slot_per_service_and_repairs_a_changed_one(prefect_server: Any) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from stagecheck.concurrency import ensure_limits

    async with client_for(prefect_server.url) as client:
        names = await ensure_limits(client, ["svc-x", "svc-y", "svc-x"])
        assert names == [limit_name("svc-x"), limit_name("svc-y")]
        await client.update_global_concurrency_limit(names[0], GlobalConcurrencyLimitUpdate(limit=3, active=False))
        assert await ensure_limits(client, ["svc-x"]) == names[:1]
        for name in names:
            limit = await client.read_global_concurrency_limit_by_name(name)
            assert (limit.limit, limit.active) == (1, True)


async def test_the_run_form_has_flat_parameters_with_descriptions(deployed: Deployed) -> None:
    """The UI's run form (the deployment's parameter schema) offers each parameter on its own, described,
    so `prefect deployment run --param git_sha=...` and triggers can set one without the others."""
    async with client_for(deployed.server.url) as client:
        deployment = await client.read_deployment(deployed.ids["on-merge"])
    properties = deployment.parameter_openapi_schema["properties"]
    assert {"config", "services", "git_sha", "git_ref", "traffic_steps", "canary_hold_s", "bake_s", "dry_run",
            "sandbox", "state_dir"} <= set(properties)
    assert "request" not in properties
    assert all(properties[name].get("description") for name in ("git_sha", "services", "bake_s", "dry_run"))
    assert deployment.parameters["services"] == [deployed.project.services["m"]]
    assert deployment.parameters["dry_run"] is True
    # the merge trigger (an automation running the deployment) sets only the commit and ref
    async with client_for(deployed.server.url) as client:
        automations = await client.read_automations()
    runs = [action for automation in automations for action in automation.actions
            if getattr(action, "deployment_id", None) == deployed.ids["on-merge"]]
    assert len(runs) == 1
    assert runs[0].parameters == {"git_sha": "{{ event.payload.sha }}", "git_ref": "{{ event.payload.ref }}"}
