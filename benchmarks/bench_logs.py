"""Benchmark: log analysis throughput. Prints figures; not a test.

    .venv/bin/python benchmarks/bench_logs.py [--entries 200000] [--repeat 3]

Builds N synthetic entries of one revision in the sandbox's own entry shapes (a third request logs
with a status mix, a third JSON lines with severities and messages carrying ids and numbers, a third
stderr lines including tracebacks), then measures, median of --repeat:

  parse      Logging API JSON -> LogRecord (`record_from_entry_dict`)
  summarise  signature grouping + severity / crash classification + request counting (`summarise`)
  compare    the judge's comparison against a previous window's summary (`compare`)
  fetch      the same entries read through the real google-cloud-logging client (REST, page size
             1000, the sandbox's service-account key) from the sandbox's Logging API (sandbox.logapi over
             a sandbox.logstore.LogStore, with its auth middleware, served on 127.0.0.1 by uvicorn in this
             process), via the pipeline's LogReader. For this throughput figure the sandbox's entries.list
             quota (60/min, Cloud Logging's) and the reader's budget (30/min) are lifted; the budget-bound
             ceiling a run really reads at is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox.logapi import ListQuota  # noqa: E402
from sandbox.logstore import container_entry, request_entry  # noqa: E402
from stagecheck.clients.cloudlogging import LogReader, ReadBudget  # noqa: E402
from stagecheck.log_analysis import compare, record_from_entry_dict, summarise  # noqa: E402
from stagecheck.settings import Endpoints, LogRules, ServiceConfig, Settings  # noqa: E402
from tests.sandbox.logging_server import serve_logging  # noqa: E402

PROJECT, REGION, SERVICE, REVISION = "bench-project", "europe-west1", "shop", "shop-00042"

MESSAGES = [
    "payment backend timeout after {n} ms (request id {id})",
    "user {id} logged in from 10.0.{a}.{b}",
    "cache miss for key order:{n}",
    "retrying upstream call #{a} to https://api.example.com/v1/items/{n}",
    "slow query took {n} ms: SELECT * FROM orders WHERE id = {n}",
]
TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/app/main.py", line {a}, in handler',
    "RuntimeError: connection pool exhausted",
]


def synthetic_entries(count: int, start: datetime, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []
    common: dict[str, Any] = {"project": PROJECT, "location": REGION, "service": SERVICE, "revision": REVISION}
    for index in range(count):
        at = start + timedelta(milliseconds=index)
        fill = {"n": rng.randint(1000, 99999), "id": f"{rng.getrandbits(24):06x}", "a": rng.randint(1, 250),
                "b": rng.randint(1, 250)}  # fmt: skip
        kind = index % 3
        if kind == 0:
            status = rng.choices([200, 201, 404, 500, 503], weights=[80, 5, 8, 4, 3])[0]
            entry = request_entry(**common, method="GET", url=f"https://shop.run.app/items/{fill['n']}",
                                  status=status, latency_s=rng.random() / 10, timestamp=at)  # fmt: skip
        elif kind == 1:
            severity = rng.choices(["INFO", "WARNING", "ERROR", "DEBUG"], weights=[60, 15, 10, 15])[0]
            line = json.dumps({"severity": severity, "message": rng.choice(MESSAGES).format(**fill)})
            entry = container_entry(**common, stream="stdout", line=line, timestamp=at)
        else:
            line = rng.choice(TRACEBACK).format(**fill) if rng.random() < 0.1 else f"worker {fill['a']} ok"
            entry = container_entry(**common, stream="stderr", line=line, timestamp=at)
        entries.append(entry)
    return entries


CPU: dict[str, float] = {}


def timed(repeat: int, fn: Any, label: str = "") -> tuple[float, Any]:
    """Median wall seconds (and, in CPU[label], median CPU seconds of this process: steadier on a
    busy machine) of `repeat` calls; the last call's value."""
    times, cpu, value = [], [], None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        value = fn()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    CPU[label] = statistics.median(cpu)
    return statistics.median(times), value


def without_insert_ids(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        key: [{k: v for k, v in g.items() if k != "insert_ids"} for g in value] if key in ("groups", "crashes") else value
        for key, value in summary.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = datetime.now(UTC) - timedelta(hours=1)
    entries = synthetic_entries(args.entries, start)
    window = (start - timedelta(seconds=1), start + timedelta(milliseconds=args.entries + 1000))
    # what the Logging API returns (JSON); the store shapes timestamps etc. exactly as the sandbox does
    api_entries = [json.loads(json.dumps(e, default=str)) for e in entries]
    n = len(api_entries)
    print(f"{n} synthetic entries of one revision; python {sys.version.split()[0]}")
    parse_s, records = timed(args.repeat, lambda: [record_from_entry_dict(e) for e in api_entries], "parse")
    summarise_s, summary = timed(
        args.repeat, lambda: summarise(records, revision=REVISION, window=window), "summarise"
    )
    previous = summarise(records[: n // 2], revision=REVISION, window=window)
    compare_s, _ = timed(args.repeat, lambda: compare(summary, previous, LogRules()))
    print(f"  parse      {parse_s:6.2f} s  {n / parse_s:10,.0f} entries/s (CPU: {n / CPU['parse']:,.0f}/s)")
    print(f"  summarise  {summarise_s:6.2f} s  {n / summarise_s:10,.0f} entries/s (CPU: {n / CPU['summarise']:,.0f}/s)  "
          f"({len(summary.groups)} signature groups)")
    print(f"  compare    {compare_s:6.3f} s")

    with serve_logging(PROJECT, quota=ListQuota(per_minute=10**9)) as api:
        for entry in entries:
            api.store.append(entry)
        settings = Settings(project=PROJECT, region=REGION, registry="127.0.0.1:5000/unused", services=(ServiceConfig(name=SERVICE),),
                            endpoints=Endpoints(logging_api=api.endpoint, credentials_file=api.credentials_file))
        reader = LogReader(settings)
        reader.budget = ReadBudget(per_minute=10**9, burst=10**6)  # lifted: the client's throughput alone

        def fetch() -> list[dict[str, Any]]:
            return asyncio.run(reader.revision_entries(service=SERVICE, revision=REVISION, start=window[0],
                                                       end=window[1], max_entries=n))  # fmt: skip

        fetch_s, fetched = timed(args.repeat, fetch, "fetch")
    pages = -(-len(fetched) // 1000)
    print(f"  fetch      {fetch_s:6.2f} s  {len(fetched) / fetch_s:10,.0f} entries/s  "
          f"({len(fetched)} entries in {pages} pages of <= 1000, real client, sandbox Logging API in-process)")
    rules = LogRules()
    ceiling = (rules.reads_per_minute + 3) * 1000 / 60  # a minute's budget (+ the burst of 3) of full pages
    print(f"  a run's reads are bound by the budget instead: {rules.reads_per_minute}/min (+ a burst of 3) "
          f"of <= 1000 entries, at most {ceiling:,.0f} entries/s in any minute")
    fetched_records = [record_from_entry_dict(e) for e in fetched]
    end_to_end = summarise(fetched_records, revision=REVISION, window=window)
    same = without_insert_ids(end_to_end.to_dict()) == without_insert_ids(summary.to_dict())
    print(f"  the fetched entries summarise like the synthetic ones (the store adds insertIds): {same}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
