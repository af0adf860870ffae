"""The `contract` stage end to end: the real flow against the sandbox, the sample service serving the
OpenAPI document its OPENAPI_VARIANT selects (examples/sample-service/app/openapi), the baseline read
through a tag of the serving revision, the candidate through its own tag URL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline.test_e2e import baseline, created, run_flow, serving  # noqa: F401  (created: a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

IGNORED = " - 2026-12-07 DELETE /items/{item_id} api removed without deprecation (clients moved to v2)\n"


def tags(run_clients: Any, service: str) -> dict[str, tuple[str, int]]:
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    return {t.tag: (t.revision, t.percent) for t in svc.traffic_statuses if t.tag}


async def test_removed_operation_fails_at_contract_and_traffic_never_moves(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("contract")
    before = baseline(run_clients, service, sample_image.digest_ref, env={"OPENAPI_VARIANT": "base"})
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"OPENAPI_VARIANT": "removed-operation"}}],
                             steps="[100]", bake_s=0)
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "contract", report["reasons"]
    assert run.stage_names(service)[-2:] == ["probe-tagged", "contract"]  # nothing after it: no traffic stage
    found = report["contract"]["findings"]
    assert [(f["id"], f["level"], f["operation"]) for f in found] == [
        ("api-removed-without-deprecation", "ERR", "DELETE /items/{item_id}")]
    assert report["contract"]["baseline_revision"] == before
    assert report["rollback"]["needed"] is False and "never moved" in report["rollback"]["message"]
    assert serving(run_clients, service) == {before: 100}
    now = tags(run_clients, service)
    # the baseline was read through the sc-base tag (traffic unchanged); the candidate keeps its tag at 0 %
    assert now["sc-base"] == (before, 0)
    assert now[f"sc-{report['git_sha'][:7]}"] == (report["revision"]["name"], 0)
    assert report["contract"]["baseline_url"].startswith(run.stage(service, "contract")["evidence"][0]["data"]["url"]
                                                         .removesuffix("/openapi.json"))
    md = run.artifact(f"stagecheck-report-{service}").data
    assert "## Breaking changes audit" in md and "`api-removed-without-deprecation`" in md


@pytest.mark.parametrize("tag_audience", ["service_url", "tag_url"])  # unsure: which audience a tag URL accepts
async def test_added_optional_field_passes_with_an_info_finding(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any,  # noqa: F811
        fidelity: Any, tag_audience: str) -> None:
    fidelity(tag_audience=tag_audience)
    service = created("contract")
    baseline(run_clients, service, sample_image.digest_ref, env={"OPENAPI_VARIANT": "base"})
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc",
                               "env": {"OPENAPI_VARIANT": "added-optional-field"}}], steps="[100]", bake_s=0)
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    assert run.stage(service, "contract")["status"] == "PASS"
    assert {(f["id"], f["level"], f["location"]) for f in report["contract"]["findings"]} == {
        ("response-optional-property-added", "INFO", "response 200 .color"),
        ("response-optional-property-added", "INFO", "response 201 .color")}
    md = run.artifact(f"stagecheck-report-{service}").data
    assert "**INFO** `response-optional-property-added` · `GET /items/{item_id}` · `response 200 .color`" in md
    # the baseline's tag is gone once traffic moved (each step's split comes from the split before the release)
    assert "sc-base" not in tags(run_clients, service)
    assert all(t.get("tag") != "sc-base" for t in report["traffic_after"])


async def test_ignored_breaking_change_passes(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("contract")
    baseline(run_clients, service, sample_image.digest_ref, env={"OPENAPI_VARIANT": "base"})
    scenario.add_service("svc")
    scenario.write("accepted-changes.md", "# Accepted API changes\n\n" + IGNORED)
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"OPENAPI_VARIANT": "removed-operation"},
                               "contract": {"ignore_file": "accepted-changes.md"}}], steps="[100]", bake_s=0)
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    assert [(f["id"], f["ignored"]) for f in report["contract"]["findings"]] == [
        ("api-removed-without-deprecation", True)]
    assert "1 ignored" in run.stage(service, "contract")["summary"]
