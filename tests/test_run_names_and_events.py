"""Pure parts of what the Prefect API shows: run and task run names, and the verdict events."""

from __future__ import annotations

from datetime import UTC, datetime

from flows.validate import run_name, run_tags
from stagecheck.model import RevisionInfo, ServiceReport, Verdict
from stagecheck.settings import ServiceConfig
from stagecheck.verdict_events import FAILED_EVENT, PASSED_EVENT, verdict_event
from tasks.common import stage_run_name


def test_flow_run_name_shows_services_and_short_sha() -> None:
    assert run_name(["checkout"], "1a2b3c4d5e6f") == "validate-checkout-1a2b3c4"
    assert run_name(["api", "web"], None) == "validate-api+web-HEAD"
    assert run_name([], "abcdef0123") == "validate-all-abcdef0"


def test_flow_run_tags_add_each_service_once_and_keep_the_run_own() -> None:
    assert run_tags(["stagecheck", "merge"], ["api", "web"]) == ["stagecheck", "merge", "service:api", "service:web"]
    assert run_tags(["service:api"], ["api"]) == ["service:api"]  # relabelling changes nothing
    assert run_tags([], []) == []


def test_task_run_names_show_stage_step_and_service() -> None:
    probe = stage_run_name(label_param="label")
    assert probe(parameters={"name": "probe-serving", "label": "[50 %] ", "service": "checkout"}) == \
        "probe-serving [50 %] · checkout"
    traffic = stage_run_name("traffic", label_param="step_label")
    assert traffic(parameters={"step_label": "step 1/2: 50 %", "service": "checkout"}) == \
        "traffic [step 1/2: 50 %] · checkout"
    build = stage_run_name("build")
    assert build(parameters={"service": ServiceConfig(name="web")}) == "build · web"
    assert stage_run_name("push")(parameters={}) == "push"


def _report(verdict: Verdict, **extra: object) -> ServiceReport:
    now = datetime.now(UTC)
    return ServiceReport(service="checkout", project="acme-staging", region="europe-west1", verdict=verdict,
                         started_at=now, finished_at=now, git_sha="1a2b3c4" + "0" * 33, git_ref="refs/heads/main",
                         **extra)  # type: ignore[arg-type]


def test_verdict_events_name_the_service_resource_and_carry_the_verdict() -> None:
    passed = verdict_event(_report(Verdict.PASS, revision=RevisionInfo(name="checkout-1a2b3c4-abc")),
                           "reports/checkout-1.json")
    assert passed.event == PASSED_EVENT
    assert passed.resource == {"prefect.resource.id": "stagecheck.service.checkout",
                               "prefect.resource.name": "checkout", "stagecheck.project": "acme-staging",
                               "stagecheck.region": "europe-west1"}
    assert passed.payload["revision"] == "checkout-1a2b3c4-abc" and passed.payload["verdict"] == "pass"
    assert passed.payload["report"] == "reports/checkout-1.json"
    failed = verdict_event(_report(Verdict.FAIL, decided_by="logs", reasons=["new error signature"]), "r.json")
    assert failed.event == FAILED_EVENT
    assert (failed.payload["decided_by"], failed.payload["reasons"], failed.payload["revision"]) == \
        ("logs", ["new error signature"], None)
