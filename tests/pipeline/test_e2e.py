"""The validation flow end to end, against the sandbox through the real Google clients, the real
Docker Engine and registry, on a temporary Prefect server. Each test asserts the verdict, the stage
that decided it, the evidence, the traffic afterwards, and the artifacts read back through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from flows.params import ValidationRequest
from flows.validate import validate
from tests.fixtures_sandbox import unique_name

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST


class Run:
    def __init__(self, state: Any, reports: dict[str, dict[str, Any]], artifacts: list[Any]) -> None:
        self.state, self.reports, self.artifacts = state, reports, artifacts

    def report(self, service: str) -> dict[str, Any]:
        return self.reports[service]

    def stage(self, service: str, name: str) -> dict[str, Any]:
        return next(s for s in self.reports[service]["stages"] if s["name"] == name)

    def stage_names(self, service: str) -> list[str]:
        return [s["name"] for s in self.reports[service]["stages"]]

    def artifact(self, key: str) -> Any:
        return next(a for a in self.artifacts if a.key == key)


async def run_flow(scenario: Any, config: Path, **request: Any) -> Run:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from stagecheck.concurrency import ensure_service_limits

    req = ValidationRequest(config=str(config), sandbox=True, **{"state_dir": scenario.sandbox.state_dir, **request})
    await ensure_service_limits([s.name for s in req.load().services])  # the setup `stagecheck validate` does
    state = await validate(**req.parameters(), return_state=True)  # type: ignore[call-overload]
    reports = {p.name.removesuffix("-latest.json"): json.loads(p.read_text())
               for p in (scenario.root / "reports").glob("*-latest.json")}
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return Run(state, reports, artifacts)


def serving(run_clients: Any, service: str) -> dict[str, int]:
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    out: dict[str, int] = {}
    for status in svc.traffic_statuses:
        if status.percent:
            name = svc.latest_ready_revision.rsplit("/", 1)[-1] if status.type_ == LATEST else status.revision
            out[name] = out.get(name, 0) + status.percent
    return out


def baseline(run_clients: Any, service: str, image: str, env: dict[str, str] | None = None) -> str:
    """A service already serving (100 % LATEST) before the release under test; returns its revision."""
    from tests.fixtures_sandbox import deploy

    svc = deploy(run_clients, service, image, env=env or {})
    return str(svc.latest_ready_revision.rsplit("/", 1)[-1])


def assert_common_artifacts(run: Run, service: str, verdict: str) -> None:
    md = run.artifact(f"stagecheck-report-{service}")
    assert md.type == "markdown"
    assert ("✅" if verdict == "pass" else "❌") in md.data
    table = run.artifact(f"stagecheck-criteria-{service}")
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert rows and all("status" in {k.lower() for k in row} for row in rows)
    report = run.report(service)
    assert report["verdict"] == verdict
    for key in ("stages", "criteria", "image", "revision", "rollback"):
        assert key in report


@pytest.fixture
def created(run_clients: Any) -> Any:
    names: list[str] = []

    def make(prefix: str = "e2e") -> str:
        names.append(unique_name(prefix))
        return names[-1]

    yield make
    for name in names:
        try:
            run_clients.services.delete_service(name=run_clients.service_name(name)).result(timeout=60)
        except gexc.NotFound:
            pass


async def test_pass_first_deployment_then_canary_release(prefect_api: None, scenario: Any, run_clients: Any,
                                                         created: Any) -> None:
    service = created("pass")
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"GREETING": "one"}}])
    scenario.commit("first")
    first = await run_flow(scenario, config)
    assert first.state.is_completed(), first.state.message
    report = first.report(service)
    assert report["verdict"] == "pass" and report["decided_by"] is None
    rev1 = report["revision"]["name"]
    assert serving(run_clients, service) == {rev1: 100}

    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"GREETING": "two"}}])
    (scenario.root / "svc" / "VERSION").write_text("2\n")
    sha = scenario.commit("second")
    second = await run_flow(scenario, config, git_sha=sha, git_ref="refs/heads/main")
    assert second.state.is_completed(), second.state.message
    report = second.report(service)
    assert report["verdict"] == "pass"
    assert (report["git_sha"], report["git_ref"]) == (sha, "refs/heads/main")
    rev2 = report["revision"]["name"]
    assert rev2 != rev1 and rev2.startswith(f"{service}-{sha[:7]}-")
    assert report["image"]["reference"].endswith(f":{sha}")
    assert report["image"]["digest"].startswith("sha256:")
    assert report["image"]["pinned"].endswith(report["image"]["digest"])
    assert report["image"]["previous_size_bytes"] and report["image"]["size_bytes"]
    # canary: 50 % then 100 %, each step probed on the direct and LB URLs
    names = second.stage_names(service)
    assert names.count("traffic") == 2 and names.count("probe-serving") == 2
    steps = [s["summary"] for s in report["stages"] if s["name"] == "traffic"]
    assert "50 %" in steps[0] and "100 %" in steps[1]
    probe = second.stage(service, "probe-serving")
    urls = {e["data"]["url_kind"]: e["data"] for e in probe["evidence"] if e["kind"] == "http"}
    assert set(urls) == {"service", "lb"}
    assert all(d["attempts"][-1]["status"] == 200 for d in urls.values())
    assert serving(run_clients, service) == {rev2: 100}
    assert report["previous_revision"]["name"] == rev1
    assert report["revision"]["created_at"] and report["revision"]["ready_at"]
    assert second.stage(service, "logs")["status"] in {"PASS", "WARN"}
    assert_common_artifacts(second, service, "pass")
    link = second.artifact(f"stagecheck-logs-{service}")
    assert rev2 in link.data


async def test_syntax_error_stops_before_build(prefect_api: None, scenario: Any, run_clients: Any, created: Any,
                                               docker_client: docker.DockerClient) -> None:
    service = created("syntax")
    scenario.add_service("svc")
    scenario.write("tools/broken.py", "def f(:\n    pass\n")
    scenario.write("deploy/values.yaml", "a: [1, 2\n")
    config = scenario.config([{"name": service, "source_dir": "svc"}])
    sha = scenario.commit()
    run = await run_flow(scenario, config)
    assert run.state.is_failed()
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "syntax"
    findings = run.stage(service, "syntax")["evidence"][0]["data"]["findings"]
    assert any(f.startswith("tools/broken.py:1:") for f in findings)
    assert any(f.startswith("deploy/values.yaml:") for f in findings)
    assert run.stage_names(service) == ["syntax"]
    assert not docker_client.images.list(name=f"{scenario.sandbox.registry}/{service}")
    assert not any(sha in tag for image in docker_client.images.list() for tag in image.tags)
    with pytest.raises(gexc.NotFound):
        run_clients.services.get_service(name=run_clients.service_name(service))
    assert_common_artifacts(run, service, "fail")


async def test_build_failure_reports_the_log_tail(prefect_api: None, scenario: Any, run_clients: Any,
                                                  created: Any) -> None:
    service = created("build")
    svc_dir = scenario.add_service("svc")
    (svc_dir / "Dockerfile").write_text("FROM scratch\nCOPY does-not-exist.txt /x\n")
    config = scenario.config([{"name": service, "source_dir": "svc"}])
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "build"
    build = run.stage(service, "build")
    assert "does-not-exist.txt" in build["summary"] + json.dumps(build["evidence"])
    assert "push" not in run.stage_names(service)
    assert_common_artifacts(run, service, "fail")
    with pytest.raises(gexc.NotFound):
        run_clients.services.get_service(name=run_clients.service_name(service))


async def test_revision_crashing_on_start_leaves_traffic_unchanged(prefect_api: None, scenario: Any, run_clients: Any,
                                                                   created: Any, sample_image: Any) -> None:
    service = created("crash")
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"CRASH_ON_START": "1"}}])
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "deploy"
    deploy = run.stage(service, "deploy")
    assert "failed" in deploy["summary"].lower() or "exit" in deploy["summary"].lower()
    assert report["rollback"]["needed"] is False and "never moved" in report["rollback"]["message"]
    assert serving(run_clients, service) == {before: 100}
    assert "probe-tagged" not in run.stage_names(service)
    assert_common_artifacts(run, service, "fail")


@pytest.mark.parametrize("cold_request", ["hold_then_429", "hold_until_served"])
async def test_cold_start_503s_are_ridden_out(prefect_api: None, scenario: Any, run_clients: Any, created: Any,
                                              sample_image: Any, fidelity: Any, cold_request: str) -> None:
    service = created("cold")
    baseline(run_clients, service, sample_image.digest_ref)
    # the sandbox scales idle instances to zero at once and holds a request only 0.3 s for a starting
    # instance, then answers 429, as Cloud Run's direct URL may on a slow cold start; or (UNSURE, fidelity
    # `cold_request`) it holds the request until the instance serves it
    run_clients.admin("PUT", f"/sandbox/v1/services/{service}/behavior",
                      {"cold_start_hold_s": 0.3, "scale_to_zero_after_s": 0.0})
    fidelity(cold_request=cold_request)
    scenario.add_service("svc")
    # every request after the first healthy answer finds the instance scaled to zero again here, which a
    # probe now (issue 8) counts as a failure: one healthy answer per probe, and no bake to watch
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"STARTUP_DELAY_S": "2"}}],
                             steps="[100]", successes=1, bake_s=0)
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    tagged = run.stage(service, "probe-tagged")["evidence"][0]["data"]
    statuses = [a["status"] for a in tagged["attempts"]]
    if cold_request == "hold_then_429":
        # the held cold request is answered 429 "no available instance", ridden out as a cold start
        assert tagged["cold_start_retries"] >= 1
        assert 429 in statuses and statuses[-1] == 200
        assert {a["outcome"] for a in tagged["attempts"] if a["status"] == 429} == {"cold_start"}
    else:
        # the cold request waits for the instance and the instance answers it: no 429 to ride out
        assert 429 not in statuses and statuses[-1] == 200
    assert tagged["first_success_s"] >= 1.0
    # the cold-start 429s are counted apart, not as server errors
    logs = run.stage(service, "logs")
    assert logs["status"] in {"PASS", "WARN"}
    assert_common_artifacts(run, service, "pass")


async def test_new_error_signature_fails_and_rolls_back(prefect_api: None, scenario: Any, run_clients: Any,
                                                        created: Any, sample_image: Any) -> None:
    service = created("logerr")
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc",
                               "env": {"ERROR_RATE": "5", "ERROR_MESSAGE": "ledger write failed after {n} ms ({id})"}}],
                             steps="[100]", bake_s=0)  # no bake: the logs gate itself is under test here
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "logs"
    logs = run.stage(service, "logs")
    text = json.dumps(logs)
    assert "ledger write failed" in text
    assert report["rollback"]["performed"] is True and report["rollback"]["ok"] is True
    assert serving(run_clients, service) == {before: 100}
    assert run.stage_names(service)[-1] == "rollback"
    assert_common_artifacts(run, service, "fail")
    assert "Rollback" in run.artifact(f"stagecheck-report-{service}").data


async def test_pre_existing_error_signature_passes_and_is_listed(prefect_api: None, scenario: Any, run_clients: Any,
                                                                 created: Any, sample_image: Any) -> None:
    service = created("preex")
    env = {"ERROR_RATE": "5", "ERROR_MESSAGE": "cache refresh slow after {n} ms ({id})"}
    baseline(run_clients, service, sample_image.digest_ref, env=env)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": env}], steps="[100]")
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    logs = run.stage(service, "logs")
    assert logs["status"] == "WARN"
    assert "cache refresh slow" in json.dumps(logs)
    assert any("pre-existing" in w.lower() for w in report["warnings"]) or "pre-existing" in logs["summary"].lower()
    assert_common_artifacts(run, service, "pass")


async def test_degraded_health_is_a_warning(prefect_api: None, scenario: Any, run_clients: Any, created: Any,
                                            sample_image: Any) -> None:
    service = created("degr")
    baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"HEALTH_STATUS": "degraded"}}],
                             steps="[100]")
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass"
    assert run.stage(service, "probe-tagged")["status"] == "WARN"
    assert any("degraded" in w for w in report["warnings"])
    assert any(c["status"] == "WARN" for c in report["criteria"])
    assert_common_artifacts(run, service, "pass")


async def test_direct_url_failing_while_lb_is_fine_fails_with_evidence(prefect_api: None, scenario: Any,
                                                                       run_clients: Any, created: Any,
                                                                       sample_image: Any) -> None:
    service = created("direct")
    before = baseline(run_clients, service, sample_image.digest_ref)
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": f"proxy.service.{service}", "count": -1, "status": 500})
    try:
        scenario.add_service("svc")
        # a canary: the failure shows at the first step (50 %), and the rollback restores the old split
        config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[50, 100]")
        scenario.commit()
        run = await run_flow(scenario, config)
    finally:
        run_clients.admin("DELETE", f"/sandbox/v1/faults?method=proxy.service.{service}")
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "probe-serving"
    evidence = {e["data"]["url_kind"]: e["data"] for e in run.stage(service, "probe-serving")["evidence"]
                if e["kind"] == "http"}
    assert evidence["service"]["status"] == "FAIL" and evidence["service"]["attempts"][0]["status"] == 500
    assert evidence["lb"]["status"] == "PASS"
    assert run.stage_names(service)[-3:] == ["traffic", "probe-serving", "rollback"]
    assert "50 %" in run.stage(service, "traffic")["summary"]
    assert report["rollback"]["performed"] and report["rollback"]["ok"]
    assert serving(run_clients, service) == {before: 100}
    # the candidate keeps its tag at 0 % (reachable for debugging), and nothing else changed
    tags = {t["tag"]: t for t in report["traffic_after"] if t.get("tag")}
    assert tags[f"sc-{report['git_sha'][:7]}"]["percent"] == 0
    assert_common_artifacts(run, service, "fail")


async def test_two_services_in_one_run(prefect_api: None, scenario: Any, run_clients: Any, created: Any) -> None:
    one, two = created("duo-a"), created("duo-b")
    scenario.add_service("a")
    scenario.add_service("b")
    config = scenario.config([{"name": one, "source_dir": "a"}, {"name": two, "source_dir": "b"}], steps="[100]")
    scenario.commit()
    run = await run_flow(scenario, config)
    assert run.state.is_completed(), run.state.message
    assert run.report(one)["verdict"] == run.report(two)["verdict"] == "pass"
    assert run.report(one)["revision"]["name"].startswith(one)
    assert run.artifact("stagecheck-run").type == "markdown"
    for name in (one, two):
        assert_common_artifacts(run, name, "pass")


# ---------------------------------------------------------------- traffic as it is, cleanup, ingress


def _stored(run_clients: Any, service: str) -> list[tuple[str, int, str]]:
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    return [("LATEST" if t.type_ == LATEST else t.revision, t.percent, t.tag) for t in svc.traffic]


async def test_failed_deploy_leaves_no_candidate_target_and_the_next_update_works(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:
    service = created("stale")
    before = baseline(run_clients, service, sample_image.digest_ref)
    assert _stored(run_clients, service) == [("LATEST", 100, "")]
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"CRASH_ON_START": "1"}}])
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "deploy"
    candidate = report["revision"]["name"]
    cleanup = run.stage(service, "rollback")
    assert cleanup["status"] == "PASS", cleanup["summary"]
    # the split is back as configured (LATEST stays LATEST), the failed candidate is no target any more
    assert _stored(run_clients, service) == [("LATEST", 100, "")]
    assert serving(run_clients, service) == {before: 100}
    assert report["rollback"]["performed"] is True and "never moved" in report["rollback"]["message"]
    # so the next deploy (gcloud-style read-modify-write of the whole service) is not broken by it
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.template.revision = ""
    svc.template.containers[0].env = [run_v2.EnvVar(name="NEXT", value="1")]
    after = run_clients.services.update_service(service=svc).result(timeout=60)
    assert after.latest_ready_revision.rsplit("/", 1)[-1] not in (before, candidate)


async def test_passed_release_returns_to_latest_and_prunes_old_own_tags(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:
    from tests.fixtures_sandbox import FAST_POLL

    service = created("rel")
    first = baseline(run_clients, service, sample_image.digest_ref)
    # three older stagecheck tags (oldest first) and a foreign one, as earlier releases would leave them
    revisions = [first]
    for i in range(2):
        svc = run_clients.services.get_service(name=run_clients.service_name(service))
        svc.template.containers[0].env = [run_v2.EnvVar(name="N", value=str(i))]
        svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
        revisions.append(svc.latest_ready_revision.rsplit("/", 1)[-1])
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100)] + [
        run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                             revision=rev, tag=tag)
        for rev, tag in ((revisions[0], "sc-0000001"), (revisions[1], "sc-0000002"), (revisions[2], "sc-0000003"),
                         (revisions[0], "blue"))]
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)

    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
    config.write_text(config.read_text().replace("[traffic]\n", "[traffic]\nafter_pass = \"latest\"\nkeep_tags = 2\n"))
    sha = scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    candidate = report["revision"]["name"]
    release = run.stage(service, "release")
    assert release["status"] == "PASS" and "LATEST=100" in release["summary"]
    stored = _stored(run_clients, service)
    assert stored[0] == ("LATEST", 100, "")  # the next `gcloud run deploy` serves its own revision
    tags = {tag: (rev, pct) for rev, pct, tag in stored if tag}
    # the two newest own tags are kept (the candidate's and sc-0000003), the foreign tag always
    assert tags == {f"sc-{sha[:7]}": (candidate, 0), "sc-0000003": (revisions[2], 0), "blue": (revisions[0], 0)}
    assert serving(run_clients, service) == {candidate: 100}
    assert release["data"]["removed_tags"] == ["sc-0000002", "sc-0000001"]
    # the probes reached the candidate's two instances: its request log names both
    from tests.fixtures_sandbox import logging_client_for

    sandbox = scenario.sandbox
    logs = logging_client_for(sandbox)
    entries = logs.list_entries(filter_=(f'logName="projects/{sandbox.project}/logs/run.googleapis.com%2Frequests" '
                                         f'AND resource.labels.revision_name="{candidate}"'))
    assert len({e.labels["instanceId"] for e in entries}) == 2


async def test_ingress_closed_urls_are_advisory_and_the_release_passes_via_the_lb(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:
    from tests.fixtures_sandbox import FAST_POLL

    service = created("ilb")
    baseline(run_clients, service, sample_image.digest_ref)
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    # the LB: /<service>/... (the sandbox's default URL map) and a serverless NEG URL mask for tags
    run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [{"url_mask": "<tag>.<service>.tags.sandbox.test"}],
                                                "default_routes": True})
    try:
        scenario.add_service("svc")
        config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
        lb = scenario.sandbox.lb_url
        config.write_text(f'lb_tag_url = "{lb}"\nlb_tag_host = "{{tag}}.{{service}}.tags.sandbox.test"\n'
                          + config.read_text())
        scenario.commit()
        run = await run_flow(scenario, config)
    finally:
        run_clients.admin("PUT", "/sandbox/v1/lb", {"routes": [], "default_routes": True})
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    tagged = run.stage(service, "probe-tagged")
    http = [e["data"] for e in tagged["evidence"] if e["kind"] == "http"]
    assert [(d["url"], d["attempts"][-1]["status"]) for d in http] == [(f"{lb}/health", 200)]  # through the LB
    closed = [c for c in tagged["criteria"] if c["status"] == "WARN"]
    assert closed and closed[0]["observed"].startswith("closed by ingress internal-and-cloud-load-balancing")
    probe = run.stage(service, "probe-serving")
    kinds = {e["data"]["url_kind"]: e["data"] for e in probe["evidence"] if e["kind"] == "http"}
    assert set(kinds) == {"lb"} and kinds["lb"]["attempts"][-1]["status"] == 200
    assert any("closed by ingress" in w for w in report["warnings"])
    assert not any("closed by ingress" in r for r in report["reasons"])


async def test_a_worker_inside_the_vpc_probes_the_tag_url_of_an_internal_service_before_traffic(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:
    """`worker_in_vpc = true`: the run.app URLs of an `internal` service are reachable from the worker, so the
    pre-traffic tag probe runs (not an advisory row) and the serving URL is probed too."""
    from tests.fixtures_sandbox import FAST_POLL

    service = created("vpc")
    baseline(run_clients, service, sample_image.digest_ref)
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    run_clients.admin("PUT", f"/sandbox/v1/services/{service}/behavior", {"vpc_clients": True})  # the worker's network
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
    config.write_text("worker_in_vpc = true\n" + config.read_text())
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    tagged = run.stage(service, "probe-tagged")
    http = [e["data"] for e in tagged["evidence"] if e["kind"] == "http"]
    assert [(d["url_kind"], d["attempts"][-1]["status"]) for d in http] == [("tagged", 200)]
    assert not [c for c in tagged["criteria"] if c["status"] == "WARN"]
    probe = run.stage(service, "probe-serving")
    assert {e["data"]["url_kind"] for e in probe["evidence"] if e["kind"] == "http"} == {"service"}
    closed = [w for w in report["warnings"] if "closed by ingress" in w]
    assert closed and all("load balancer" in w for w in closed)  # only the external LB: `internal` closes it


async def test_a_stale_failed_target_left_by_another_deploy_is_dropped_before_deploying(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:
    from tests.fixtures_sandbox import FAST_POLL

    service = created("stale2")
    good = baseline(run_clients, service, sample_image.digest_ref)
    # what a failed `gcloud run deploy --no-traffic --tag cand` leaves behind: a tag-only target to a failed revision
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.template.revision = f"{service}-bad"
    # its image is missing (the template a release copies keeps the service's env, so the failure is the image's)
    svc.template.containers[0].image = f"{scenario.sandbox.registry}/stagecheck-missing:none"
    svc.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100),
                   run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                                        revision=f"{service}-bad", tag="cand")]
    with pytest.raises(gexc.GoogleAPICallError):
        run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    assert ("cand" in {tag for _, _, tag in _stored(run_clients, service)})

    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    assert "stale targets of revisions that are not Ready" in run.stage(service, "inspect")["summary"]
    assert f"{service}-bad" not in {rev for rev, _, _ in _stored(run_clients, service)}
    assert serving(run_clients, service) == {report["revision"]["name"]: 100}
    assert report["previous_revision"]["name"] == good
