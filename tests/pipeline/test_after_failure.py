"""After a failure (issue 17): the next release starts from the revision that serves, the variables
stagecheck set and the config dropped are removed while those set outside it stay, and a failed gate's
reasons name what the revision logged around the failure. End to end against the sandbox through the
real Google clients, the real Docker Engine and registry, on a temporary Prefect server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from tests.fixtures_sandbox import FAST_POLL, RunClients
from tests.pipeline.test_e2e import created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def revision(run_clients: RunClients, service: str, name: str) -> run_v2.Revision:
    return run_clients.revisions.get_revision(name=f"{run_clients.service_name(service)}/revisions/{name}")


def env_of(rev: run_v2.Revision) -> dict[str, str]:
    (main,) = rev.containers
    return {e.name: e.value for e in main.env}


def create_service(run_clients: RunClients, service: str, image: str, env: dict[str, str],
                   **template: Any) -> str:
    """A service deployed directly through the API (not by stagecheck); returns its serving revision."""
    container = run_v2.Container(image=image, env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()])
    svc = run_v2.Service(template=run_v2.RevisionTemplate(containers=[container], **template))
    done = run_clients.services.create_service(parent=run_clients.parent, service_id=service,
                                               service=svc).result(polling=FAST_POLL, timeout=60)
    return str(done.latest_ready_revision.rsplit("/", 1)[-1])


@pytest.fixture
def logging_faults(run_clients: RunClients) -> Iterator[Any]:
    def add(**fault: Any) -> None:
        run_clients.admin("POST", "/sandbox/v1/faults", {"method": "LoggingServiceV2.ListLogEntries", **fault})

    yield add
    run_clients.admin("DELETE", "/sandbox/v1/faults")


async def test_a_failed_release_does_not_leak_into_the_next_and_dropped_variables_go(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("after")
    # serving before stagecheck: OUTSIDE was set by hand (a direct deploy), stagecheck never managed it
    first = create_service(run_clients, service, sample_image.digest_ref, {"OUTSIDE": "by-hand"})
    scenario.add_service("svc")

    # 1. a release that sets FOO_DEBUG passes: the serving revision records the variables stagecheck set
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"FOO_DEBUG": "1"}}], steps="[100]")
    scenario.commit("foo debug on")
    run = await run_flow(scenario, config)
    assert run.report(service)["verdict"] == "pass", run.report(service)["reasons"]
    debug = run.report(service)["revision"]["name"]
    assert env_of(revision(run_clients, service, debug)) == {"OUTSIDE": "by-hand", "FOO_DEBUG": "1"}
    assert revision(run_clients, service, debug).annotations["stagecheck.dev/managed-env"] == "FOO_DEBUG"

    # 2. a release whose candidate cannot start fails at deploy; traffic stays on the release of step 1, and the
    #    service's template is now the failed candidate's (CRASH_ON_START=1)
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"CRASH_ON_START": "1"}}],
                             steps="[100]")
    scenario.commit("crashes on start")
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "deploy", report["reasons"]
    assert serving(run_clients, service) == {debug: 100}
    template = run_clients.services.get_service(name=run_clients.service_name(service)).template
    assert {e.name: e.value for e in template.containers[0].env}.get("CRASH_ON_START") == "1"

    # 3. the next release names neither variable: it starts from what serves (no CRASH_ON_START), FOO_DEBUG,
    #    which stagecheck set and the config dropped, is removed, OUTSIDE stays; and it passes
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"GREETING": "three"}}],
                             steps="[100]")
    scenario.commit("greeting")
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    new = report["revision"]["name"]
    assert serving(run_clients, service) == {new: 100}
    assert env_of(revision(run_clients, service, new)) == {"OUTSIDE": "by-hand", "GREETING": "three"}
    assert revision(run_clients, service, new).annotations["stagecheck.dev/managed-env"] == "GREETING"
    (template_note,) = [e for e in run.stage(service, "deploy")["evidence"] if e["kind"] == "template"]
    assert template_note["summary"].startswith(f"template copied from the serving revision {debug} (the service's "
                                               "template is ")
    assert template_note["data"]["env_removed"] == ["FOO_DEBUG"]
    assert template_note["data"]["env_kept"] == ["OUTSIDE"]
    assert first != debug != new


async def test_a_release_after_a_failed_one_starts_from_the_serving_revisions_configuration(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("serving")
    account = f"{service}@stagecheck-sandbox.iam.gserviceaccount.com"
    good = create_service(run_clients, service, sample_image.digest_ref, {"KEEP": "1"}, service_account=account,
                          scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=4))
    # someone's failed deploy (outside stagecheck): another account, other scaling, an extra variable; it never
    # becomes Ready, traffic stays pinned to the good revision, the service's template is the failed one
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.template = run_v2.RevisionTemplate(
        containers=[run_v2.Container(image=sample_image.digest_ref, env=[
            run_v2.EnvVar(name="KEEP", value="1"), run_v2.EnvVar(name="CRASH_ON_START", value="1"),
            run_v2.EnvVar(name="BROKEN", value="yes")])],
        service_account=f"other-{service}@stagecheck-sandbox.iam.gserviceaccount.com",
        scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=9))
    svc.traffic = [run_v2.TrafficTarget(
        type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, revision=good, percent=100)]
    with pytest.raises(gexc.GoogleAPICallError, match=re.escape("Container called exit(1).")):
        run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    failed_template = run_clients.services.get_service(name=run_clients.service_name(service)).template
    assert failed_template.service_account.startswith("other-")
    assert serving(run_clients, service) == {good: 100}

    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"GREETING": "hi"}}], steps="[100]")
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    rev = revision(run_clients, service, report["revision"]["name"])
    assert rev.service_account == account
    assert (rev.scaling.min_instance_count, rev.scaling.max_instance_count) == (0, 4)
    assert env_of(rev) == {"KEEP": "1", "GREETING": "hi"}
    assert serving(run_clients, service) == {rev.name.rsplit("/", 1)[-1]: 100}


async def test_a_crash_first_seen_by_a_probe_is_named_in_the_reasons(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any, sample_image: Any,  # noqa: F811
        logging_faults: Any) -> None:
    service = created("why")
    before = create_service(run_clients, service, sample_image.digest_ref, {})
    scenario.add_service("svc")
    # the candidate (one instance at most, 8 s to start) crashes 20 s after it starts, a few seconds into the 45 s
    # bake, and its replacement is not up within the probe's 5 s timeout; Cloud Logging answers the bake's first
    # read slowly (30 s), so only the probes can see the crash while it is watched
    logging_faults(count=1, latency_s=30)
    config = scenario.config([{"name": service, "source_dir": "svc", "max_instances": 1,
                               "env": {"CRASH_AFTER_S": "20", "STARTUP_DELAY_S": "8"}}], steps="[100]", bake_s=45)
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "bake", report["reasons"]
    bake = run.stage(service, "bake")
    assert bake["data"]["detected_by"] == "probe", bake["data"]
    assert report["rollback"]["performed"] and report["rollback"]["ok"]
    assert serving(run_clients, service) == {before: 100}
    # the reasons: the probe's failure, then what the revision logged, with the exception line
    assert report["reasons"][0].startswith("bake: ")
    logged = [r for r in report["reasons"] if r.startswith("bake: the revision logged crash (")]
    assert logged and "RuntimeError: connection pool exhausted" in logged[0], report["reasons"]
    assert any("RuntimeError: connection pool exhausted" in c for c in bake["causes"])
    crash_evidence = [e for e in bake["evidence"] if e["summary"].startswith("around the failure: crash (")]
    assert crash_evidence and crash_evidence[0]["data"]["insert_ids"], bake["evidence"]
    assert "RuntimeError: connection pool exhausted" in run.artifact(f"stagecheck-report-{service}").data


async def test_a_new_error_logged_as_a_probe_fails_is_named_in_the_reasons(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("err")
    before = create_service(run_clients, service, sample_image.digest_ref, {})
    scenario.add_service("svc")
    # /health answers 500 from the candidate's second second on (thirty successes take longer than that), and
    # the app logs why as it answers: the tagged probe fails, before any traffic moves
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"HEALTH_FAIL_AFTER_S": "1"}}],
                             steps="[100]", successes=30)
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "probe-tagged", report["reasons"]
    assert serving(run_clients, service) == {before: 100}
    assert report["reasons"][0].startswith("probe-tagged: ")
    logged = [r for r in report["reasons"] if r.startswith("probe-tagged: the revision logged new ERROR: ")]
    assert any("health check failed: database connection refused (db-primary:5432)" in r for r in logged), \
        report["reasons"]
    stage = run.stage(service, "probe-tagged")
    assert any(e["summary"].startswith("around the failure: new ERROR: health check failed") for e in stage["evidence"])
