"""Kayenta's Mann-Whitney U test with its confidence interval, ported line by line.

Source: spinnaker/kayenta `kayenta-mannwhitney` (MannWhitney.scala, BrentSolver.java; Apache-2.0),
https://github.com/spinnaker/kayenta/tree/master/kayenta-mannwhitney . The interval and the
Hodges-Lehmann estimate are the roots of R's `wilcox.test` normal-approximation function, found by
Kayenta's own Brent solver (tolerance 1e-4, 1000 iterations); a different root finder (scipy's brentq)
lands elsewhere on this step function, so the solver is ported as written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

MAX_ITERATIONS = 1000
TOLERANCE = 1e-4
EPSILON = 2.220446049250313e-16
_ULP0 = math.ulp(0.0)


@dataclass(frozen=True)
class MannWhitneyResult:
    confidence_interval: tuple[float, float]
    estimate: float


def _equals_zero(value: float) -> bool:
    """commons-math `Precision.equals(value, 0)`: equal within one ulp."""
    return abs(value) <= _ULP0


def brent_solve(ax: float, bx: float, fa: float, fb: float, func: Callable[[float], float]) -> float:
    """BrentSolver.solve: a zero of `func` in [ax, bx] given f(ax)=fa, f(bx)=fb (Kayenta's variant)."""
    a, b, c, fc = ax, bx, ax, fa
    if _equals_zero(fa):
        return a
    if _equals_zero(fb):
        return b
    iteration = MAX_ITERATIONS + 1
    while iteration > 0:
        iteration -= 1
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * EPSILON * abs(b) + TOLERANCE / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or _equals_zero(fb):
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:  # quadric inverse interpolation
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0.0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = func(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b  # Kayenta: "failed! TODO: should throw exception."


def wilcoxon_diff(mu: float, quantile: float, x: np.ndarray, y: np.ndarray) -> float:
    """MannWhitney.wilcoxonDiff: the standardised, continuity-corrected W of x-mu vs y, minus `quantile`."""
    x_len = float(len(x))
    y_len = float(len(y))
    ranks = rankdata(np.concatenate((x - mu, y)), method="average")
    _, tie_counts = np.unique(ranks, return_counts=True)
    dz = float(ranks[: len(x)].sum()) - x_len * (x_len + 1) / 2 - x_len * y_len / 2
    correction = (0.0 if math.isnan(dz) else float(np.sign(dz))) * 0.5
    ties = float(np.sum(tie_counts.astype(float) ** 3 - tie_counts))
    sigma = math.sqrt((x_len * y_len / 12) * ((x_len + y_len + 1) - ties / ((x_len + y_len) * (x_len + y_len - 1))))
    if sigma == 0:
        raise ValueError("cannot compute confidence interval when all observations are tied")
    return (dz - correction) / sigma - quantile


def mann_whitney_u_test(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, confidence_level: float = 0.95, mu: float = 0.0
) -> MannWhitneyResult:
    """MannWhitney.mannWhitneyUTest(x, y): interval and estimate of the location shift x - y.

    `mu` is accepted for parity with Kayenta, which ignores it when computing the interval too.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    alpha = 1.0 - confidence_level
    mu_min = float(xa.min() - ya.max())
    mu_max = float(xa.max() - ya.min())

    def find_root(zq: float) -> float:
        f_lower = wilcoxon_diff(mu_min, zq, xa, ya)
        f_upper = wilcoxon_diff(mu_max, zq, xa, ya)
        if f_lower <= 0:
            return mu_min
        if f_upper >= 0:
            return mu_max
        return brent_solve(mu_min, mu_max, f_lower, f_upper, lambda m: wilcoxon_diff(m, zq, xa, ya))

    z_quant = float(norm.ppf(alpha / 2))
    interval = (find_root(-z_quant), find_root(z_quant))
    f_lower = wilcoxon_diff(mu_min, 0, xa, ya)
    f_upper = wilcoxon_diff(mu_max, 0, xa, ya)
    estimate = brent_solve(mu_min, mu_max, f_lower, f_upper, lambda m: wilcoxon_diff(m, 0, xa, ya))
    return MannWhitneyResult(interval, estimate)
