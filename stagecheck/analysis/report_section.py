"""The report's analysis lines (pure): per metric n per arm, baseline/candidate figures, shift with its
interval, p-value, classification; the score; the arms' first answers; the picture. Figures, no adjectives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stagecheck.model import StageResult
from stagecheck.stages import Stage

SVG_SUFFIX = "-latency.svg"


def analysis_data(stages: Sequence[StageResult]) -> dict[str, Any] | None:
    stage = next((s for s in stages if s.name == Stage.ANALYSIS), None)
    return stage.data.get("analysis") if stage is not None else None


def picture(stages: Sequence[StageResult], service: str) -> str | None:
    data = analysis_data(stages)
    if not data or "latencies_ms" not in data:
        return None
    from stagecheck.analysis.picture import latency_svg  # numpy: loaded only for a report with an analysis

    lat = data["latencies_ms"]
    return latency_svg(lat.get("baseline", []), lat.get("candidate", []), f"{service}: latency per request (ms)")


def _value(metric: str, v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2%}" if metric == "error_rate" else f"{v:.1f} ms"


def analysis_lines(stages: Sequence[StageResult], service: str, table: Callable[..., list[str]],
                   h: str) -> list[str]:
    """The "Canary vs baseline under load" part of the Performance impact section ([] without the stage)."""
    data = analysis_data(stages)
    if not data:
        return []
    lines = ["", f"{h}## Canary vs baseline under load (analysis)", ""]
    if "metrics" not in data:
        return [*lines, "_Not analysed: see the analysis stage's summary._"]
    rows = []
    for m in data["metrics"]:
        shift = "—"
        if m.get("estimate_ms") is not None and m.get("ci_ms"):
            lo, hi = m["ci_ms"]
            shift = f"{m['estimate_ms']:+.1f} ms [{lo:+.1f}, {hi:+.1f}]"
        p = "—" if m.get("p_value") is None else f"{m['p_value']:.2g}"
        rows.append((m["metric"], f"{m['n_baseline']} / {m['n_candidate']}", _value(m["metric"], m["baseline"]),
                     _value(m["metric"], m["candidate"]), shift, p, m["classification"] + (" (critical)" if m["critical"] else "")))
    lines += table(("Metric", "n base / cand", "Baseline", "Candidate", "Shift [CI]", "p", "Class"), rows)
    lines += ["", f"Score {data['score']:g}/100: **{data['outcome']}**. Alpha {data['alpha_per_metric']:.4g} per "
                  f"metric (Bonferroni); Mann-Whitney interval at {data['confidence']:.2%} confidence. Values: "
                  "p50 rows show medians, p95/p99 rows the quantile, error_rate the share of failed requests."]
    first = data.get("first_answer") or {}
    if first:
        parts = [f"{arm} {f['seconds']:.2f} s (status {f['status']})" for arm, f in first.items()]
        lines += ["", "First answer of each arm before the load (includes a cold start if the arm had no "
                      "instance): " + ", ".join(parts) + "."]
    base = data["baseline"]
    control = (f" (a fresh control: a copy of the serving revision {base['copied_from']}, image "
               f"`{base.get('image')}`, deployed beside the candidate)" if base.get("kind") == "fresh" else "")
    lines += ["", f"Load: {data.get('summary', '')}; baseline {base['revision']}{control} on tag `{base['tag']}`."]
    if data.get("stopped_early"):
        lines += ["", f"Stopped early: {data['stopped_early']}."]
    svg = picture(stages, service)
    if svg:
        from stagecheck.analysis.picture import data_uri

        lines += ["", f"![latency distributions of baseline and candidate]({data_uri(svg)})", "",
                  f"_Picture: `{service}-latest{SVG_SUFFIX}` beside the JSON report._"]
    return lines
