"""Regenerate kayenta_vectors.json from Kayenta's own Scala test suites (run by hand, not by pytest).

    python tests/analysis/make_kayenta_vectors.py MannWhitneySuite.scala ClassifierSuite.scala

Sources (spinnaker/kayenta, Apache-2.0, commit a69573be9d8fededacf80817e4151a2c8df41276):
kayenta-mannwhitney/src/test/scala/com/netflix/kayenta/mannwhitney/MannWhitneySuite.scala and
kayenta-judge/src/test/scala/com/netflix/kayenta/judge/ClassifierSuite.scala. The arrays, parameters and
expected values are copied verbatim; nothing is computed here.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TEST_RE = re.compile(r'test\("([^"]+)"\)\s*\{(.*?)\n  \}', re.S)
ARRAY_RE = re.compile(r"val (\w+) = +Array(?:\[Double\])?\(([^)]*)\)", re.S)
VAL_RE = re.compile(r"val (r\w+) = (-?[0-9.E-]+)")


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.split(r"[\s,]+", text.strip()) if v]


def _tests(path: Path) -> list[tuple[str, str]]:
    return TEST_RE.findall(path.read_text())


def mann_whitney(path: Path) -> list[dict]:
    out = []
    for name, body in _tests(path):
        arrays = {k: _numbers(v) for k, v in ARRAY_RE.findall(body)}
        call = re.search(r"mannWhitneyUTest\((\w+), (\w+)(?:, confidenceLevel = ([0-9.]+))?\)", body)
        if not call:
            continue
        expected = [float(v) for v in re.findall(r"assertEquals\((-?[0-9.E-]+), result", body)]
        named = dict(VAL_RE.findall(body))
        if not expected:
            expected = [float(named[k]) for k in ("rCiLow", "rCiHigh", "rEst")]
        deltas = re.findall(r"result\.\w+(?:\.\w+)?, ([0-9.E-]+|E)\)", body)
        out.append({
            "name": name, "x": arrays[call.group(1)], "y": arrays[call.group(2)],
            "confidence_level": float(call.group(3) or 0.95),
            "ci_low": expected[0], "ci_high": expected[1], "estimate": expected[2],
            "estimate_delta": 1e-6 if deltas[-1] == "E" else float(deltas[-1]),
        })
    return out


def wilcoxon_and_intermediates(path: Path) -> dict:
    tests = dict(_tests(path))
    wd = tests["Wilcoxon Diff Function"]
    arrays = {k: _numbers(v) for k, v in ARRAY_RE.findall(wd)}
    checks = [(float(e), float(mu), float(q)) for e, mu, q in
              re.findall(r"assertEquals\((-?[0-9.E-]+), mannWhitney\.wilcoxonDiff\(([0-9.]+), ([0-9.]+), x, y\)", wd)]
    inter = tests["Mann-Whitney Intermediate Values / Variables"]
    iarrays = {k: _numbers(v) for k, v in ARRAY_RE.findall(inter)}
    return {
        "wilcoxon_diff": {"x": arrays["x"], "y": arrays["y"], "checks": checks},
        "intermediate": {"x": iarrays["x"], "y": iarrays["y"], "confidence_level": 0.95,
                         **{k: float(v) for k, v in VAL_RE.findall(inter)}},
    }


def _pair(text: str | None, default: tuple[float, float]) -> list[float]:
    return list(default) if text is None else [float(v) for v in text.strip("()").split(",")]


def _must(match: re.Match[str] | None) -> str:
    assert match is not None
    return match.group(1)


def classifier(path: Path) -> list[dict]:
    out = []
    for name, body in _tests(path):
        ctor = re.search(r"new MannWhitneyClassifier\((.*?)\)\n", body, re.S)
        if not ctor:
            continue
        args = ctor.group(1)
        arrays = {k: _numbers(v) for k, v in ARRAY_RE.findall(body)}
        classify = re.search(r"classifier\.classify\(controlMetric, experimentMetric, MetricDirection\.(\w+)(.*?)\)\n", body)
        assert classify, name
        rest = classify.group(2)
        label = re.search(r"result\.classification == (\w+)", body)
        crit = re.search(r"assert\((!?)result\.critical\)", body)
        out.append({
            "name": name,
            "experiment": arrays["experimentData"], "control": arrays["controlData"],
            "tolerance": float(_must(re.search(r"tolerance = ([0-9.]+)", args))),
            "conf_level": float(_must(re.search(r"confLevel = ([0-9.]+)", args))),
            "effect_size_thresholds": _pair((m := re.search(r"effectSizeThresholds = (\([^)]*\))", args)) and m.group(1), (1.0, 1.0)),
            "critical_thresholds": _pair((m := re.search(r"criticalThresholds ?= ?(\([^)]*\))", args)) and m.group(1), (1.0, 1.0)),
            "effect_size_measure": (m.group(1) if (m := re.search(r'effectSizeMeasure ?= ?"(\w+)"', args)) else "meanRatio"),
            "direction": classify.group(1).lower(),
            "nan_strategy": "replace" if "NaNStrategy.Replace" in rest else "remove",
            "critical_metric": "isCriticalMetric = true" in rest,
            "expected": label.group(1) if label else None,
            "expected_critical": None if not crit else crit.group(1) != "!",
            "expect_reason": "reason should not be empty" in body,
            "deviation_is_nan": "deviation.isNaN" in body,
        })
    return out


def main() -> None:
    mws, cls = Path(sys.argv[1]), Path(sys.argv[2])
    data = {"source": "https://github.com/spinnaker/kayenta (commit a69573be9d8fededacf80817e4151a2c8df41276)",
            "mann_whitney": mann_whitney(mws), **wilcoxon_and_intermediates(mws), "classifier": classifier(cls)}
    (Path(__file__).parent / "kayenta_vectors.json").write_text(json.dumps(data))


if __name__ == "__main__":
    main()
