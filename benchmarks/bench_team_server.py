"""Benchmark: the team server. Twelve validations of six services (two each, short bakes, the sandbox)
submitted at once to three process workers of one `prefect server start`, on PostgreSQL and on SQLite.
Prints figures; not a test (tests/server/test_team_server.py asserts the behaviour).

    python benchmarks/bench_team_server.py [--backends postgresql,sqlite]

Per backend: the wall time from submitting the twelve runs to the last one final; per run, the overhead
(submission to final state, minus the run's own per-service work and the time it waited for its service's
other run: scheduling, worker pick-up, process start, set-up, reports, API writes), median and max; the
pick-up latency (submitted -> Running); and how often the server or a flow run met SQLite's "database is
locked" (lines in the server's and the workers' logs). Uses the running Docker Engine and registry of
STAGECHECK_STATE_DIR (make up); starts its own sandbox, PostgreSQL and Prefect servers, and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from benchmarks._infra import running_infra  # noqa: E402
from localenv import postgres  # noqa: E402
from localenv.control import start, stop  # noqa: E402
from tests.server.team import (  # noqa: E402
    RUNS_PER_SERVICE,
    SERVICES,
    WORKERS,
    Batch,
    Team,
    make_project,
    start_team,
    stop_team,
    submit_and_wait,
)

LOCKED = "database is locked"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locked_lines(team: Team) -> int:
    count = 0
    for layout in [team.server, *team.workers]:
        for log in (layout.server_log, layout.worker_log):
            if log.is_file():
                count += log.read_text(errors="replace").count(LOCKED)
    return count


def figures(name: str, team: Team, batch: Batch) -> str:
    overheads = [batch.overhead_s(o) for o in batch.outcomes]
    pickups = [(o.run.start_time - o.run.created).total_seconds() for o in batch.outcomes if o.run.start_time]
    states = sorted({o.run.state.type.value for o in batch.outcomes})
    return (f"{name:<10} wall {batch.wall_s:6.1f} s | per-run overhead median {statistics.median(overheads):5.1f} s, "
            f"max {max(overheads):5.1f} s | pick-up median {statistics.median(pickups):4.1f} s | "
            f"final states {states} of {len(batch.outcomes)} ({batch.runs_of_deployment} runs on the server) | "
            f"creations refused (503) {batch.refused} | '{LOCKED}' lines {locked_lines(team)} | "
            f"set-up {team.started_s:.1f} s | load (5 min) {os.getloadavg()[1]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="postgresql,sqlite")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    infra = running_infra()
    print(f"{SERVICES * RUNS_PER_SERVICE} validations ({SERVICES} services x {RUNS_PER_SERVICE}) on {WORKERS} "
          f"process workers, submitted at once; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="stagecheck-bench-team-") as tmp:
        work = Path(tmp)
        state = work / "sandbox"
        start(state, docker_host=infra.docker_host, registry=infra.registry)
        try:
            project = make_project(work, str(state), uuid.uuid4().hex[:6])
            warmed = False
            for backend in backends:
                pg = postgres.start() if backend == "postgresql" else None
                try:
                    team = start_team(work / f"prefect-{backend}", free_port(), project,
                                      database_url=pg.url if pg else None)
                    try:
                        if not warmed:  # image layers and the sandbox's first deploys, once, unmeasured
                            asyncio.run(submit_and_wait(team, project))
                            warmed = True
                        print(figures(backend, team, asyncio.run(submit_and_wait(team, project))), flush=True)
                    finally:
                        stop_team(team)
                finally:
                    if pg is not None:
                        postgres.stop(pg)
        finally:
            stop(state)
    print(f"command: python benchmarks/bench_team_server.py --backends {','.join(backends)} "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
