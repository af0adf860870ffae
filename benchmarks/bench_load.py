"""Benchmark: the load generator's rate, second by second, against real local servers. Prints figures.

    .venv/bin/python benchmarks/bench_load.py [--rates 5,10,25] [--duration 20] [--delay-ms 20]

Two HTTP servers on 127.0.0.1 (starlette on uvicorn, in threads, answering after --delay-ms) stand for the
two tag URLs. For each rate per arm, `run_load` runs for --duration seconds; the requests each server
received are counted per whole second of the run (arrival time from the generator's start). Printed per rate and arm:
the fewest and most requests in any second, the worst deviation from the target, and whether every second is
within 10 % of it; then the median and p99 of the generator's latency (from the intended send time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stagecheck.analysis.config import AnalysisSettings, RequestSpec
from stagecheck.analysis.load import run_load
from stagecheck.analysis.schedule import Arm
from tests.analysis.arm_server import ArmServer, serving


async def one_rate(rps: float, duration: float, delay_s: float) -> None:
    with serving(ArmServer(delay_s=delay_s)) as base, serving(ArmServer(delay_s=delay_s)) as cand:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            for warm in (base, cand):  # one unmeasured request each: imports and connections done
                await client.get(f"{warm.base}/warm-up")
                warm.hits.clear()
            result = await run_load(client, {Arm.BASELINE: base.base, Arm.CANDIDATE: cand.base},
                                    (RequestSpec(path="/"),), AnalysisSettings(rps=rps), duration, seed=1)
        start = result.started  # the same monotonic clock as the servers' arrival times
        for arm, server in ((Arm.BASELINE, base), (Arm.CANDIDATE, cand)):
            per_second = [0] * int(duration)
            for h in server.hits:
                sec = int(h.at - start)
                if sec < len(per_second):
                    per_second[sec] += 1
            worst = max(abs(n - rps) / rps for n in per_second)
            print(f"  {rps:5.1f} rps {arm:9}: per second min {min(per_second)} max {max(per_second)}, "
                  f"worst deviation {worst:6.1%} -> {'within' if worst <= 0.10 else 'OUTSIDE'} 10 % in all "
                  f"{len(per_second)} s; {len(server.hits)} requests")
        lat = sorted(s.latency_ms for s in result.samples)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"  {rps:5.1f} rps latency from intended send: median {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms "
              f"(server delay {delay_s * 1000:.0f} ms); load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="5,10,25")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    args = ap.parse_args()
    print(f"bench_load: {args.duration:.0f} s per rate, server delay {args.delay_ms:.0f} ms, {os.cpu_count()} CPUs")
    for rate in (float(r) for r in args.rates.split(",")):
        asyncio.run(one_rate(rate, args.duration, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
