"""A rough monthly cost of a Cloud Run revision, to compare a release with the one it replaces.

The model (USD per 30-day month, request-based billing, free tier ignored):

    seconds_per_month = 30 * 24 * 3600 = 2_592_000
    idle     = min_instances * seconds_per_month * (vcpu * idle_vcpu_second + gib * idle_gib_second)
    active   = assumed_requests_per_month * assumed_request_s * (vcpu * vcpu_second + gib * gib_second)
    requests = assumed_requests_per_month / 1_000_000 * per_million_requests
    total    = idle + active + requests

`vcpu` comes from the cpu setting ("1", "2", "0.5", "1000m"), `gib` from memory ("512Mi" = 0.5,
"2Gi" = 2). It ignores request concurrency (each request is billed as if alone on an instance, an
upper bound for active time) and the overlap of active time with min-instances idle time. It is a
comparison figure - the same assumptions on both sides - not a bill.
"""

from __future__ import annotations

import math
import re

from stagecheck.model import RevisionInfo
from stagecheck.settings import PriceTable

SECONDS_PER_MONTH = 30 * 24 * 3600

_CPU_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(m?)\s*$")
_MEMORY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?\s*$")
_MEMORY_FACTORS = {
    None: 1.0,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}


def parse_cpu(cpu: str) -> float:
    """vCPUs of a Cloud Run cpu setting: "1" -> 1.0, "0.5" -> 0.5, "1000m" -> 1.0."""
    match = _CPU_RE.match(str(cpu))
    if not match:
        raise ValueError(f"cpu {cpu!r} is not a CPU amount (like '1', '2', '0.5' or '1000m')")
    value = float(match.group(1)) / (1000.0 if match.group(2) else 1.0)
    if value <= 0:
        raise ValueError(f"cpu {cpu!r} must be more than zero")
    return value


def parse_memory_gib(memory: str) -> float:
    """GiB of a Cloud Run memory setting: "512Mi" -> 0.5, "2Gi" -> 2.0 (also decimal "512M", bytes)."""
    match = _MEMORY_RE.match(str(memory))
    if not match:
        raise ValueError(f"memory {memory!r} is not a memory amount (like '512Mi' or '2Gi')")
    value = float(match.group(1)) * _MEMORY_FACTORS[match.group(2)] / 2.0**30
    if value <= 0:
        raise ValueError(f"memory {memory!r} must be more than zero")
    return value


def estimate_monthly_cost(*, cpu: str, memory: str, min_instances: int, price: PriceTable) -> float:
    """USD per 30-day month under the model in this module's docstring."""
    if isinstance(min_instances, bool) or not isinstance(min_instances, int) or min_instances < 0:
        raise ValueError(f"min_instances must be a whole number >= 0, not {min_instances!r}")
    vcpu = parse_cpu(cpu)
    gib = parse_memory_gib(memory)
    idle = min_instances * SECONDS_PER_MONTH * (vcpu * price.idle_vcpu_second + gib * price.idle_gib_second)
    active = (
        price.assumed_requests_per_month
        * price.assumed_request_s
        * (vcpu * price.vcpu_second + gib * price.gib_second)
    )
    requests = price.assumed_requests_per_month / 1_000_000 * price.per_million_requests
    total = idle + active + requests
    if not math.isfinite(total):
        raise ValueError("the price table gives a non-finite cost")
    return total


def estimate_revision_cost(revision: RevisionInfo | None, price: PriceTable) -> float | None:
    """The estimate for a revision's configuration; None when cpu or memory is unknown."""
    if revision is None or revision.cpu is None or revision.memory is None:
        return None
    return estimate_monthly_cost(
        cpu=revision.cpu, memory=revision.memory, min_instances=revision.min_instances or 0, price=price
    )
