"""Coalesced Logging reads (prints figures; not a test): N services of one project end their bakes
together and run the `logs` stage, through the real LogReader (google-cloud-logging over REST) against
the sandbox's Logging API on 127.0.0.1, with the default budget (30 reads/min, bursts of 3), real time.

    .venv/bin/python benchmarks/bench_log_coalesce.py [--services 3] [--bake-s 10] [--repeat 3]

Each service: a bake of --bake-s reading its revision's new entries every 2 s (oldest first, no slot
past the bake's end, as tasks/bake.py), then the `logs` stage's reads (newest first: the settle read,
then the previous revision's window). Both sides in the same run, interleaved: reads coalesced (one
entries.list serving every read waiting for the same slot) and not (each read its own request). Prints
the requests the sandbox saw, the bake reads each service got, and how long the `logs` stage's reads
took after the bakes ended (median of --repeat), and checks that both sides read the same entries.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox.logstore import container_entry  # noqa: E402
from stagecheck.clients.cloudlogging import LogReader, ReadBudget  # noqa: E402
from stagecheck.settings import Endpoints, LogRules, ServiceConfig, Settings  # noqa: E402
from tests.sandbox.logging_server import LoggingSandbox, serve_logging  # noqa: E402

PROJECT = "bench-coalesce"
REGION = "europe-west1"


def fill(api: LoggingSandbox, services: int, start: datetime) -> None:
    for index in range(services):
        for revision in (f"svc{index}-00001-old", f"svc{index}-00002-new"):
            for n in range(50):
                api.store.append(container_entry(project=PROJECT, location=REGION, service=f"svc{index}",
                                                 revision=revision, stream="stdout", line=f"{revision} {n}",
                                                 timestamp=start + timedelta(seconds=n * 0.5)))


async def one_side(api: LoggingSandbox, services: int, bake_s: float, coalesce: bool,
                   start: datetime) -> tuple[int, list[int], list[float], list[list[str]]]:
    settings = Settings(project=PROJECT, region=REGION, registry="127.0.0.1:5000/x",
                        services=(ServiceConfig(name="svc0"),), logs=LogRules(),
                        endpoints=Endpoints(logging_api=api.endpoint, credentials_file=api.credentials_file))
    ReadBudget._shared.clear()  # a fresh (full) budget per side
    reader = LogReader(settings)
    reader.coalesce = coalesce
    before = sum(1 for r in api.requests if r == "POST /v2/entries:list")
    bake_reads = [0] * services
    logs_s = [0.0] * services
    seen: list[list[str]] = [[] for _ in range(services)]
    ends = time.monotonic() + bake_s

    async def service(index: int) -> None:
        svc = f"svc{index}"
        while time.monotonic() < ends:  # the bake's incremental reads
            read = await reader.read_revision(service=svc, revision=f"{svc}-00002-new", start=start,
                                              max_entries=1000, deadline=ends)
            if read.declined:
                break
            bake_reads[index] += 1
            await asyncio.sleep(max(0.0, min(2.0, ends - time.monotonic())))
        await asyncio.sleep(max(0.0, ends - time.monotonic()))
        began = time.monotonic()  # the logs stage: settle read, then the previous revision's window
        now = datetime.now(UTC)
        current = await reader.read_revision(service=svc, revision=f"{svc}-00002-new", start=start, end=now,
                                             max_entries=1000, newest_first=True)
        previous = await reader.read_revision(service=svc, revision=f"{svc}-00001-old", start=start, end=now,
                                              max_entries=5000, newest_first=True)
        logs_s[index] = time.monotonic() - began
        seen[index] = [e["textPayload"] for e in current.entries + previous.entries]

    await asyncio.gather(*(service(i) for i in range(services)))
    requests = sum(1 for r in api.requests if r == "POST /v2/entries:list") - before
    return requests, bake_reads, logs_s, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=3)
    parser.add_argument("--bake-s", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = datetime.now(UTC) - timedelta(minutes=5)
    results: dict[bool, list[tuple[int, list[int], list[float], list[list[str]]]]] = {True: [], False: []}
    with serve_logging(PROJECT) as api:
        fill(api, args.services, start)
        for _ in range(args.repeat):
            for coalesce in (False, True):
                results[coalesce].append(asyncio.run(one_side(api, args.services, args.bake_s, coalesce, start)))
                time.sleep(6.0)  # the sandbox's own 60/min quota window: not the figure measured here
    same = all(a[3] == b[3] for a, b in zip(results[False], results[True], strict=True))
    print(f"{args.services} services, bake {args.bake_s:g} s then the logs stage; budget 30 reads/min, burst 3; "
          f"median of {args.repeat}, interleaved; same entries read by both sides: {same}")
    for coalesce, runs in results.items():
        label = "coalesced" if coalesce else "one request per read"
        slowest = statistics.median(max(r[2]) for r in runs)
        per_service = [statistics.median(r[2][i] for r in runs) for i in range(args.services)]
        print(f"  {label:<22} entries.list requests {statistics.median(r[0] for r in runs):5.0f}   "
              f"bake reads per service {runs[-1][1]}   logs-stage reads after the bake: "
              f"{', '.join(f'{s:.1f}' for s in per_service)} s (slowest {slowest:.1f} s)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
