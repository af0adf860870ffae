"""The `analysis` stage end to end (issue 20): candidate vs the revision that served before, under the same
load at 10 rps per arm over a 60 s bake, on the sandbox with the real flow (one service per flow run, so
each arm's load is the only load of the run).

A candidate whose `/` is 150 ms slower on 30 % of requests fails `analysis` and is rolled back; one whose `/`
fails 5 % of requests fails; an identical one passes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline.test_e2e import assert_common_artifacts, baseline, created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

BAKE_S = 60.0
ANALYSIS = '[analysis]\nrps = 10\npaths = [{ path = "/" }]'


def _metrics(stage: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["metric"]: m for m in stage["data"]["analysis"]["metrics"]}


async def _release(scenario: Any, run_clients: Any, created: Any, image: str, kind: str,  # noqa: F811
                   env: dict[str, str], logs: str = "") -> tuple[Any, str, str]:
    service = created(f"an-{kind}")
    before = baseline(run_clients, service, image)
    scenario.add_service(kind)
    config = scenario.config([{"name": service, "source_dir": kind, "env": env}], steps="[100]", bake_s=BAKE_S,
                             extra=logs + ANALYSIS)
    scenario.commit()
    return await run_flow(scenario, config), service, before


def _assert_failed_and_rolled_back(run: Any, run_clients: Any, service: str, before: str) -> dict[str, Any]:
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "analysis", report["reasons"]
    stage = run.stage(service, "analysis")
    assert stage["status"] == "FAIL"
    assert report["rollback"]["performed"] and report["rollback"]["ok"]
    assert serving(run_clients, service) == {before: 100}
    assert_common_artifacts(run, service, "fail")
    return _metrics(stage)


def _assert_tag_gone_and_picture_written(run_clients: Any, scenario: Any, service: str) -> None:
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert "sc-base" not in {t.tag for t in svc.traffic}
    svg = (scenario.root / "reports" / f"{service}-latest-latency.svg").read_text()
    assert svg.startswith("<svg") and "baseline: n=" in svg and "candidate: n=" in svg


async def test_analysis_passes_an_identical_candidate(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    run, service, _ = await _release(scenario, run_clients, created, sample_image.digest_ref, "same",
                                     {"GREETING": "hello"})  # the same code; only an env change
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    stage = run.stage(service, "analysis")
    assert stage["status"] == "PASS"
    for metric in _metrics(stage).values():
        assert metric["classification"] == "Pass", metric
        assert metric["n_baseline"] >= 500 and metric["n_candidate"] >= 500  # 10 rps x 60 s: 600 planned
    markdown = run.artifact(f"stagecheck-report-{service}").data
    assert "Canary vs baseline under load" in markdown and "data:image/svg+xml;base64," in markdown
    _assert_tag_gone_and_picture_written(run_clients, scenario, service)


async def test_analysis_fails_a_candidate_150ms_slower_on_30_percent(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    run, service, before = await _release(scenario, run_clients, created, sample_image.digest_ref, "slow",
                                          {"ROOT_SLOW_PERCENT": "30", "ROOT_SLOW_MS": "150"})
    metrics = _assert_failed_and_rolled_back(run, run_clients, service, before)
    assert metrics["latency_p95"]["classification"] == "High"
    assert metrics["error_rate"]["classification"] == "Pass"
    _assert_tag_gone_and_picture_written(run_clients, scenario, service)


async def test_analysis_fails_a_candidate_failing_5_percent(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    run, service, before = await _release(scenario, run_clients, created, sample_image.digest_ref, "errors",
                                          {"ROOT_ERROR_PERCENT": "5"},
                                          # the bake's own 5xx log rule (default 0 %) would fail it first
                                          # and stop the load: here the analysis is the gate that decides
                                          logs="max_5xx_rate = 0.5\n")
    err = _assert_failed_and_rolled_back(run, run_clients, service, before)["error_rate"]
    assert err["classification"] == "High" and err["critical"]
    # the request logs, by our User-Agent, show the candidate's 500s too (the cross-check's evidence)
    logged = run.stage(service, "analysis")["data"]["analysis"]["request_logs"]
    assert logged["candidate"]["statuses"].get("500", 0) > 0
    assert logged["baseline"]["requests"] > 0 and logged["baseline"]["statuses"].get("500", 0) == 0
    _assert_tag_gone_and_picture_written(run_clients, scenario, service)


async def test_analysis_in_a_canary_hold_stops_the_release_before_100_percent(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    """A hold long enough to decide its metrics is analysed too: 10 s x 10 rps = 100 samples per arm >= the
    50 that latency_p50 and error_rate need; a candidate failing 30 % of `/` fails there, at 50 %."""
    service = created("an-hold")
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("hold")
    config = scenario.config([{"name": service, "source_dir": "hold", "env": {"ROOT_ERROR_PERCENT": "30"}}],
                             steps="[50, 100]", hold_s=10.0, bake_s=10.0,
                             extra='max_5xx_rate = 0.9\n[analysis]\nrps = 10\npaths = [{ path = "/" }]\n'
                                   'metrics = ["latency_p50", "error_rate"]')
    scenario.commit()

    run = await run_flow(scenario, config)

    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "analysis", report["reasons"]
    stage = run.stage(service, "analysis")
    assert stage["summary"].startswith("canary hold at 50 %: regression")
    err = _metrics(stage)["error_rate"]
    assert err["classification"] == "High" and err["n_candidate"] >= 50
    assert report["rollback"]["performed"] and report["rollback"]["ok"]
    assert serving(run_clients, service) == {before: 100}
    traffic = [s for s in report["stages"] if s["name"] == "traffic"]
    assert len(traffic) == 1  # never shifted to 100 %
    _assert_tag_gone_and_picture_written(run_clients, scenario, service)


async def test_analysis_with_a_fresh_control_passes_an_identical_candidate(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    """`baseline = "fresh"`: a copy of the serving revision (same image digest) is deployed just before the
    candidate and judged against it; it never serves traffic and loses its `sc-base` tag afterwards."""
    service = created("an-fresh")
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("fresh")
    config = scenario.config([{"name": service, "source_dir": "fresh", "env": {"GREETING": "hello"}}],
                             steps="[100]", bake_s=BAKE_S, extra=ANALYSIS + '\nbaseline = "fresh"')
    scenario.commit()

    run = await run_flow(scenario, config)

    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    stage = run.stage(service, "analysis")
    assert stage["status"] == "PASS"
    arm = stage["data"]["analysis"]["baseline"]
    control = arm["revision"]
    assert arm["kind"] == "fresh" and arm["copied_from"] == before and control.startswith(f"{service}-control-")
    rev = run_clients.revisions.get_revision(name=f"{run_clients.service_name(service)}/revisions/{control}")
    original = run_clients.revisions.get_revision(name=f"{run_clients.service_name(service)}/revisions/{before}")
    assert arm["image"] == rev.containers[0].image == original.containers[0].image
    for metric in _metrics(stage).values():
        assert metric["classification"] == "Pass", metric
    assert f"baseline {control} (a fresh control: a copy of the serving revision {before}" in \
        run.artifact(f"stagecheck-report-{service}").data
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert control not in {s.revision for s in svc.traffic_statuses}  # never served, no tag left
    assert serving(run_clients, service) == {report["revision"]["name"]: 100}
    _assert_tag_gone_and_picture_written(run_clients, scenario, service)
