"""The `[price]` table: the prices the monthly cost estimate uses."""

from __future__ import annotations

from stagecheck.settings.rules import Strict


class PriceTable(Strict):
    """Cloud Run list prices (USD, tier 1, request-based billing); override for your region/contract."""

    vcpu_second: float = 0.000024
    gib_second: float = 0.0000025
    per_million_requests: float = 0.40
    idle_vcpu_second: float = 0.0000025  # min-instances idle rate
    idle_gib_second: float = 0.0000025
    assumed_requests_per_month: int = 1_000_000
    assumed_request_s: float = 0.2
