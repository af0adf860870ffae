"""A validation killed mid-canary (SIGKILL to the worker's flow-run process, the candidate at 50 %) on a real
Prefect server with a real process worker, against the sandbox: the rollout record is on the service, the
worker reports the run Crashed, the crash Automation's recovery run restores the split, and the next
validation of the service starts at once (no slot left held) with the release before the killed one as its
baseline. Every condition is awaited through the APIs (Prefect, Cloud Run), no fixed sleeps."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any
from uuid import UUID

import pytest

from deployments.definitions import RECOVERY_DEPLOYMENT, RECOVERY_FLOW_NAME
from stagecheck.concurrency import limit_name
from stagecheck.rollout import ANNOTATION_KEY, record_from_annotations
from stagecheck.traffic import serving_revisions
from tests.fixtures_sandbox import RunClients
from tests.server.conftest import Deployed
from tests.server.test_deployments import RUNS_DEADLINE_S, _final, client_for, poll

pytestmark = [pytest.mark.server, pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(480)]


def serving_now(run_clients: RunClients, service: str) -> tuple[dict[str, int], Any]:
    """(revision -> percent from traffic_statuses, the service) once it is not reconciling."""
    from stagecheck.clients.cloudrun import split_from_statuses

    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    if svc.reconciling:
        return {}, svc
    return serving_revisions(split_from_statuses(svc.traffic_statuses)), svc


async def _runs_of(client: Any, deployment_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return list(await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))


async def test_a_run_killed_mid_canary_is_recovered_by_the_automation_and_the_next_run_starts_at_once(
        deployed: Deployed, run_clients: RunClients) -> None:
    project, manual = deployed.project, deployed.ids["manual"]
    service = project.services["r"]
    started = time.monotonic()
    async with client_for(deployed.server.url) as client:
        recovery = await client.read_deployment_by_name(f"{RECOVERY_FLOW_NAME}/{RECOVERY_DEPLOYMENT}")

        # the release before: a first deployment of the service
        first = await client.create_flow_run_from_deployment(manual, parameters=project.request("r"))
        first = await poll(lambda: _final(client, first.id), within_s=RUNS_DEADLINE_S)
        assert first.state.is_completed(), first.state.message
        before, _ = serving_now(run_clients, service)
        [old] = before

        # a canary release, killed while its candidate serves 50 %
        canary = await client.create_flow_run_from_deployment(manual, parameters=project.request(
            "r", traffic_steps=[50, 100], canary_hold_s=600, bake_s=0))

        async def at_half() -> str | None:
            served, _ = serving_now(run_clients, service)
            return next((rev for rev, pct in served.items() if rev != old and pct == 50), None)

        candidate = await poll(at_half, within_s=RUNS_DEADLINE_S, interval=0.2)

        async def flow_process() -> int | None:
            run = await client.read_flow_run(canary.id)
            return int(str(run.infrastructure_pid).rsplit(":", 1)[-1]) if run.infrastructure_pid else None

        pid = await poll(flow_process, within_s=30)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        # the durable record the killed run left on the service
        _, svc = serving_now(run_clients, service)
        record = record_from_annotations(dict(svc.annotations), service)
        assert record is not None, dict(svc.annotations)
        assert (record.candidate, record.step, record.flow_run_id) == (candidate, 50, str(canary.id))
        assert serving_revisions(record.before) == {old: 100}

        # the worker notices its process died: the run is Crashed
        crashed = await poll(lambda: _final(client, canary.id), within_s=60)
        assert crashed.state.type.value == "CRASHED", crashed.state

        # the Automation (the recovery deployment's trigger) starts a recovery run for the crashed run
        async def recovery_run() -> Any:
            runs = [r for r in await _runs_of(client, recovery.id) if str(canary.id) in str(r.parameters)]
            return runs[0] if runs and runs[0].state and runs[0].state.is_final() else None

        recovered = await poll(recovery_run, within_s=RUNS_DEADLINE_S)
        assert recovered.state.is_completed(), recovered.state.message
        recovered_at = time.monotonic()
        served, svc = serving_now(run_clients, service)
        assert served == {old: 100}
        assert ANNOTATION_KEY not in svc.annotations
        # ... and the dead run's slot with it: nothing holds the service any more
        limit = await client.read_global_concurrency_limit_by_name(limit_name(service))
        assert limit.active_slots == 0

        # the next validation starts at once, over the release before the killed one
        nxt = await client.create_flow_run_from_deployment(manual, parameters=project.request("r"))
        nxt = await poll(lambda: _final(client, nxt.id), within_s=RUNS_DEADLINE_S)
        assert nxt.state.is_completed(), nxt.state.message
        report = json.loads((project.root / "reports" / f"{service}-latest.json").read_text())
        assert report["verdict"] == "pass" and report["previous_revision"]["name"] == old
        assert serving_revisions(_targets(report["traffic_before"])) == {old: 100}
        assert "lock" not in [s["name"] for s in report["stages"]]
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[nxt.id])))
        assert not [log.message for log in logs if "waiting up to" in log.message]
    crashed_ts = crashed.state.timestamp
    print(f"\nkill -> recovered: {recovered_at - killed_at:.1f} s (Crashed -> recovery run created "
          f"{(recovered.created - crashed_ts).total_seconds():.1f} s, -> started "
          f"{(recovered.start_time - crashed_ts).total_seconds():.1f} s, -> ended "
          f"{(recovered.end_time - crashed_ts).total_seconds():.1f} s); whole test: {time.monotonic() - started:.1f} s")


def _targets(raw: list[dict[str, Any]]) -> list[Any]:
    from stagecheck.model import TrafficTarget

    return [TrafficTarget(**t) for t in raw]
