"""Benchmark: the analysis judge's false-positive rate and power, by seeded simulation. Prints figures; not a test.

    .venv/bin/python benchmarks/bench_analysis.py [--sims 200] [--seed 20]

Each case draws both arms from a latency model and runs `stagecheck.analysis.judge.judge` with the default
`[analysis]` settings, --sims times, each simulation with its own seed (seed, seed+1, ...). Latency model:
lognormal, median 20 ms, sigma 0.35, plus 1 % of requests 50-250 ms slower (a GC pause, a cold cache), and
0.2 % background errors on both arms. "Enough" samples is 10 rps x 60 s = 600 per arm; "too few" is
1 rps x 60 s = 60 per arm. Printed per case: the share of outcomes Pass / Marginal / Fail / Nodata, the
share of simulations in which each metric was High, and the time per judgement.

False-positive rate (identical arms): share of verdicts that are not Pass, and those that are Fail.
Power (a known regression): share of verdicts that fail the gate (Fail, or Marginal / Nodata with the
default on_marginal / on_inconclusive = "fail"). Identical-arms cases run --fp-sims simulations.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from stagecheck.analysis.classifier import Label
from stagecheck.analysis.config import AnalysisSettings, Metric
from stagecheck.analysis.judge import ArmSamples, gate, judge
from stagecheck.analysis.scorer import ScoreLabel
from stagecheck.model import Status

ENOUGH, TOO_FEW = 600, 60
BACKGROUND_ERRORS = 0.002


@dataclass(frozen=True)
class Regression:
    slow_share: float = 0.0
    slow_ms: float = 0.0
    error_share: float = 0.0


def draw(rng: np.random.Generator, n: int, reg: Regression) -> ArmSamples:
    lat = rng.lognormal(np.log(20.0), 0.35, n)
    hiccup = rng.random(n) < 0.01
    lat[hiccup] += rng.uniform(50, 250, int(hiccup.sum()))
    lat[rng.random(n) < reg.slow_share] += reg.slow_ms
    failed = rng.random(n) < BACKGROUND_ERRORS + reg.error_share
    return ArmSamples.of(lat[~failed], n, int(failed.sum()))


CASES: list[tuple[str, int, Regression]] = [
    ("identical arms", ENOUGH, Regression()),
    ("identical arms", TOO_FEW, Regression()),
    ("150 ms slower on 30 %", ENOUGH, Regression(slow_share=0.3, slow_ms=150)),
    ("150 ms slower on 30 %", TOO_FEW, Regression(slow_share=0.3, slow_ms=150)),
    ("5 % errors", ENOUGH, Regression(error_share=0.05)),
    ("5 % errors", TOO_FEW, Regression(error_share=0.05)),
    ("tail only: 4 % of requests 300 ms slower", ENOUGH, Regression(slow_share=0.04, slow_ms=300)),
    ("tail only: 4 % of requests 300 ms slower", TOO_FEW, Regression(slow_share=0.04, slow_ms=300)),
    ("tail only: 2 % of requests 300 ms slower", ENOUGH, Regression(slow_share=0.02, slow_ms=300)),
]


def run_case(n: int, reg: Regression, sims: int, seed: int, settings: AnalysisSettings,
             ) -> tuple[Counter[ScoreLabel], Counter[Metric], int, float]:
    outcomes: Counter[ScoreLabel] = Counter()
    fails = 0
    high: Counter[Metric] = Counter()
    spent = 0.0
    for i in range(sims):
        rng = np.random.default_rng(seed + i)
        base, cand = draw(rng, n, Regression()), draw(rng, n, reg)
        t0 = time.perf_counter()
        j = judge(base, cand, settings)
        spent += time.perf_counter() - t0
        outcomes[j.outcome] += 1
        fails += gate(j.outcome, settings) is Status.FAIL
        for m in j.metrics:
            if m.label is Label.HIGH:
                high[m.metric] += 1
    return outcomes, high, fails, spent / sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--fp-sims", type=int, default=1000, help="simulations of the identical-arms cases")
    args = ap.parse_args()
    settings = AnalysisSettings()
    print(f"judge: alpha {settings.alpha} family-wise over {len(settings.metrics)} metrics, tolerance "
          f"{settings.tolerance}, pass/marginal score {settings.pass_score}/{settings.marginal_score}; "
          f"seeded simulations: seed {args.seed} + i")
    head = f"{'case':44} {'n/arm':>5} {'sims':>5} {'Pass':>6} {'Marg':>6} {'Fail':>6} {'Nodata':>6} {'gate FAIL':>9}  {'High per metric (p50 p95 p99 err)':34} {'ms/judge':>8}"
    print(head)
    for name, n, reg in CASES:
        sims = args.fp_sims if reg == Regression() else args.sims
        out, high, fails, per = run_case(n, reg, sims, args.seed, settings)
        pct = {k: 100 * out[k] / sims for k in ScoreLabel}
        highs = " ".join(f"{100 * high[m] / sims:5.1f}" for m in Metric)
        print(f"{name:44} {n:5d} {sims:5d} {pct[ScoreLabel.PASS]:5.1f}% {pct[ScoreLabel.MARGINAL]:5.1f}% "
              f"{pct[ScoreLabel.FAIL]:5.1f}% {pct[ScoreLabel.NODATA]:5.1f}% {100 * fails / sims:8.1f}%  {highs:34} {per * 1000:8.1f}")
    print("gate FAIL with the defaults (on_marginal = on_inconclusive = \"fail\"): on identical arms with "
          "enough samples it is the false-positive rate per verdict; on a regression it is the power")


if __name__ == "__main__":
    main()
