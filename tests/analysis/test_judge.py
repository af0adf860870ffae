"""The judge on constructed samples: each metric's rule, Nodata below the sample minimums, the outcome."""

from __future__ import annotations

import numpy as np
import pytest

from stagecheck.analysis.classifier import Label
from stagecheck.analysis.config import AnalysisSettings, Metric
from stagecheck.analysis.judge import ArmSamples, gate, judge
from stagecheck.analysis.scorer import ScoreLabel
from stagecheck.analysis.windows import analyses_window, min_samples, samples_needed

SETTINGS = AnalysisSettings()


def arm(rng: np.random.Generator, n: int, *, slow_share: float = 0.0, slow_ms: float = 0.0,
        error_share: float = 0.0) -> ArmSamples:
    lat = rng.lognormal(np.log(20.0), 0.3, n)
    lat[rng.random(n) < slow_share] += slow_ms
    errors = int(rng.binomial(n, error_share))
    return ArmSamples.of(lat[errors:], n, errors)


def labels(j) -> dict:
    return {m.metric: m.label for m in j.metrics}


def test_identical_arms_pass() -> None:
    rng = np.random.default_rng(1)
    j = judge(arm(rng, 600), arm(rng, 600), SETTINGS)
    assert j.outcome is ScoreLabel.PASS
    assert set(labels(j).values()) == {Label.PASS}
    assert j.score == 100.0


def test_150ms_on_30_percent_fails() -> None:
    rng = np.random.default_rng(2)
    j = judge(arm(rng, 600), arm(rng, 600, slow_share=0.3, slow_ms=150), SETTINGS)
    assert j.outcome is ScoreLabel.FAIL
    assert labels(j)[Metric.LATENCY_P95] is Label.HIGH
    assert labels(j)[Metric.LATENCY_P99] is Label.HIGH


def test_five_percent_errors_fail_as_critical() -> None:
    rng = np.random.default_rng(3)
    j = judge(arm(rng, 600), arm(rng, 600, error_share=0.05), SETTINGS)
    err = next(m for m in j.metrics if m.metric is Metric.ERROR_RATE)
    assert (err.label, err.critical) == (Label.HIGH, True)
    assert j.outcome is ScoreLabel.FAIL and j.score == 0.0


def test_error_ceiling_fails_even_when_the_baseline_is_as_bad() -> None:
    rng = np.random.default_rng(4)
    j = judge(arm(rng, 600, error_share=0.2), arm(rng, 600, error_share=0.2), SETTINGS)
    err = next(m for m in j.metrics if m.metric is Metric.ERROR_RATE)
    assert err.label is Label.HIGH and "ceiling" in (err.reason or "")


def test_tail_only_regression_is_caught_by_the_tail_test() -> None:
    rng = np.random.default_rng(5)
    j = judge(arm(rng, 600), arm(rng, 600, slow_share=0.05, slow_ms=300), SETTINGS)
    assert labels(j)[Metric.LATENCY_P50] is Label.PASS
    assert labels(j)[Metric.LATENCY_P95] is Label.HIGH
    assert j.outcome is not ScoreLabel.PASS


def test_too_few_samples_for_the_tails_is_nodata_not_pass() -> None:
    rng = np.random.default_rng(6)
    j = judge(arm(rng, 80), arm(rng, 80, slow_share=0.05, slow_ms=300), SETTINGS)
    assert labels(j)[Metric.LATENCY_P95] is Label.NODATA
    assert labels(j)[Metric.LATENCY_P99] is Label.NODATA
    assert j.outcome is ScoreLabel.NODATA


def test_below_min_samples_every_metric_is_nodata() -> None:
    rng = np.random.default_rng(7)
    j = judge(arm(rng, 10), arm(rng, 10), SETTINGS)
    assert set(labels(j).values()) == {Label.NODATA}
    assert j.score == 0.0  # Kayenta: >= 50 % Nodata scores 0
    assert j.outcome is ScoreLabel.NODATA  # could not decide: on_inconclusive says what the stage does


def test_bonferroni_split_and_interval_confidence() -> None:
    j = judge(ArmSamples.of([], 0, 0), ArmSamples.of([], 0, 0), AnalysisSettings(alpha=0.02))
    assert j.alpha_per_metric == pytest.approx(0.005)
    assert j.confidence == pytest.approx(0.99)


@pytest.mark.parametrize(("q", "k", "n"), [(0.95, 5, 100), (0.99, 5, 500), (0.99, 10, 1000)])
def test_tail_minimum(q: float, k: float, n: int) -> None:
    assert min_samples(q, k) == n


def test_unsafe_method_needs_opt_in() -> None:
    with pytest.raises(ValueError, match="allow_unsafe"):
        AnalysisSettings.model_validate({"paths": [{"path": "/x", "method": "post"}]})
    ok = AnalysisSettings.model_validate({"paths": [{"path": "/x", "method": "post", "allow_unsafe": True}]})
    assert ok.paths[0].method == "POST"


def test_rate_cap() -> None:
    with pytest.raises(ValueError):
        AnalysisSettings(rps=26)


@pytest.mark.parametrize(("outcome", "policy", "expected"), [
    (ScoreLabel.PASS, {}, "PASS"), (ScoreLabel.FAIL, {"on_marginal": "warn", "on_inconclusive": "warn"}, "FAIL"),
    (ScoreLabel.MARGINAL, {}, "FAIL"), (ScoreLabel.MARGINAL, {"on_marginal": "warn"}, "WARN"),
    (ScoreLabel.NODATA, {}, "FAIL"), (ScoreLabel.NODATA, {"on_inconclusive": "warn"}, "WARN"),
])
def test_gate(outcome: ScoreLabel, policy: dict, expected: str) -> None:
    assert gate(outcome, AnalysisSettings.model_validate(policy)) == expected


def test_samples_needed_and_which_windows_are_analysed() -> None:
    s = AnalysisSettings(rps=5)
    assert samples_needed(s) == 500  # p99 with 5 expected exceedances
    assert samples_needed(AnalysisSettings(metrics=("latency_p50", "error_rate"))) == 50
    assert analyses_window(s, 10, last=True)  # the last bake always (Nodata then says why)
    assert not analyses_window(s, 60, last=False)  # a 60 s hold at 5 rps: 300 < 500
    assert analyses_window(s, 100, last=False)
