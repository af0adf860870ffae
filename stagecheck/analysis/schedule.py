"""The load schedule (pure): which request goes to which arm at which intended time.

Open loop at a fixed rate: one-second blocks; in block k each arm gets round(rps*(k+1)) - round(rps*k)
requests, the same requests for both arms (drawn by weight), in a random interleaved order, at evenly
spaced intended send times (half a step off the second's edges). So both arms see the same mix at the same moments, and each second carries
the target rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from stagecheck.analysis.config import RequestSpec


class Arm(StrEnum):
    BASELINE = "baseline"
    CANDIDATE = "candidate"


@dataclass(frozen=True)
class Slot:
    at_s: float  # intended send time, seconds from the start
    arm: Arm
    request: RequestSpec


def schedule(requests: tuple[RequestSpec, ...], rps: float, duration_s: float, seed: int) -> list[Slot]:
    """Every slot of a run of `duration_s` at `rps` per arm, in time order."""
    if not requests:
        raise ValueError("no request to send")
    rng = random.Random(seed)
    weights = [r.weight for r in requests]
    slots: list[Slot] = []
    whole = int(duration_s)
    for k in range(whole + (1 if duration_s > whole else 0)):
        span = min(1.0, duration_s - k)
        n = round(rps * (k + span)) - round(rps * k)
        if n <= 0:
            continue
        drawn = rng.choices(requests, weights=weights, k=n)
        pairs = [(Arm.BASELINE, r) for r in drawn] + [(Arm.CANDIDATE, r) for r in drawn]
        rng.shuffle(pairs)
        step = span / len(pairs)
        slots.extend(Slot(k + (i + 0.5) * step, arm, req) for i, (arm, req) in enumerate(pairs))
    return slots
