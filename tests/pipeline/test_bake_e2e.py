"""The bake window end to end (issue 8): the release is watched while it serves, a failure seen during
the window rolls back at once, and log reads stay within Cloud Logging's 60/min/project quota.

The scenarios of one test run concurrently in one flow run (one service each), so the long windows
cost their wall time once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.pipeline.test_e2e import assert_common_artifacts, baseline, created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

FAILING_BAKE_S = 45.0  # longer than the slowest failure (a crash 20 s after start) takes to be seen
HEALTHY_BAKE_S = 20.0
HOLD_S = 5.0


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _bakes(run: Any, service: str) -> list[dict[str, Any]]:
    return [s for s in run.report(service)["stages"] if s["name"] == "bake"]


def _bake(run: Any, service: str) -> dict[str, Any]:
    (stage,) = _bakes(run, service)
    return stage


async def test_bake_fails_at_once_on_a_crash_a_late_error_and_a_traceback(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    releases = {
        "crash": {"CRASH_AFTER_S": "20"},  # crashes 20 s after it starts
        "late": {"ERROR_RATE": "2", "ERROR_AFTER_S": "10",  # healthy at first, then logs a new ERROR
                 "ERROR_MESSAGE": "ledger write failed after {n} ms ({id})"},
        "trace": {"TRACEBACK_EVERY_S": "3"},  # a multi-line Python traceback on stderr, keeps serving
    }
    names = {kind: created(f"bake-{kind}") for kind in releases}
    before = {kind: baseline(run_clients, names[kind], sample_image.digest_ref) for kind in releases}
    services = []
    for kind, env in releases.items():
        scenario.add_service(kind)
        services.append({"name": names[kind], "source_dir": kind, "env": env})
    config = scenario.config(services, steps="[100]", bake_s=FAILING_BAKE_S)
    scenario.commit()

    run = await run_flow(scenario, config)

    assert run.state.is_failed()
    for kind, service in names.items():
        report = run.report(service)
        assert report["verdict"] == "fail" and report["decided_by"] == "bake", (kind, report["reasons"])
        bake = _bake(run, service)
        data = bake["data"]
        # seen during the window, not at its end, and the release rolled back at once
        assert data["time_to_detect_s"] < FAILING_BAKE_S - 5, (kind, data)
        assert data["watched_s"] < FAILING_BAKE_S - 5, (kind, data)
        assert data["urls"] and data["probes"] >= 1 and data["log_reads"] >= 1
        assert report["rollback"]["performed"] and report["rollback"]["ok"]
        assert run.stage_names(service)[-2:] == ["bake", "rollback"]
        assert serving(run_clients, service) == {before[kind]: 100}
        assert report["reasons"][0].startswith("bake: bake after 100 %: failed after ")
        assert_common_artifacts(run, service, "fail")
        assert "Bake window" in run.artifact(f"stagecheck-report-{service}").data

    created_at = {kind: _at(run.report(s)["revision"]["created_at"]) for kind, s in names.items()}
    # the crash is seen by whichever watcher meets it first (a probe answered 503 by the dying instance, or
    # its traceback and exit in the logs); either way it is seen once it happened, well before the window ends
    crash = _bake(run, names["crash"])["data"]
    assert (_at(crash["first_evidence_at"]) - created_at["crash"]).total_seconds() >= 15
    assert (_at(crash["detected_at"]) - created_at["crash"]).total_seconds() >= 18
    late = _bake(run, names["late"])["data"]
    assert late["detected_by"] == "logs"
    assert late["reason"].startswith('1 new ERROR+ signature(s) (allowed 0): "ledger write failed after <n> (<n>)" x')
    assert '(e.g. "ledger write failed after ' in late["reason"]
    assert (_at(late["first_evidence_at"]) - created_at["late"]).total_seconds() >= 8
    # the traceback's lines (one DEFAULT entry each, on stderr) are one signature named after the exception
    trace = _bake(run, names["trace"])["data"]
    assert trace["detected_by"] == "logs"
    assert [g["signature"] for g in trace["new_signatures"]] == ["Traceback: KeyError: 'discount_code'"]
    (group,) = trace["new_signatures"]
    assert group["crash"] == "traceback" and group["streams"] == ["stderr"]
    assert group["example"].startswith("Traceback (most recent call last):")
    assert len(group["insert_ids"]) >= 5


async def test_three_services_bake_within_the_logging_quota(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    names = [created(f"quota-{n}") for n in range(3)]
    for name in names:
        baseline(run_clients, name, sample_image.digest_ref)
        scenario.add_service(name)
    # a canary: the hold at 50 % is watched too, then the bake at 100 %
    config = scenario.config([{"name": name, "source_dir": name} for name in names], steps="[50, 100]",
                             hold_s=HOLD_S, bake_s=HEALTHY_BAKE_S)
    scenario.commit()
    status = run_clients.admin("GET", "/sandbox/v1/status")
    assert status["logging"]["list_quota_per_minute"] == 60  # the sandbox enforces Cloud Logging's quota
    rejected_before = status["logging"]["list_rejected"]

    run = await run_flow(scenario, config)

    assert run.state.is_completed(), run.state.message
    reads = 0
    for name in names:
        report = run.report(name)
        assert report["verdict"] == "pass", report["reasons"]
        hold, bake = _bakes(run, name)
        assert [hold["data"]["label"], bake["data"]["label"]] == ["canary hold at 50 %", "bake after 100 %"]
        assert hold["status"] == bake["status"] == "PASS"
        assert hold["data"]["watched_s"] >= HOLD_S and hold["data"]["probes"] >= 2
        assert run.stage_names(name).index("bake") > run.stage_names(name).index("traffic")
        # the whole window was watched: probes all along, logs read incrementally
        assert bake["data"]["watched_s"] >= HEALTHY_BAKE_S and bake["data"]["time_to_detect_s"] is None
        assert bake["data"]["probes"] >= len(bake["data"]["urls"]) * 5
        assert bake["data"]["log_reads"] >= 2 and bake["data"]["log_retries"] == 0
        assert run.stage(name, "logs")["status"] in ("PASS", "WARN")
        assert "429" not in " ".join(report["reasons"] + report["warnings"])
        reads += bake["data"]["log_reads"] + hold["data"]["log_reads"]
        assert_common_artifacts(run, name, "pass")
    status = run_clients.admin("GET", "/sandbox/v1/status")
    assert status["logging"]["list_rejected"] == rejected_before  # the budget kept every read under the quota
    assert reads >= 6
