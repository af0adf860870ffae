"""The project's Cloud Logging read budget is the Prefect server's rate limit: readers in separate
processes (flow runs on different workers) share one budget, and reads waiting at once in one process
still share one request. Real `prefect server start`, real google-cloud-logging client, the sandbox's
Logging API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployments.serve import prefect_env
from sandbox.logstore import container_entry
from stagecheck.clients.read_quota import read_limit_name
from tests.sandbox.logging_server import serve_logging
from tests.server.conftest import REPO_ROOT, LocalServer

BURST, PER_SECOND = 3, 1.0  # the reader's burst; reads_per_minute = 60
READS_EACH = 5

pytestmark = pytest.mark.server


def _starts(arrivals: list[float], requests: list[str]) -> list[float]:
    return sorted(at for at, what in zip(arrivals, requests, strict=True) if what.endswith("/entries:list"))


def test_two_reader_processes_share_the_projects_budget_on_the_server(prefect_server: LocalServer,
                                                                      tmp_path: Path) -> None:
    project = f"quota-{uuid.uuid4().hex[:8]}"
    go = tmp_path / "go"
    env = prefect_env(prefect_server.layout, prefect_server.url, os.environ)
    with serve_logging(project) as api:
        argv = [sys.executable, "-m", "tests.server.read_logs", api.endpoint, api.credentials_file, project,
                str(READS_EACH), str(go)]
        readers = [subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
                   for _ in range(2)]
        try:
            for reader in readers:  # both have their reader before either reads
                assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
            go.touch()
            outputs = [json.loads(reader.communicate(timeout=120)[0]) for reader in readers]
        finally:
            for reader in readers:
                if reader.poll() is None:
                    reader.kill()
        assert [r.returncode for r in readers] == [0, 0]
        starts = _starts(api.arrivals, api.requests)

    assert [o["server"] for o in outputs] == [True, True]
    assert len(starts) == 2 * READS_EACH
    # both processes were reading at once: each began before the other had finished (which of them the server
    # grants a freed slot to is its business: one may well finish all its reads before the other's first)
    assert max(o["began"] for o in outputs) < min(max(o["done"]) for o in outputs)
    # in any window, at most the burst plus what the decay frees (plus half a slot for the hop from the
    # Prefect server's grant to the Logging API); two in-process budgets would start 10 reads in ~2 s
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= BURST + PER_SECOND * (starts[j] - first + 0.5), (i, j, starts)

    async def limit() -> tuple[int, float]:
        from prefect import get_client

        async with get_client() as client:
            found = await client.read_global_concurrency_limit_by_name(read_limit_name(project))
        return found.limit, found.slot_decay_per_second

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        assert asyncio.run(limit()) == (BURST, pytest.approx(PER_SECOND))


def test_reads_waiting_for_the_servers_slot_share_one_request(prefect_server: LocalServer) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from stagecheck.clients.cloudlogging import LogReader
    from stagecheck.settings import Endpoints, LogRules, ServiceConfig, Settings

    project = f"quota-{uuid.uuid4().hex[:8]}"
    services = [f"svc{n}" for n in range(4)]
    with serve_logging(project) as api:
        start = datetime.now(UTC) - timedelta(minutes=2)
        for n, service in enumerate(services):
            for k in range(n + 1):
                api.store.append(container_entry(project=project, location="europe-west1", service=service,
                                                 revision=f"{service}-00001-aaa", stream="stdout",
                                                 line=f"{service} line {k}", timestamp=start + timedelta(seconds=k)))
        settings = Settings(project=project, region="europe-west1", registry="127.0.0.1:5000/x",
                            services=tuple(ServiceConfig(name=s) for s in services),
                            logs=LogRules(reads_per_minute=60),
                            endpoints=Endpoints(logging_api=api.endpoint, credentials_file=api.credentials_file))

        async def scenario() -> list[list[str]]:
            async with get_client() as client:  # a team's limit of one slot: the reader keeps the server's
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                    name=read_limit_name(project), limit=1, slot_decay_per_second=0.5))
            reader = LogReader(settings)
            assert reader.server_budget is not None
            await reader.server_budget.acquire()  # the one slot is spent: every read below waits ~2 s
            reads = await asyncio.gather(*(reader.read_revision(service=s, revision=f"{s}-00001-aaa", start=start)
                                           for s in services))
            return [[e["textPayload"] for e in read.entries] for read in reads]

        with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
            began = time.monotonic()
            texts = asyncio.run(scenario())
            took = time.monotonic() - began
        calls = _starts(api.arrivals, api.requests)

    assert texts == [[f"{s} line {k}" for k in range(n + 1)] for n, s in enumerate(services)]
    assert len(calls) == 1  # four reads, one entries.list: they waited for the same slot
    assert took >= 1.0  # they did wait for the server's slot (decay 0.5/s after the spent one)
