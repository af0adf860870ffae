"""The team server for real: `prefect server start` on PostgreSQL (Debian's, a cluster of its own on
127.0.0.1), three process workers on one pool, twelve validations of six services (two each) submitted at
once against the sandbox. Every run ends Completed, each executed once by one worker, no run lost or
doubled, and each service validated one run at a time while different services run side by side."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv import postgres
from tests.server.conftest import free_port
from tests.server.team import (
    RUNS_PER_SERVICE,
    SERVICES,
    WORKERS,
    Batch,
    Team,
    TeamProject,
    make_project,
    start_team,
    stop_team,
    submit_and_wait,
)

pytestmark = [pytest.mark.server, pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    server = postgres.start()
    try:
        yield server
    finally:
        postgres.stop(server)


@pytest.fixture(scope="module")
def team_project(tmp_path_factory: pytest.TempPathFactory, sandbox: Any, sample_image: Any) -> TeamProject:
    # sample_image makes sure examples/sample-service/bin/busybox exists (it is gitignored)
    return make_project(tmp_path_factory.mktemp("team"), sandbox.state_dir, uuid.uuid4().hex[:6])


@pytest.fixture(scope="module")
def team(pg: postgres.Postgres, team_project: TeamProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    running = start_team(tmp_path_factory.mktemp("team-prefect"), free_port(), team_project, database_url=pg.url)
    try:
        yield running
    finally:
        stop_team(running)


@pytest.fixture(scope="module")
def batch(team: Team, team_project: TeamProject) -> Batch:
    return asyncio.run(submit_and_wait(team, team_project))


def test_the_server_keeps_its_state_in_postgresql(pg: postgres.Postgres, team: Team, batch: Batch) -> None:
    import asyncpg

    async def rows() -> int:
        conn = await asyncpg.connect(pg.url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM flow_run WHERE deployment_id = $1",
                                           team.deployment_id))
        finally:
            await conn.close()

    assert asyncio.run(rows()) == SERVICES * RUNS_PER_SERVICE
    assert not (team.server.database).exists()  # no SQLite file beside it


def test_every_run_reaches_completed_and_none_is_lost_or_doubled(batch: Batch) -> None:
    assert len(batch.outcomes) == SERVICES * RUNS_PER_SERVICE == batch.runs_of_deployment
    states = {o.run.id: o.run.state.type.value for o in batch.outcomes}
    assert set(states.values()) == {"COMPLETED"}, {o.run.name: o.run.state.message for o in batch.outcomes}
    assert [o.running_states for o in batch.outcomes] == [1] * len(batch.outcomes)  # each executed once


def test_each_run_was_taken_by_exactly_one_worker(team: Team, batch: Batch) -> None:
    # several workers may try a run; the server accepts one worker's Pending proposal and aborts the others'
    logs = [Path(layout.worker_log).read_text() for layout in team.workers]
    by_run = {str(o.run.id): [n for n, log in enumerate(logs) if f"submitting flow run '{o.run.id}'" in log
                              and f"Aborted submission of flow run '{o.run.id}'" not in log]
              for o in batch.outcomes}
    assert all(len(workers) == 1 for workers in by_run.values()), by_run
    used = Counter(workers[0] for workers in by_run.values())
    # a worker takes at most RUNS_PER_WORKER (4) runs at once and all twelve are submitted together (a run waiting
    # for its service's slot is Running, holding its worker's place): the others must take the rest
    assert len(used) >= 2, f"all runs went to one of the {WORKERS} workers: {used}"


def test_each_service_is_validated_one_run_at_a_time_and_services_run_side_by_side(batch: Batch) -> None:
    for service in {o.service for o in batch.outcomes}:
        first, second = sorted((o for o in batch.outcomes if o.service == service), key=lambda o: o.work[0])
        assert second.work[0] >= first.work[1], f"{service}: service work overlapped: {first.work} {second.work}"
    edges = sorted([(o.work[0], 1) for o in batch.outcomes] + [(o.work[1], -1) for o in batch.outcomes])
    busiest = max(sum(step for _, step in edges[: i + 1]) for i in range(len(edges)))
    assert busiest >= 2, "no two services were ever validated at the same time"
