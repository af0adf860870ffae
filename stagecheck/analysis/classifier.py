"""Kayenta's Mann-Whitney metric classifier, ported: High / Low / Pass / Nodata for one metric.

Source: spinnaker/kayenta `kayenta-judge` (classifiers/metric/MannWhitneyClassifier.scala,
BaseMetricClassifier.scala, stats/EffectSizes.scala; Apache-2.0). A metric is High when the lower bound
of the shift's confidence interval exceeds `tolerance` x |Hodges-Lehmann estimate| (and the effect size
reaches its threshold); Kayenta's NetflixACAJudge uses tolerance 0.25 at 98 % confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.stats import rankdata

from stagecheck.analysis.mannwhitney import mann_whitney_u_test


class Label(StrEnum):
    PASS = "Pass"
    HIGH = "High"
    LOW = "Low"
    NODATA = "Nodata"
    NODATA_FAIL = "NodataFailMetric"


class Direction(StrEnum):
    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


@dataclass(frozen=True)
class MetricClassification:
    label: Label
    reason: str | None
    deviation: float  # mean ratio experiment/control (NaN when a mean is 0)
    critical: bool
    estimate: float | None = None  # Hodges-Lehmann shift, experiment - control
    interval: tuple[float, float] | None = None


def mean_ratio(control: np.ndarray, experiment: np.ndarray) -> float:
    c, e = float(np.mean(control)), float(np.mean(experiment))
    return math.nan if c == 0.0 or e == 0.0 else e / c


def cles(control: np.ndarray, experiment: np.ndarray) -> float:
    """Common-language effect size (Vargha & Delaney): share of pairs where experiment > control."""
    m, n = len(experiment), len(control)
    ranks = rankdata(np.concatenate((experiment, control)), method="average")
    return float((2 * ranks[:m].sum() - m * (m + 1)) / (2 * n * m))


@dataclass(frozen=True)
class MannWhitneyClassifier:
    tolerance: float = 0.25
    conf_level: float = 0.95
    effect_size_thresholds: tuple[float, float] = (1.0, 1.0)  # (allowed decrease, allowed increase)
    critical_thresholds: tuple[float, float] = (1.0, 1.0)
    effect_size_measure: str = "meanRatio"  # or "cles"
    seed: int = 0  # Kayenta adds Gaussian noise when both arms are constant; ours is seeded

    def classify(
        self,
        control: Sequence[float] | np.ndarray,
        experiment: Sequence[float] | np.ndarray,
        direction: Direction = Direction.EITHER,
        *,
        name: str = "metric",
        nan_strategy: str = "remove",
        critical: bool = False,
        data_required: bool = False,
    ) -> MetricClassification:
        c = np.asarray(control, dtype=float)
        e = np.asarray(experiment, dtype=float)
        if e.size == 0 or c.size == 0:
            if nan_strategy == "remove":
                reason = f"Missing data for {name}"
                if data_required and not critical:
                    return MetricClassification(Label.NODATA_FAIL, reason, 1.0, False)
                return MetricClassification(Label.NODATA, reason, 1.0, critical)
            return MetricClassification(Label.PASS, None, 1.0, False)
        if np.array_equal(np.sort(e), np.sort(c)):
            return MetricClassification(Label.PASS, f"The canary and baseline data are identical for {name}", 1.0, False)
        if np.unique(np.concatenate((e, c))).size == 1:
            return MetricClassification(Label.PASS, None, 1.0, False)

        if np.unique(e).size == 1 and np.unique(c).size == 1:
            rng = np.random.default_rng(self.seed)
            e = e + rng.normal(0.0, abs(e[0]) * 1e-5, e.size)
            c = c + rng.normal(0.0, abs(c[0]) * 1e-5, c.size)
        result = mann_whitney_u_test(e, c, self.conf_level)
        low, high = result.confidence_interval
        bound = self.tolerance * abs(result.estimate)
        deviation = mean_ratio(c, e)
        effect = cles(c, e) if self.effect_size_measure == "cles" else deviation
        nan_effect = math.isnan(effect)
        up = direction in (Direction.INCREASE, Direction.EITHER)
        down = direction in (Direction.DECREASE, Direction.EITHER)
        if up and low > bound and (nan_effect or effect >= self.effect_size_thresholds[1]):
            label: Label = Label.HIGH
            crit = critical and (nan_effect or effect >= self.critical_thresholds[1])
        elif down and high < -bound and (nan_effect or effect <= self.effect_size_thresholds[0]):
            label = Label.LOW
            crit = critical and (nan_effect or effect <= self.critical_thresholds[0])
        else:
            label, crit = Label.PASS, False
        why = None if label is Label.PASS else f"{name} was classified as {label}{' (Critical)' if crit else ''}"
        return MetricClassification(label, why, deviation, crit, result.estimate, (low, high))
