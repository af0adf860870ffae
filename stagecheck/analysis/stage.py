"""The `analysis` stage's result (pure): a judgement and the load's facts -> StageResult with evidence."""

from __future__ import annotations

from typing import Any

from stagecheck.analysis.classifier import Label
from stagecheck.analysis.config import AnalysisSettings
from stagecheck.analysis.judge import Judgement, MetricVerdict, gate
from stagecheck.analysis.scorer import ScoreLabel
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.stages import Stage

RULE = {
    "latency_p50": "Mann-Whitney (Kayenta): CI lower bound of the shift > tolerance x |estimate|",
    "latency_p95": "pooled-p95 exceedance count, exact one-sided",
    "latency_p99": "pooled-p99 exceedance count, exact one-sided",
    "error_rate": "Fisher exact one-sided; absolute ceiling",
}


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if metric == "error_rate" else f"{value:.1f} ms"


def metric_row(v: MetricVerdict) -> dict[str, Any]:
    """One metric's figures (the report table and the JSON)."""
    return {
        "metric": str(v.metric), "classification": str(v.label), "critical": v.critical, "reason": v.reason,
        "n_baseline": v.n_baseline, "n_candidate": v.n_candidate,
        "baseline": v.baseline_value, "candidate": v.candidate_value,
        "estimate_ms": v.estimate, "ci_ms": list(v.interval) if v.interval else None, "p_value": v.p_value,
    }


def analysis_result(judgement: Judgement, settings: AnalysisSettings, *, facts: dict[str, Any],
                    label: str = "") -> StageResult:
    """FAIL / WARN / PASS per `judge.gate`; every metric a criterion with its figures."""
    status = gate(judgement.outcome, settings)
    criteria = []
    for v in judgement.metrics:
        shift = ""
        if v.estimate is not None and v.interval is not None:
            shift = f"; shift {v.estimate:+.1f} ms [{v.interval[0]:+.1f}, {v.interval[1]:+.1f}]"
        p = f"; p={v.p_value:.2g}" if v.p_value is not None else ""
        crit_status = Status.PASS if v.label is Label.PASS else (
            Status.FAIL if v.label is Label.HIGH or status is Status.FAIL else Status.WARN)
        criteria.append(Criterion(
            name=f"{v.metric} not worse than the baseline", stage=Stage.ANALYSIS, status=crit_status,
            expected=RULE[str(v.metric)],
            observed=f"{v.label}: baseline {_fmt(str(v.metric), v.baseline_value)} (n={v.n_baseline}), candidate "
                     f"{_fmt(str(v.metric), v.candidate_value)} (n={v.n_candidate}){shift}{p}"))
    outcome = {ScoreLabel.PASS: "no regression found", ScoreLabel.MARGINAL: "marginal",
               ScoreLabel.FAIL: "regression", ScoreLabel.NODATA: "inconclusive (Nodata)"}[judgement.outcome]
    summary = f"{label + ': ' if label else ''}{outcome}: score {judgement.score:.0f}/100 ({judgement.outcome})"
    if judgement.reason and judgement.outcome is not ScoreLabel.PASS:
        summary += f"; {judgement.reason}"
    if facts.get("stopped_early"):
        summary += f"; {facts['stopped_early']}"
    data = {"analysis": {"outcome": str(judgement.outcome), "score": judgement.score,
                         "alpha_per_metric": judgement.alpha_per_metric, "confidence": judgement.confidence,
                         "metrics": [metric_row(v) for v in judgement.metrics], **facts}}
    evidence = [Evidence(kind="timing", summary=f"load: {facts.get('summary', '')}", data={})]
    return StageResult(name=Stage.ANALYSIS, status=status, summary=summary, criteria=criteria, evidence=evidence,
                       data=data)


def not_analysed(why: str, settings: AnalysisSettings) -> StageResult:
    """Nothing to compare (no baseline revision, no tag URL): inconclusive, by `on_inconclusive`."""
    status = Status.FAIL if settings.on_inconclusive == "fail" else Status.WARN
    return StageResult(name=Stage.ANALYSIS, status=status, summary=f"inconclusive: {why}",
                       criteria=[Criterion(name="candidate compared with the baseline", stage=Stage.ANALYSIS,
                                           status=status, expected="two arms under load", observed=why)])
