"""The analysis stage's pure parts: the sc-base tag, the stage result, the report lines and picture, the
`[analysis]` settings and the flow parameter that switches the stage on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stagecheck.analysis.arms import BASE_TAG, with_base_tag, without_base_tag
from stagecheck.analysis.config import AnalysisSettings
from stagecheck.analysis.judge import ArmSamples, judge
from stagecheck.analysis.report_section import analysis_lines, picture
from stagecheck.analysis.stage import analysis_result, not_analysed
from stagecheck.model import Status, TrafficTarget
from stagecheck.request import ValidationRequest
from stagecheck.stages import Stage

SPLIT = [TrafficTarget(revision="svc-2", percent=100, tag="sc-abc1234"), TrafficTarget(revision="svc-1", percent=0, tag="v1")]


def test_base_tag_moves_no_traffic_and_comes_off_exactly() -> None:
    tagged = with_base_tag(SPLIT, "svc-1")
    assert [t.percent for t in tagged] == [100, 0, 0]
    assert tagged[-1] == TrafficTarget(revision="svc-1", percent=0, tag=BASE_TAG)
    assert with_base_tag(tagged, "svc-0")[-1].revision == "svc-0"  # an older sc-base replaced, not doubled
    assert len(with_base_tag(tagged, "svc-0")) == 3
    assert without_base_tag(tagged) == SPLIT


def test_base_tag_on_a_serving_target_is_untagged_not_dropped() -> None:
    split = [TrafficTarget(revision="svc-1", percent=100, tag=BASE_TAG)]
    assert without_base_tag(split) == [TrafficTarget(revision="svc-1", percent=100, tag=None)]


def _judged(slow: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    base = rng.lognormal(np.log(20), 0.3, 600)
    cand = rng.lognormal(np.log(20), 0.3, 600)
    cand[rng.random(600) < 0.3] += slow
    settings = AnalysisSettings()
    return judge(ArmSamples.of(base, 600, 0), ArmSamples.of(cand, 600, 0), settings), settings, base, cand


def _facts(base: np.ndarray, cand: np.ndarray) -> dict:
    return {"summary": "600 baseline / 600 candidate requests", "latencies_ms": {"baseline": list(base),
            "candidate": list(cand)}, "baseline": {"revision": "svc-1", "tag": BASE_TAG, "url": "u"},
            "first_answer": {"baseline": {"seconds": 1.2, "status": 200}, "candidate": {"seconds": 0.02, "status": 200}}}


def test_stage_result_fails_a_regression_with_figures() -> None:
    judgement, settings, base, cand = _judged(150)
    result = analysis_result(judgement, settings, facts=_facts(base, cand))
    assert result.name == Stage.ANALYSIS and result.status is Status.FAIL
    assert result.summary.startswith("regression: score ")
    p95 = next(c for c in result.criteria if c.name.startswith("latency_p95"))
    assert p95.status is Status.FAIL and "n=600" in p95.observed and "High" in p95.observed


def test_stage_result_passes_identical_arms() -> None:
    judgement, settings, base, cand = _judged(0)
    result = analysis_result(judgement, settings, facts=_facts(base, cand))
    assert result.status is Status.PASS
    assert {c.status for c in result.criteria} == {Status.PASS}


@pytest.mark.parametrize(("policy", "status"), [("fail", Status.FAIL), ("warn", Status.WARN)])
def test_nothing_to_compare_follows_on_inconclusive(policy: str, status: Status) -> None:
    result = not_analysed("no revision served before this release", AnalysisSettings(on_inconclusive=policy))
    assert result.status is status and "no revision served" in result.summary


def test_report_lines_and_picture() -> None:
    judgement, settings, base, cand = _judged(150)
    stage = analysis_result(judgement, settings, facts=_facts(base, cand))
    from stagecheck.report import _table

    lines = analysis_lines([stage], "svc", _table, "#")
    text = "\n".join(lines)
    assert "| latency_p95 | 600 / 600 |" in text
    assert "Score 0/100" not in text and "**Fail**" in text
    assert "baseline 1.20 s (status 200), candidate 0.02 s (status 200)" in text
    assert "![latency distributions of baseline and candidate](data:image/svg+xml;base64," in text
    svg = picture([stage], "svc")
    assert svg is not None and svg.startswith("<svg") and svg.count("<rect") > 10
    assert "baseline: n=600" in svg and "candidate: n=600" in svg


def test_report_names_a_fresh_control() -> None:
    judgement, settings, base, cand = _judged(0)
    facts = _facts(base, cand)
    facts["baseline"].update(revision="svc-control-abc", kind="fresh", copied_from="svc-1", image="r/i@sha256:ab")
    stage = analysis_result(judgement, settings, facts=facts)
    from stagecheck.report import _table

    text = "\n".join(analysis_lines([stage], "svc", _table, "#"))
    assert ("baseline svc-control-abc (a fresh control: a copy of the serving revision svc-1, image `r/i@sha256:ab`, "
            "deployed beside the candidate) on tag `sc-base`") in text


def test_baseline_fresh_is_accepted_and_other_values_named() -> None:
    assert AnalysisSettings.model_validate({"baseline": "fresh"}).baseline == "fresh"
    with pytest.raises(ValueError, match="baseline"):
        AnalysisSettings.model_validate({"baseline": "canary"})


def test_no_analysis_stage_no_lines() -> None:
    assert analysis_lines([], "svc", lambda *a: [], "#") == []


def test_flow_parameter_switches_the_stage(tmp_path: Path) -> None:
    on = ValidationRequest(analysis=True).overrides()
    off = ValidationRequest(analysis=False).overrides()
    assert on["analysis"] == {} and off["analysis"] is None
    assert "analysis" not in ValidationRequest().overrides()


def test_settings_section(tmp_path: Path) -> None:
    from stagecheck.settings import deep_merge

    file = {"analysis": {"rps": 10, "paths": [{"path": "/", "weight": 2}], "on_inconclusive": "warn"}}
    merged = deep_merge(file, ValidationRequest(analysis=True).overrides())
    settings = AnalysisSettings.model_validate(merged["analysis"])
    assert settings.rps == 10 and settings.paths[0].weight == 2 and settings.on_inconclusive == "warn"
    with pytest.raises(ValueError, match="rps"):
        AnalysisSettings.model_validate({"rps": 100})


@pytest.mark.parametrize(("flags", "expected"), [(["--analysis"], {}), (["--no-analysis"], None)])
def test_cli_flag_switches_the_stage(flags: list[str], expected: dict | None) -> None:
    from cli.commands.validate import build_request, parse_args

    request = build_request(parse_args(flags))
    assert request.overrides()["analysis"] == expected
    assert "analysis" not in build_request(parse_args([])).overrides()
