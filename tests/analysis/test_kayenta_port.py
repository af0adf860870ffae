"""The Mann-Whitney port reproduces Kayenta's own test vectors (MannWhitneySuite, ClassifierSuite).

kayenta_vectors.json is copied verbatim from spinnaker/kayenta's Scala suites by make_kayenta_vectors.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from stagecheck.analysis.classifier import Direction, Label, MannWhitneyClassifier
from stagecheck.analysis.mannwhitney import brent_solve, mann_whitney_u_test, wilcoxon_diff

VECTORS = json.loads((Path(__file__).parent / "kayenta_vectors.json").read_text())
E = 1e-6  # Kayenta's tolerance in MannWhitneySuite


@pytest.mark.parametrize("case", VECTORS["mann_whitney"], ids=lambda c: c["name"])
def test_interval_and_estimate_match_kayenta(case: dict) -> None:
    result = mann_whitney_u_test(case["x"], case["y"], confidence_level=case["confidence_level"])
    assert result.confidence_interval[0] == pytest.approx(case["ci_low"], abs=E)
    assert result.confidence_interval[1] == pytest.approx(case["ci_high"], abs=E)
    assert result.estimate == pytest.approx(case["estimate"], abs=case["estimate_delta"])


def test_wilcoxon_diff_matches_kayenta() -> None:
    wd = VECTORS["wilcoxon_diff"]
    x, y = np.asarray(wd["x"]), np.asarray(wd["y"])
    assert len(wd["checks"]) == 2
    for expected, mu, quantile in wd["checks"]:
        assert wilcoxon_diff(mu, quantile, x, y) == pytest.approx(expected, abs=E)


def test_intermediate_values_match_kayenta() -> None:
    v = VECTORS["intermediate"]
    x, y = np.asarray(v["x"]), np.asarray(v["y"])
    mu_min, mu_max = x.min() - y.max(), x.max() - y.min()
    zq_lower = -float(norm.ppf((1 - v["confidence_level"]) / 2))
    zq_upper = float(norm.ppf((1 - v["confidence_level"]) / 2))
    assert (mu_min, mu_max) == (pytest.approx(v["rMumin"], abs=E), pytest.approx(v["rMumax"], abs=E))
    assert (zq_lower, zq_upper) == (pytest.approx(v["rZqLower"], abs=E), pytest.approx(v["rZqUpper"], abs=E))
    f = {name: wilcoxon_diff(mu, zq, x, y) for name, mu, zq in (
        ("rFlower1", mu_min, zq_lower), ("rFupper1", mu_max, zq_lower), ("rFlower2", mu_min, zq_upper),
        ("rFupper2", mu_max, zq_upper), ("l0", mu_min, 0.0), ("u0", mu_max, 0.0))}
    for name in ("rFlower1", "rFupper1", "rFlower2", "rFupper2"):
        assert f[name] == pytest.approx(v[name], abs=E), name
    ci_lower = brent_solve(mu_min, mu_max, f["rFlower1"], f["rFupper1"], lambda m: wilcoxon_diff(m, zq_lower, x, y))
    ci_upper = brent_solve(mu_min, mu_max, f["rFlower2"], f["rFupper2"], lambda m: wilcoxon_diff(m, zq_upper, x, y))
    estimate = brent_solve(mu_min, mu_max, f["l0"], f["u0"], lambda m: wilcoxon_diff(m, 0.0, x, y))
    assert ci_lower == pytest.approx(v["rCil"], abs=E)
    assert ci_upper == pytest.approx(v["rCiu"], abs=E)
    assert estimate == pytest.approx(v["rEst"], abs=E)


def test_scipy_brentq_lands_elsewhere_on_the_step_function() -> None:
    """Why the solver is ported: on Kayenta's own intermediate vector scipy's brentq misses Kayenta's value."""
    v = VECTORS["intermediate"]
    x, y = np.asarray(v["x"]), np.asarray(v["y"])
    root = brentq(lambda m: wilcoxon_diff(m, 0.0, x, y), x.min() - y.max(), x.max() - y.min())
    assert abs(root - v["rEst"]) > E


@pytest.mark.parametrize("case", VECTORS["classifier"], ids=lambda c: c["name"])
def test_classifier_matches_kayenta(case: dict) -> None:
    classifier = MannWhitneyClassifier(
        tolerance=case["tolerance"], conf_level=case["conf_level"],
        effect_size_thresholds=tuple(case["effect_size_thresholds"]),
        critical_thresholds=tuple(case["critical_thresholds"]), effect_size_measure=case["effect_size_measure"])
    result = classifier.classify(case["control"], case["experiment"], Direction(case["direction"]),
                                 name="m", nan_strategy=case["nan_strategy"], critical=case["critical_metric"])
    if case["expected"] is not None:
        assert result.label is Label(case["expected"])
    if case["expected_critical"] is not None:
        assert result.critical is case["expected_critical"]
    if case["expect_reason"]:
        assert result.reason
    if case["deviation_is_nan"]:
        assert math.isnan(result.deviation)


def test_vectors_cover_every_kayenta_case() -> None:
    assert len(VECTORS["mann_whitney"]) == 4
    assert len(VECTORS["classifier"]) == 34
