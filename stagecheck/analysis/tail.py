"""Tail latency (p95, p99): a pooled-quantile exceedance count test.

Mann-Whitney compares locations and misses a regression that only moves the tail. Here both arms are
pooled, the pooled q-quantile is the threshold, and each arm's count of samples above it is compared.
Under "no difference" the arm labels are exchangeable, so given the total number of exceedances the
candidate's count is hypergeometric: the one-sided p-value is exact (a permutation test, the same as
a one-sided Fisher exact test on the 2x2 table). The test runs only when each arm expects at least
`min_exceedances` samples above the threshold ((1 - q) x n); below that the metric is Nodata.
High needs significance *and* a practical size: the candidate's q-quantile above the baseline's by more
than `tolerance` (relative) and `min_shift_ms` (absolute).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import hypergeom

from stagecheck.analysis.classifier import Label
from stagecheck.analysis.windows import min_samples


@dataclass(frozen=True)
class TailResult:
    label: Label
    reason: str | None
    threshold_ms: float | None = None
    exceed_baseline: int = 0
    exceed_candidate: int = 0
    p_value: float | None = None
    quantile_baseline: float | None = None
    quantile_candidate: float | None = None


def tail_test(
    baseline: np.ndarray, candidate: np.ndarray, q: float, *, alpha: float, tolerance: float,
    min_shift_ms: float, min_exceedances: float, name: str,
) -> TailResult:
    need = min_samples(q, min_exceedances)
    if min(baseline.size, candidate.size) < need:
        return TailResult(Label.NODATA, f"{name}: {baseline.size}/{candidate.size} samples (baseline/candidate); "
                          f"the p{round(q * 100)} tail test needs {need} per arm")
    pooled = np.concatenate((baseline, candidate))
    threshold = float(np.quantile(pooled, q))
    kb = int(np.count_nonzero(baseline > threshold))
    kc = int(np.count_nonzero(candidate > threshold))
    p = float(hypergeom.sf(kc - 1, pooled.size, candidate.size, kb + kc))
    qb, qc = float(np.quantile(baseline, q)), float(np.quantile(candidate, q))
    big = qc - qb > max(tolerance * qb, min_shift_ms)
    label = Label.HIGH if p < alpha and big else Label.PASS
    reason = (f"{name}: {kc} of {candidate.size} candidate vs {kb} of {baseline.size} baseline requests above "
              f"the pooled p{round(q * 100)} {threshold:.1f} ms (p={p:.2g} < {alpha:.2g})") if label is Label.HIGH else None
    return TailResult(label, reason, threshold, kb, kc, p, qb, qc)
