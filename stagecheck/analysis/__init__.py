"""Canary-vs-baseline analysis: per-request samples of two arms judged with statistics.

Modules by responsibility, after Kayenta's judge (spinnaker/kayenta, Apache-2.0): `mannwhitney` (the
test and its confidence-interval root finder, ported), `classifier` (per-metric High/Low/Pass/Nodata),
`tail` and `errors` (our tail-exceedance and error-rate tests), `scorer` (weighted sum, Pass/Marginal/
Fail), `judge` (all of it for two arms), `config` (the `[analysis]` settings). All pure; I/O lives in
`load` (the bounded load generator).
"""
