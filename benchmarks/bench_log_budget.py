"""The log read budget under load (prints figures): N services baking at once, each wanting a log read
every second for 5 minutes, through one ReadBudget (simulated clock: runs in a few seconds).

    .venv/bin/python benchmarks/bench_log_budget.py [services] [reads_per_minute]

Prints the reads each service got, the most requests started in any 60 s window (Cloud Logging allows
60 per project) and how long a read waited for its slot (which bounds the log side's time to detect).
"""

from __future__ import annotations

import asyncio
import statistics
import sys

from stagecheck.clients.cloudlogging import ReadBudget

SERVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 3
PER_MINUTE = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
DURATION_S = 300.0
WANT_EVERY_S = 1.0


async def main() -> None:
    now = [0.0]
    started: list[float] = []
    waits: list[float] = []
    per_service = [0] * SERVICES

    async def sleep(seconds: float) -> None:  # simulated time: every waiter advances the shared clock
        await asyncio.sleep(0)
        target = now[0] + seconds
        while now[0] < target:
            now[0] = min(target, now[0] + 0.01)
            await asyncio.sleep(0)

    budget = ReadBudget(PER_MINUTE, clock=lambda: now[0], sleep=sleep)

    async def service(index: int) -> None:
        while now[0] < DURATION_S:
            asked = now[0]
            await budget.acquire()
            started.append(now[0])
            waits.append(now[0] - asked)
            per_service[index] += 1
            await sleep(WANT_EVERY_S)

    await asyncio.gather(*(service(i) for i in range(SERVICES)))
    started.sort()
    busiest = max(sum(1 for t in started if s <= t < s + 60.0) for s in started)
    print(f"{SERVICES} services x {DURATION_S:.0f} s, budget {PER_MINUTE:g}/min (burst {budget.burst}):")
    print(f"  reads per service: {per_service}")
    print(f"  most requests started in any 60 s: {busiest} (quota 60)")
    print(f"  wait for a slot: median {statistics.median(waits):.1f} s, max {max(waits):.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
