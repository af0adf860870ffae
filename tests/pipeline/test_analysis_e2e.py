"""The `analysis` stage end to end (issue 20): candidate vs the revision that served before, under the same
load at 10 rps per arm over a 60 s bake, on the sandbox with the real flow.

A candidate whose `/` is 150 ms slower on 30 % of requests fails `analysis` and is rolled back; one whose `/`
fails 5 % of requests fails; an identical one passes. The three run concurrently in one flow run (one service
each), so the 60 s window costs its wall time once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline.test_e2e import assert_common_artifacts, baseline, created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

BAKE_S = 60.0
ANALYSIS = '[analysis]\nrps = 10\npaths = [{ path = "/" }]'


def _metrics(stage: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["metric"]: m for m in stage["data"]["analysis"]["metrics"]}


async def test_analysis_fails_slow_and_erroring_candidates_and_passes_an_identical_one(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    releases = {
        "same": {"GREETING": "hello"},  # the same code; only an env change
        "slow": {"ROOT_SLOW_PERCENT": "30", "ROOT_SLOW_MS": "150"},
        "errors": {"ROOT_ERROR_PERCENT": "5"},
    }
    names = {kind: created(f"an-{kind}") for kind in releases}
    before = {kind: baseline(run_clients, names[kind], sample_image.digest_ref) for kind in releases}
    services = []
    for kind, env in releases.items():
        scenario.add_service(kind)
        services.append({"name": names[kind], "source_dir": kind, "env": env})
    config = scenario.config(services, steps="[100]", bake_s=BAKE_S, extra=ANALYSIS)
    scenario.commit()

    run = await run_flow(scenario, config)

    same, slow, errors = (run.report(names[k]) for k in ("same", "slow", "errors"))
    assert same["verdict"] == "pass", same["reasons"]
    stage = run.stage(names["same"], "analysis")
    assert stage["status"] == "PASS"
    for metric in _metrics(stage).values():
        assert metric["classification"] == "Pass"
        assert metric["n_baseline"] >= 500 and metric["n_candidate"] >= 500  # 10 rps x 60 s, 600 planned
    assert "Performance impact" in run.artifact(f"stagecheck-report-{names['same']}").data

    for kind, report in (("slow", slow), ("errors", errors)):
        service = names[kind]
        assert report["verdict"] == "fail" and report["decided_by"] == "analysis", (kind, report["reasons"])
        assert run.stage(service, "analysis")["status"] == "FAIL"
        assert report["rollback"]["performed"] and report["rollback"]["ok"]
        assert serving(run_clients, service) == {before[kind]: 100}
        assert_common_artifacts(run, service, "fail")
    slow_metrics = _metrics(run.stage(names["slow"], "analysis"))
    assert slow_metrics["latency_p95"]["classification"] == "High"
    assert slow_metrics["error_rate"]["classification"] == "Pass"
    err = _metrics(run.stage(names["errors"], "analysis"))["error_rate"]
    assert err["classification"] == "High" and err["critical"]

    # the sc-base tag is gone from every service, and the picture sits beside the JSON report
    for service in names.values():
        svc = run_clients.services.get_service(name=run_clients.service_name(service))
        assert "sc-base" not in {t.tag for t in svc.traffic}
        assert (scenario.root / "reports" / f"{service}-latest-latency.svg").exists()
