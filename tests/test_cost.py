from __future__ import annotations

import pytest

from stagecheck.cost import (
    SECONDS_PER_MONTH,
    estimate_monthly_cost,
    estimate_revision_cost,
    parse_cpu,
    parse_memory_gib,
)
from stagecheck.model import RevisionInfo
from stagecheck.settings import PriceTable


@pytest.mark.parametrize(
    ("text", "vcpu"), [("1", 1.0), ("2", 2.0), ("0.5", 0.5), ("1000m", 1.0), ("250m", 0.25)]
)
def test_parse_cpu(text: str, vcpu: float) -> None:
    assert parse_cpu(text) == pytest.approx(vcpu)


@pytest.mark.parametrize(
    ("text", "gib"), [("512Mi", 0.5), ("2Gi", 2.0), ("128Mi", 0.125), ("1024Mi", 1.0), ("1073741824", 1.0)]
)
def test_parse_memory(text: str, gib: float) -> None:
    assert parse_memory_gib(text) == pytest.approx(gib)


@pytest.mark.parametrize("bad", ["", "one", "-1", "0", "1.5x", "m"])
def test_bad_cpu_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="cpu"):
        parse_cpu(bad)


@pytest.mark.parametrize("bad", ["", "512Xi", "0Mi", "lots", "-512Mi"])
def test_bad_memory_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory_gib(bad)


def test_scale_to_zero_cost_matches_hand_computation() -> None:
    # 1e6 requests x 0.2 s x (1 vCPU x 0.000024 + 0.5 GiB x 0.0000025) = 200000 x 0.00002525 = 5.05
    # + 1e6 / 1e6 x 0.40 = 0.40  -> 5.45 USD
    assert estimate_monthly_cost(
        cpu="1", memory="512Mi", min_instances=0, price=PriceTable()
    ) == pytest.approx(5.45)


def test_min_instances_add_idle_cost() -> None:
    # idle: 2 x 2_592_000 s x (2 x 0.0000025 + 1 x 0.0000025) = 2 x 2_592_000 x 0.0000075 = 38.88
    # active: 1e6 x 0.2 x (2 x 0.000024 + 1 x 0.0000025) = 200000 x 0.0000505 = 10.10; requests 0.40
    assert SECONDS_PER_MONTH == 2_592_000
    cost = estimate_monthly_cost(cpu="2000m", memory="1Gi", min_instances=2, price=PriceTable())
    assert cost == pytest.approx(38.88 + 10.10 + 0.40)


def test_custom_price_table_is_used() -> None:
    price = PriceTable(
        vcpu_second=0.0, gib_second=0.0, per_million_requests=1.0, assumed_requests_per_month=3_000_000
    )
    assert estimate_monthly_cost(cpu="1", memory="512Mi", min_instances=0, price=price) == pytest.approx(3.0)


def test_negative_min_instances_rejected() -> None:
    with pytest.raises(ValueError, match="min_instances"):
        estimate_monthly_cost(cpu="1", memory="512Mi", min_instances=-1, price=PriceTable())


def test_revision_cost_needs_cpu_and_memory() -> None:
    assert estimate_revision_cost(RevisionInfo(name="r-00001-abc"), PriceTable()) is None
    assert estimate_revision_cost(None, PriceTable()) is None
    rev = RevisionInfo(name="r-00001-abc", cpu="1", memory="512Mi", min_instances=None)
    assert estimate_revision_cost(rev, PriceTable()) == pytest.approx(5.45)
