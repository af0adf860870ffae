"""Error rate: a one-sided exact test (Fisher, candidate higher) plus a critical absolute ceiling.

High when the candidate's error share is significantly above the baseline's (p < alpha) and by at least
`min_increase` (absolute); High and critical, whatever the baseline does, when the candidate's share
exceeds `ceiling`. Fewer than `min_requests` per arm: Nodata.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import fisher_exact

from stagecheck.analysis.classifier import Label


@dataclass(frozen=True)
class ErrorResult:
    label: Label
    reason: str | None
    critical: bool = False
    p_value: float | None = None
    rate_baseline: float | None = None
    rate_candidate: float | None = None


def error_test(
    errors_b: int, total_b: int, errors_c: int, total_c: int, *, alpha: float, min_increase: float,
    ceiling: float, min_requests: int,
) -> ErrorResult:
    if min(total_b, total_c) < min_requests:
        return ErrorResult(Label.NODATA, f"error_rate: {total_b}/{total_c} requests (baseline/candidate); "
                           f"needs {min_requests} per arm")
    rb, rc = errors_b / total_b, errors_c / total_c
    table = [[errors_c, total_c - errors_c], [errors_b, total_b - errors_b]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    seen = f"{errors_c}/{total_c} candidate vs {errors_b}/{total_b} baseline requests failed"
    if rc > ceiling:
        return ErrorResult(Label.HIGH, f"error_rate: {seen}, above the {ceiling:.1%} ceiling", True, p, rb, rc)
    if p < alpha and rc - rb >= min_increase:
        return ErrorResult(Label.HIGH, f"error_rate: {seen} (p={p:.2g} < {alpha:.2g})", True, p, rb, rc)
    return ErrorResult(Label.PASS, None, False, p, rb, rc)
