"""The scorer port reproduces Kayenta's ScorerSuite (kayenta-judge/src/test/.../ScorerSuite.scala) and adds
our rule: a Nodata metric never yields Pass."""

from __future__ import annotations

import pytest

from stagecheck.analysis.classifier import Label
from stagecheck.analysis.scorer import MetricResult, ScoreLabel, classify_score, score, summarise

P, H, L, N = Label.PASS, Label.HIGH, Label.LOW, Label.NODATA

# (name, group weights, [(label, group, critical)], expected summary score) transcribed from ScorerSuite
SCORER_SUITE = [
    ("Single Metric Pass", {}, [(P, "g", False)], 100.0),
    ("Single Metric Fail", {}, [(H, "g", False)], 0.0),
    ("Single group Nodata", {}, [(N, "nodata", False)], 0.0),
    ("Two Groups, one Pass, one Nodata", {}, [(P, "pass", False), (P, "pass", False), (N, "nodata", False)], 100.0),
    ("One Group, Two Metrics", {}, [(P, "g", False), (H, "g", False)], 50.0),
    ("One Group, Three Metrics", {}, [(P, "g", False), (H, "g", False), (L, "g", False)], 33.33),
    ("Two Groups, Three Metrics", {"group-1": 75.0, "group-2": 25.0},
     [(P, "group-1", False), (P, "group-1", False), (H, "group-2", False)], 75.0),
    ("Two Groups, Three Metrics (Equal Weight)", {"group-1": 50.0, "group-2": 50.0},
     [(P, "group-1", False), (H, "group-1", False), (H, "group-2", False)], 25.0),
    ("Two Groups, Three Metrics (Equal Weight), one NoData", {"group-1": 50.0, "group-2": 50.0},
     [(P, "group-1", False), (N, "group-1", False), (H, "group-2", False)], 50.0),
    ("one good (normal), one fail (critical)", {}, [(P, "g", False), (H, "g", True)], 0.0),
    ("one low (normal), one good (critical)", {}, [(L, "g", False), (P, "g", True)], 50.0),
    ("one good (normal), one nodata (critical)", {}, [(P, "g", False), (N, "g", True)], 0.0),
    ("Two Groups (Unequal Weight), Four Metrics", {"group1": 15.0, "group2": 85.0},
     [(H, "group1", False), (L, "group1", False), (P, "group1", False), (H, "group2", False)], 5.0),
]


@pytest.mark.parametrize(("name", "weights", "metrics", "expected"), SCORER_SUITE, ids=[c[0] for c in SCORER_SUITE])
def test_weighted_sum_matches_kayenta(name: str, weights: dict, metrics: list, expected: float) -> None:
    results = [MetricResult(f"m{i}", label, group, crit, f"m{i} was {label}") for i, (label, group, crit) in enumerate(metrics)]
    assert score(results, weights).summary == expected


def test_group_scores_of_a_nodata_group() -> None:
    results = [MetricResult("a", P, "pass"), MetricResult("b", P, "pass"), MetricResult("c", N, "nodata")]
    assert sorted(g.score for g in score(results).groups) == [0.0, 100.0]


@pytest.mark.parametrize(("summary", "expected"), [(95.0, ScoreLabel.PASS), (94.99, ScoreLabel.MARGINAL),
                                                   (75.0, ScoreLabel.MARGINAL), (74.99, ScoreLabel.FAIL)])
def test_threshold_classifier(summary: float, expected: ScoreLabel) -> None:
    assert classify_score(summary, 95.0, 75.0) is expected


def test_a_nodata_metric_is_never_pass() -> None:
    """Kayenta scores one Nodata in four metrics 100 (Pass); ours says Nodata."""
    results = [MetricResult("a", P, "a"), MetricResult("b", P, "b"), MetricResult("c", P, "c"), MetricResult("d", N, "d")]
    scored, label = summarise(results, 95.0, 75.0)
    assert scored.summary == 100.0
    assert label is ScoreLabel.NODATA
