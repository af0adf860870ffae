"""Which watch windows the analysis runs in, and the sample sizes its metrics need (pure, light: the flow
imports it, so no numpy or scipy here)."""

from __future__ import annotations

import math

from stagecheck.analysis.config import AnalysisSettings, Metric

TAIL_Q = {Metric.LATENCY_P95: 0.95, Metric.LATENCY_P99: 0.99}


def min_samples(q: float, min_exceedances: float) -> int:
    """Fewest samples per arm for which the q-tail test runs ((1 - q) x n >= min_exceedances)."""
    return math.ceil(min_exceedances / (1 - q) - 1e-9)


def samples_needed(settings: AnalysisSettings) -> int:
    """Per arm, the fewest samples with which every configured metric can be decided (none is Nodata)."""
    tails = [min_samples(TAIL_Q[m], settings.min_tail_exceedances) for m in settings.metrics if m in TAIL_Q]
    return max([settings.min_samples, *tails])


def analyses_window(settings: AnalysisSettings, seconds: float, *, last: bool) -> bool:
    """The last bake is always analysed; a canary hold only when it is long enough to decide every metric
    (a short hold would only say Nodata)."""
    return last or seconds * settings.rps >= samples_needed(settings)
