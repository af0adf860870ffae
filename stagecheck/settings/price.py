"""The `[price]` table: the prices the monthly cost estimate uses."""

from __future__ import annotations

from stagecheck.settings.rules import Strict


class PriceTable(Strict):
    """Cloud Run list prices (USD, tier 1, request-based billing); override for your region/contract."""

    vcpu_second: float = 0.000024  # USD per vCPU-second while serving requests
    gib_second: float = 0.0000025  # USD per GiB-second of memory while serving requests
    per_million_requests: float = 0.40  # USD per million requests
    idle_vcpu_second: float = 0.0000025  # min-instances idle rate
    idle_gib_second: float = 0.0000025  # USD per GiB-second of an idle min instance
    assumed_requests_per_month: int = 1_000_000  # traffic the monthly estimate assumes
    assumed_request_s: float = 0.2  # seconds of instance time the estimate assumes per request
