"""The judge: two arms' per-request samples in, one decision out (pure).

Per metric a classification (Kayenta's labels), then Kayenta's weighted-sum score (each metric its own
group, equal weights) and Pass/Marginal/Fail, with our rules on top: the family-wise `alpha` is split
over the metrics (Bonferroni), a metric with fewer than `min_samples` per arm is Nodata, and a Nodata
metric makes the outcome Nodata, never Pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stagecheck.analysis.classifier import Direction, Label, MannWhitneyClassifier
from stagecheck.analysis.config import AnalysisSettings, Metric, OnInconclusive
from stagecheck.analysis.errors import error_test
from stagecheck.analysis.scorer import MetricResult, ScoreLabel, summarise
from stagecheck.analysis.tail import tail_test
from stagecheck.analysis.windows import TAIL_Q
from stagecheck.model import Status


@dataclass(frozen=True)
class ArmSamples:
    latencies_ms: tuple[float, ...]  # answered requests (status < 400), from the intended send time
    requests: int  # judged requests (429s excluded)
    errors: int  # 4xx (not 429), 5xx, timeouts, connection failures

    @classmethod
    def of(cls, latencies_ms: Sequence[float] | np.ndarray, requests: int, errors: int) -> ArmSamples:
        return cls(tuple(float(v) for v in latencies_ms), requests, errors)


@dataclass(frozen=True)
class MetricVerdict:
    metric: Metric
    label: Label
    critical: bool
    reason: str | None
    n_baseline: int
    n_candidate: int
    baseline_value: float | None  # median / quantile (ms) or error share
    candidate_value: float | None
    estimate: float | None = None  # Hodges-Lehmann shift (ms), latency_p50 only
    interval: tuple[float, float] | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Judgement:
    metrics: tuple[MetricVerdict, ...]
    score: float
    outcome: ScoreLabel
    reason: str | None
    alpha_per_metric: float
    confidence: float  # of the Mann-Whitney interval


def _q(values: np.ndarray, q: float) -> float | None:
    return float(np.quantile(values, q)) if values.size else None


def _latency_p50(b: np.ndarray, c: np.ndarray, s: AnalysisSettings, confidence: float) -> MetricVerdict:
    m = Metric.LATENCY_P50
    if min(b.size, c.size) < s.min_samples:
        why = f"{m}: {b.size}/{c.size} samples (baseline/candidate); needs {s.min_samples} per arm"
        return MetricVerdict(m, Label.NODATA, False, why, b.size, c.size, _q(b, 0.5), _q(c, 0.5))
    res = MannWhitneyClassifier(tolerance=s.tolerance, conf_level=confidence).classify(
        b, c, Direction.INCREASE, name=m)
    return MetricVerdict(m, res.label, res.critical, res.reason, b.size, c.size, _q(b, 0.5), _q(c, 0.5),
                         res.estimate, res.interval)


def judge(baseline: ArmSamples, candidate: ArmSamples, settings: AnalysisSettings) -> Judgement:
    s = settings
    alpha = s.alpha / len(s.metrics)
    confidence = 1 - 2 * alpha  # two-sided interval, one side (High) decides
    b = np.asarray(baseline.latencies_ms, dtype=float)
    c = np.asarray(candidate.latencies_ms, dtype=float)
    verdicts: list[MetricVerdict] = []
    for m in s.metrics:
        if m is Metric.LATENCY_P50:
            verdicts.append(_latency_p50(b, c, s, confidence))
        elif m in TAIL_Q:
            t = tail_test(b, c, TAIL_Q[m], alpha=alpha, tolerance=s.tolerance, min_shift_ms=s.tail_min_shift_ms,
                          min_exceedances=s.min_tail_exceedances, name=m)
            verdicts.append(MetricVerdict(m, t.label, False, t.reason, b.size, c.size, _q(b, TAIL_Q[m]),
                                          _q(c, TAIL_Q[m]), p_value=t.p_value))
        else:
            e = error_test(baseline.errors, baseline.requests, candidate.errors, candidate.requests, alpha=alpha,
                           min_increase=s.error_min_increase, ceiling=s.error_ceiling, min_requests=s.min_samples)
            verdicts.append(MetricVerdict(m, e.label, e.critical, e.reason, baseline.requests, candidate.requests,
                                          e.rate_baseline, e.rate_candidate, p_value=e.p_value))
    results = [MetricResult(v.metric, v.label, v.metric, v.critical, v.reason) for v in verdicts]
    scored, outcome = summarise(results, s.pass_score, s.marginal_score)
    reasons = [v.reason for v in verdicts if v.reason and v.label is not Label.PASS]
    reason = scored.reason or ("; ".join(reasons) if reasons else None)
    return Judgement(tuple(verdicts), scored.summary, outcome, reason, alpha, confidence)


def gate(outcome: ScoreLabel, settings: AnalysisSettings) -> Status:
    """The stage status of an outcome: Pass passes, Fail fails, Marginal and Nodata as configured."""
    if outcome is ScoreLabel.PASS:
        return Status.PASS
    if outcome is ScoreLabel.FAIL:
        return Status.FAIL
    policy = settings.on_marginal if outcome is ScoreLabel.MARGINAL else settings.on_inconclusive
    return Status.FAIL if policy is OnInconclusive.FAIL else Status.WARN

