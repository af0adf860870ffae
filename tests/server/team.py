"""The team set-up, shared by tests/server/test_team_server.py and benchmarks/bench_team_server.py: one
`prefect server start` (on PostgreSQL or SQLite), three process workers on one work pool, the validation
deployment of a throwaway repository of six services (the sample service, short bakes), and twelve
validations (two per service) submitted at once. What happened is read back through the Prefect API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from deployments.definitions import Target
from deployments.serve import Layout, api_url, down, setup, start_server, start_worker, wait_worker_online

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "examples" / "sample-service"
POOL = "stagecheck-team"
WORKERS = 3
SERVICES = 6
RUNS_PER_SERVICE = 2
RUNS_PER_WORKER = -(-SERVICES * RUNS_PER_SERVICE // WORKERS)  # 4: together the workers can hold every run at once
RUNS_DEADLINE_S = 600.0


@dataclass
class TeamProject:
    root: Path
    config: Path
    services: list[str]
    state_dir: str  # the sandbox's

    def request(self, service: str) -> dict[str, Any]:
        return {"config": str(self.config), "services": [service], "sandbox": True, "state_dir": self.state_dir}


def make_project(base: Path, sandbox_state_dir: str, suffix: str) -> TeamProject:
    """A git repository with the sample service and a stagecheck.toml of six services (short bakes)."""
    root = base / "team-repo"
    shutil.copytree(SAMPLE, root / "svc", ignore=shutil.ignore_patterns("README.md"))
    services = [f"tm{n}-{suffix}" for n in range(SERVICES)]
    lines = ['report_dir = "reports"',
             "[probes]", "deadline_s = 30", "consecutive_successes = 2", "initial_backoff_s = 0.1",
             "max_backoff_s = 0.5", "success_interval_s = 0.05",
             "[traffic]", "steps = [100]", "bake_s = 1",
             "[logs]", "settle_s = 5"]
    for name in services:
        lines += ["[[services]]", f'name = "{name}"', 'source_dir = "svc"']
    config = root / "stagecheck.toml"
    config.write_text("\n".join(lines) + "\n")
    for args in (["init", "-q"], ["config", "user.email", "ci@example.com"], ["config", "user.name", "ci"],
                 ["add", "-A"], ["commit", "-qm", "six services"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)
    return TeamProject(root=root, config=config, services=services, state_dir=sandbox_state_dir)


@dataclass
class Team:
    url: str
    server: Layout
    workers: list[Layout]
    deployment_id: UUID
    started_s: float  # server start to all workers online


def start_team(base: Path, port: int, project: TeamProject, *, database_url: str | None = None) -> Team:
    """The server (SQLite under `base`, or `database_url`), the deployment, three workers online."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.params import ValidationRequest

    began = time.monotonic()
    server = Layout(base / "server")
    workers = [Layout(base / f"worker-{n}") for n in range(WORKERS)]
    url = api_url(port)
    try:
        start_server(server, port, database_url=database_url)
        target = Target(name="team", request=ValidationRequest(config=str(project.config), sandbox=True,
                                                                 state_dir=project.state_dir),
                        cron=None, merge_trigger=False)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            done = asyncio.run(setup((target.definition(),), pool=POOL, repo_root=REPO_ROOT))
            # each worker takes at most its share at once (`prefect worker start --limit`), as a team caps what one
            # machine builds at a time: the runs it cannot take stay for the other workers
            records = [start_worker(layout, url, POOL, name=f"team-worker-{n}", query_seconds=1,
                                    limit=RUNS_PER_WORKER)
                       for n, layout in enumerate(workers)]
            for layout, record in zip(workers, records, strict=True):
                asyncio.run(wait_worker_online(POOL, record, layout.worker_log))
    except BaseException:
        stop_team_layouts(server, workers)
        raise
    return Team(url=url, server=server, workers=workers, deployment_id=done.deployment_ids[0],
                started_s=time.monotonic() - began)


def stop_team_layouts(server: Layout, workers: list[Layout]) -> None:
    for layout in [*workers, server]:
        down(layout)


def stop_team(team: Team) -> None:
    stop_team_layouts(team.server, team.workers)


@dataclass
class RunOutcome:
    service: str
    run: Any  # the final FlowRun
    work: tuple[datetime, datetime]  # its per-service task runs, first start to last end
    running_states: int  # how often it entered Running (1: executed once)


@dataclass
class Batch:
    wall_s: float  # submission of the first to the end of the last
    refused: int = 0  # run creations the server answered 503 (SQLite: "database is locked"), then retried
    outcomes: list[RunOutcome] = field(default_factory=list)
    runs_of_deployment: int = 0

    def overhead_s(self, outcome: RunOutcome) -> float:
        """Submission to final state, minus the run's own service work and the time it waited for the other
        run of its service (its slot): scheduling, process start, set-up, reporting, API writes."""
        run = outcome.run
        total = (run.end_time - run.created).total_seconds()
        work = (outcome.work[1] - outcome.work[0]).total_seconds()
        waited = 0.0
        for other in self.outcomes:
            if other is not outcome and other.service == outcome.service:
                start, end = max(run.created, other.work[0]), min(outcome.work[0], other.work[1])
                waited += max(0.0, (end - start).total_seconds())
        return total - work - waited


async def submit_and_wait(team: Team, project: TeamProject) -> Batch:
    """Twelve runs (two per service) created at once; wait until every one is final."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import PrefectHTTPStatusError

    plan = [s for s in project.services for _ in range(RUNS_PER_SERVICE)]
    refused = 0

    async def create(client: PrefectClient, service: str) -> Any:
        """A 503 (after the client's own retries) created nothing: ask again, and count it."""
        nonlocal refused
        for _ in range(10):
            try:
                return await client.create_flow_run_from_deployment(team.deployment_id,
                                                                    parameters=project.request(service))
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503:
                    raise
                refused += 1
        raise AssertionError(f"the server refused to create a run of {service} 10 times")

    async with PrefectClient(api=team.url) as client:
        began = time.monotonic()
        created = await asyncio.gather(*(create(client, service) for service in plan))
        deadline = began + RUNS_DEADLINE_S
        finals: dict[UUID, Any] = {}
        while len(finals) < len(created):
            for run in created:
                if run.id not in finals:
                    now = await client.read_flow_run(run.id)
                    if now.state is not None and now.state.is_final():
                        finals[run.id] = now
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(created) - len(finals)} of {len(created)} runs not final "
                                     f"within {RUNS_DEADLINE_S:g} s")
            await asyncio.sleep(0.5)
        batch = Batch(wall_s=time.monotonic() - began, refused=refused)
        for service, run in zip(plan, created, strict=True):
            final = finals[run.id]
            # task runs reach the server through events, after the flow run's own final state on a busy server:
            # wait for them (a run's stages are what "one run at a time" is about), never guess without them
            spans: list[tuple[datetime, datetime]] = []
            seen_until = time.monotonic() + 60
            while not spans and time.monotonic() < seen_until:
                tasks = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                spans = [(t.start_time, t.end_time) for t in tasks
                         if t.name.endswith(f" · {service}") and t.start_time and t.end_time]
                if not spans:
                    await asyncio.sleep(0.5)
            states = await client.read_flow_run_states(run.id)
            at = final.start_time or final.created
            work: tuple[datetime, datetime] = ((min(s for s, _ in spans), max(e for _, e in spans)) if spans
                                               else (at, at))
            batch.outcomes.append(RunOutcome(service=service, run=final, work=work,
                                             running_states=sum(1 for s in states if s.type == StateType.RUNNING)))
        batch.runs_of_deployment = len(await client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[team.deployment_id]))))
    return batch
