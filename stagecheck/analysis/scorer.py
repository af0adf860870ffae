"""Kayenta's weighted-sum scorer and threshold score classifier, ported, plus our Nodata rule.

Source: spinnaker/kayenta `kayenta-judge` (scorers/WeightedSumScorer.scala, classifiers/score/
ThresholdScoreClassifier.scala; Apache-2.0). Group score = Pass / (Pass + High + Low + NodataFailMetric)
x 100; groups without weights share what the weighted ones leave of 100; a critical non-Pass metric or
>= 50 % Nodata metrics scores 0. Ours on top (`summarise`): any Nodata metric makes the outcome
inconclusive, never Pass, whatever the score.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from stagecheck.analysis.classifier import Label

NODATA_THRESHOLD = 50


class ScoreLabel(StrEnum):
    PASS = "Pass"
    MARGINAL = "Marginal"
    FAIL = "Fail"
    NODATA = "Nodata"  # ours: some metric had too few samples to decide


@dataclass(frozen=True)
class MetricResult:
    name: str
    label: Label
    group: str
    critical: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class GroupScore:
    name: str
    score: float
    no_data: bool


@dataclass(frozen=True)
class ScoreResult:
    groups: tuple[GroupScore, ...]
    summary: float
    reason: str | None


def _group_score(name: str, labels: Sequence[Label]) -> GroupScore:
    counts = Counter(labels)
    total = counts[Label.HIGH] + counts[Label.LOW] + counts[Label.PASS] + counts[Label.NODATA_FAIL]
    return GroupScore(name, 0.0 if total == 0 else counts[Label.PASS] / total * 100, total == 0)


def score(results: Sequence[MetricResult], group_weights: Mapping[str, float] | None = None) -> ScoreResult:
    """WeightedSumScorer.score."""
    weights = dict(group_weights or {})
    by_group: dict[str, list[Label]] = {}
    for r in results:
        by_group.setdefault(r.group, []).append(r.label)
    groups = tuple(_group_score(g, labels) for g, labels in by_group.items())
    failures = [r for r in results if r.critical and r.label is not Label.PASS]
    if failures:
        return ScoreResult(groups, 0.0, f"Canary Failed: {failures[0].reason}")
    nodata = sum(r.label is Label.NODATA for r in results)
    if results and nodata / len(results) * 100 >= NODATA_THRESHOLD:
        return ScoreResult(groups, 0.0, f"Canary Failed: {NODATA_THRESHOLD}% or more metrics returned NODATA")
    unweighted = {g.name for g in groups} - set(weights)
    share = (100 - sum(weights.values())) / len(unweighted) if unweighted else 0.0
    total = sum((100.0 if g.no_data else g.score) * (weights.get(g.name, share) / 100) for g in groups)
    return ScoreResult(groups, math.floor(total * 100 + 0.5) / 100, None)  # Precision.round(x, 2): half up


def classify_score(summary: float, pass_threshold: float, marginal_threshold: float) -> ScoreLabel:
    """ThresholdScoreClassifier.classify."""
    if summary >= pass_threshold:
        return ScoreLabel.PASS
    if summary >= marginal_threshold:
        return ScoreLabel.MARGINAL
    return ScoreLabel.FAIL


def summarise(
    results: Sequence[MetricResult], pass_threshold: float, marginal_threshold: float,
    group_weights: Mapping[str, float] | None = None,
) -> tuple[ScoreResult, ScoreLabel]:
    """Kayenta's score and class; then a Nodata metric makes the outcome Nodata (never Pass), unless another
    metric already failed it."""
    result = score(results, group_weights)
    label = classify_score(result.summary, pass_threshold, marginal_threshold)
    nodata = any(r.label is Label.NODATA for r in results)
    decided = any(r.label in (Label.HIGH, Label.LOW, Label.NODATA_FAIL) for r in results)
    if nodata and (label is not ScoreLabel.FAIL or not decided):  # Kayenta's ">= 50 % Nodata" is inconclusive too
        label = ScoreLabel.NODATA
    return result, label
