"""The pipeline keeps the service's own configuration, updates with field masks, handles 409s, and
checks names and the image platform — against the sandbox through the real clients where it talks
to an API, directly where it decides."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
from google.cloud import run_v2
from google.protobuf import duration_pb2

from stagecheck.clients.cloudrun import (
    DEPLOY_MASK,
    TRAFFIC_MASK,
    CloudRun,
    EtagMismatch,
    RevisionNameConflict,
    build_template,
    split_from_proto,
)
from stagecheck.clients.images import Images
from stagecheck.container_platform import judge_platform
from stagecheck.model import Status, TrafficTarget
from stagecheck.settings import (
    MAX_SERVICE_NAME,
    TRAFFIC_TAG_LENGTH,
    TRAFFIC_TAG_PREFIX,
    ConfigError,
    ServiceConfig,
    Settings,
    load_settings,
)
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "examples" / "sample-service"
GEN2 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
CONNECTOR = "projects/stagecheck-sandbox/locations/europe-west1/connectors/staging-vpc"


# ------------------------------------------------------------------ build_template (pure)


def production_template(image: str) -> run_v2.RevisionTemplate:
    """What a real service typically runs with; the sidecar comes first (no port) on purpose."""
    sidecar = run_v2.Container(name="otel", image="otel/collector:1", env=[run_v2.EnvVar(name="OTEL", value="1")])
    main = run_v2.Container(
        name="app", image=image,
        ports=[run_v2.ContainerPort(name="h2c", container_port=8080)],
        env=[run_v2.EnvVar(name="KEEP_ME", value="1"), run_v2.EnvVar(name="GREETING", value="old"),
             run_v2.EnvVar(name="API_KEY", value_source=run_v2.EnvVarSource(
                 secret_key_ref=run_v2.SecretKeySelector(secret="api-key", version="2")))],
        resources=run_v2.ResourceRequirements(limits={"cpu": "2", "memory": "2Gi"}, cpu_idle=False,
                                              startup_cpu_boost=True),
        volume_mounts=[run_v2.VolumeMount(name="cloudsql", mount_path="/cloudsql")],
        startup_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/ready"), period_seconds=5),
        liveness_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/live")),
    )
    return run_v2.RevisionTemplate(
        revision="web-00007-abc", containers=[sidecar, main],
        service_account="web-runtime@p.iam.gserviceaccount.com",
        vpc_access=run_v2.VpcAccess(connector=CONNECTOR, egress=run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC),
        volumes=[run_v2.Volume(name="cloudsql", cloud_sql_instance=run_v2.CloudSqlInstance(instances=["p:r:db"]))],
        timeout=duration_pb2.Duration(seconds=900), max_instance_request_concurrency=12,
        execution_environment=GEN2, session_affinity=True, encryption_key="k",
        scaling=run_v2.RevisionScaling(min_instance_count=1, max_instance_count=7),
        labels={"team": "payments", "stagecheck-sha": "0000000"}, annotations={"example.com/owner": "payments"},
    )


def test_build_template_copies_the_current_template_and_changes_only_what_a_deploy_changes() -> None:
    current = production_template("r/web@sha256:old")
    svc = ServiceConfig(name="web", env={"GREETING": "new", "ADDED": "yes"}, secrets={"DB_PASSWORD": "db:3"})
    t = build_template(svc, image="r/web@sha256:new", revision="web-abc1234-xyz",
                       labels={"stagecheck-sha": "abc1234", "managed-by": "stagecheck"}, current=current)
    # changed: revision, labels (merged), image and env of the ingress container
    assert t.revision == "web-abc1234-xyz"
    assert dict(t.labels) == {"team": "payments", "stagecheck-sha": "abc1234", "managed-by": "stagecheck"}
    sidecar, main = t.containers
    assert main.image == "r/web@sha256:new" and sidecar == current.containers[0]
    assert [(e.name, e.value, e.value_source.secret_key_ref.secret) for e in main.env] == [
        ("KEEP_ME", "1", ""), ("GREETING", "new", ""), ("API_KEY", "", "api-key"), ("ADDED", "yes", ""),
        ("DB_PASSWORD", "", "db")]
    # kept: everything else
    for fld in ("service_account", "vpc_access", "volumes", "timeout", "max_instance_request_concurrency",
                "execution_environment", "session_affinity", "encryption_key", "scaling"):
        assert getattr(t, fld) == getattr(current, fld), fld
    # the annotations are kept, plus the record of the variables the config set (stagecheck.managed_env)
    assert dict(t.annotations) == {"example.com/owner": "payments",
                                   "stagecheck.dev/managed-env": "ADDED,DB_PASSWORD,GREETING"}
    assert main.volume_mounts == current.containers[1].volume_mounts
    assert main.startup_probe == current.containers[1].startup_probe
    assert main.liveness_probe == current.containers[1].liveness_probe
    assert (main.ports[0].name, main.ports[0].container_port) == ("h2c", 8080)
    # resources the config does not set stay as the service has them, cpu_idle included (always-on here)
    assert dict(main.resources.limits) == {"cpu": "2", "memory": "2Gi"}
    assert main.resources.cpu_idle is False and main.resources.startup_cpu_boost is True
    # the input is not modified
    assert current.revision == "web-00007-abc" and current.containers[1].image == "r/web@sha256:old"


def test_build_template_applies_what_the_config_sets_explicitly() -> None:
    current = production_template("r/web@sha256:old")
    svc = ServiceConfig(name="web", cpu="1", memory="1Gi", cpu_idle=True, min_instances=0, max_instances=3, port=9000)
    t = build_template(svc, image="i", revision="web-r", labels={}, current=current)
    main = t.containers[1]
    assert dict(main.resources.limits) == {"cpu": "1", "memory": "1Gi"}
    assert main.resources.cpu_idle is True and main.resources.startup_cpu_boost is True
    assert (t.scaling.min_instance_count, t.scaling.max_instance_count) == (0, 3)
    assert main.ports[0].container_port == 9000
    assert t.service_account == current.service_account


def test_first_deployment_template_comes_from_the_config() -> None:
    t = build_template(ServiceConfig(name="web"), image="i", revision="web-r", labels={"a": "b"})
    (main,) = t.containers
    assert dict(main.resources.limits) == {"cpu": "1", "memory": "512Mi"}
    assert main.resources.cpu_idle is True  # set explicitly: resources without it mean always-on CPU
    assert (t.scaling.min_instance_count, t.scaling.max_instance_count) == (0, 3)
    assert t.service_account == "" and not t.volumes


# ------------------------------------------------------------------ names at config load


def _service_config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "stagecheck.toml"
    path.write_text('project = "demo-project"\nregion = "europe-west1"\nregistry = "127.0.0.1:5000"\n'
                    f'[[services]]\nname = "{name}"\nsource_dir = "."\n')
    return path


def test_service_name_plus_stagecheck_tag_fits_in_46_characters(tmp_path: Path) -> None:
    assert load_settings(_service_config(tmp_path, "s" * 36), environ={}).services[0].name == "s" * 36
    with pytest.raises(ConfigError) as info:
        load_settings(_service_config(tmp_path, "s" * 37), environ={})
    text = str(info.value)
    assert "services.0.name" in text
    assert "Combined traffic tag and service name cannot exceed 46 characters" in text
    assert "at most 36" in text


def test_the_bound_matches_the_tag_the_flow_gives_candidates() -> None:
    from flows.validate import ServiceValidation

    validation = ServiceValidation.__new__(ServiceValidation)  # only the tag property is exercised
    validation.git_sha = "0123456789abcdef0123456789abcdef01234567"
    assert validation.tag.startswith(TRAFFIC_TAG_PREFIX) and len(validation.tag) == TRAFFIC_TAG_LENGTH
    assert MAX_SERVICE_NAME + TRAFFIC_TAG_LENGTH == 46


def test_bad_name_fails_stagecheck_validate_with_exit_2_before_anything_is_built(tmp_path: Path) -> None:
    _service_config(tmp_path, "checkout-" + "x" * 30)  # 39 characters: a valid Cloud Run name, too long here
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    proc = subprocess.run([sys.executable, "-m", "cli.main", "validate", "--config", "stagecheck.toml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "services.0.name" in proc.stderr
    assert "Combined traffic tag and service name cannot exceed 46 characters" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(("service", "words"), [
    ({"cpu": "1.5"}, "CPU above 1 must be a whole number"),
    ({"cpu": "16"}, "between 0.08 and 8"),
    ({"cpu": "0.5", "cpu_idle": False}, "cpu below 1 requires CPU only during requests"),
    ({"cpu": "1", "memory": "8Gi"}, "memory 8Gi is more than 1 CPU allows"),
])
def test_cpu_and_memory_the_api_would_reject_fail_at_config_load(service: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={}, overrides={"project": "demo-project", "region": "europe-west1",
                                                   "registry": "r", "services": [{"name": "web", **service}]})
    assert "services.0" in str(info.value) and words in str(info.value)


# ------------------------------------------------------------------ image platform


def test_platform_judgement() -> None:
    ok = judge_platform("linux", "amd64", "linux", "amd64")
    assert ok.status is Status.PASS and ok.note is None
    arm = judge_platform("linux", "amd64", "linux", "arm64")
    assert arm.status is Status.PASS and arm.note is not None and "linux/arm64 Docker Engine" in arm.note
    wrong = judge_platform("linux", "arm64", "linux", "arm64")
    assert wrong.status is Status.FAIL and "linux/arm64" in wrong.observed and "linux/amd64" in wrong.observed


@pytest.mark.docker
def test_build_asks_for_linux_amd64_and_reads_the_architecture_back(docker_env: Any, docker_client: Any,
                                                                    sample_image: Any) -> None:
    images = Images(docker_env.docker_host)
    tag = f"{docker_env.registry}/platform-check:{uuid.uuid4().hex[:8]}"
    try:
        result = images.build(SAMPLE, "Dockerfile", tag)
        inspected = docker_client.images.get(tag).attrs
        assert result.platform == "linux/amd64"
        assert (result.image_os, result.image_arch) == (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
        assert result.engine_arch == docker_client.version()["Arch"]
    finally:
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


# ------------------------------------------------------------------ against the sandbox



@pytest.fixture
def service_name(service: str) -> str:
    return service


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.parametrize("mismatch", ["aborted", "failed_precondition"])  # UNSURE: AIP-154 after / before 2021
async def test_masked_updates_and_etag_retries(cloudrun: CloudRun, run_clients: RunClients, sample_image: Any,
                                               service_name: str, fidelity: Any, mismatch: str) -> None:
    fidelity(etag_mismatch=mismatch)
    deploy(run_clients, service_name, sample_image.ref)
    stale = await cloudrun.get_service(service_name)
    assert stale is not None
    rev = stale.latest_ready_revision.rsplit("/", 1)[-1]
    # someone else changes the service after we read it
    other = run_clients.services.get_service(name=stale.name)
    other.traffic = [run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                                          percent=100, tag="someone")]
    run_clients.services.update_service(service=other).result(polling=FAST_POLL, timeout=60)

    split = [TrafficTarget(revision=rev, percent=100, tag="ours")]
    with pytest.raises(EtagMismatch):
        await cloudrun.update_service(stale, split=split, update_mask=TRAFFIC_MASK)
    seen: list[str] = []

    def build(current: run_v2.Service) -> tuple[None, list[TrafficTarget]]:
        seen.append(current.etag)
        return None, split

    op, retries = await cloudrun.update_with_retry(stale, build, update_mask=TRAFFIC_MASK)
    done = await cloudrun.finish(op, "traffic", 60)
    assert retries == 1 and len(seen) == 2 and seen[0] == stale.etag and seen[1] != stale.etag
    assert split_from_proto(done.traffic) == split
    # a traffic update (mask "traffic") made no revision
    assert done.latest_created_revision == stale.latest_created_revision


@pytest.mark.docker
@pytest.mark.sandbox
async def test_revision_name_conflict_is_recognised(cloudrun: CloudRun, run_clients: RunClients, sample_image: Any,
                                                    service_name: str) -> None:
    svc = deploy(run_clients, service_name, sample_image.ref, revision=f"{service_name}-taken")
    current = await cloudrun.get_service(service_name)
    assert current is not None
    template = build_template(ServiceConfig(name=service_name, env={"X": "1"}), image=sample_image.ref,
                              revision=f"{service_name}-taken", labels={}, current=current.template)
    with pytest.raises(RevisionNameConflict) as info:
        await cloudrun.update_service(current, template=template, split=split_from_proto(svc.traffic),
                                      update_mask=DEPLOY_MASK)
    assert f"Revision named '{service_name}-taken' with different configuration already exists." in str(info.value)


@pytest.mark.docker
@pytest.mark.sandbox
async def test_deploy_retries_a_taken_revision_name_with_a_new_suffix(
    cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, service_name: str, sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tasks.deploy as deploy_module
    from tasks.inspect import read_snapshot

    sha = "abc1234" + "0" * 33
    deploy(run_clients, service_name, sample_image.ref, revision=f"{service_name}-abc1234-aaa")
    suffixes = iter(["aaa", "aaa", "bbb"])
    monkeypatch.setattr(deploy_module, "new_suffix", lambda: next(suffixes))
    settings: Settings = load_settings(None, environ={}, sandbox_json=Path(sandbox.state_dir) / "sandbox.json",
                                       overrides={"services": [{"name": service_name, "env": {"GREETING": "x"}}],
                                                  "deploy_timeout_s": 60})
    snapshot = await read_snapshot(cloudrun, service_name)
    stage, outcome = await deploy_module.deploy_revision.fn(
        cloudrun, settings, settings.services[0], image=sample_image.digest_ref, git_sha=sha, tag="sc-abc1234",
        snapshot=snapshot)
    assert stage.status is Status.PASS, stage.summary
    assert outcome.revision is not None and outcome.revision.name == f"{service_name}-abc1234-bbb"
    notes = [e.summary for e in stage.evidence if e.kind == "note"]
    assert any(f"{service_name}-abc1234-aaa was taken" in n and "different configuration" in n for n in notes)
    revisions = {r.name.rsplit("/", 1)[-1] for r in run_clients.revisions.list_revisions(
        parent=run_clients.service_name(service_name))}
    assert revisions == {f"{service_name}-abc1234-aaa", f"{service_name}-abc1234-bbb"}


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.parametrize(("resent", "second"), [("no_new_revision", "aaa"), ("conflict", "bbb")])
async def test_a_deploy_run_again_after_reaching_the_api_passes_whether_or_not_the_same_name_is_refused(
    cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, service_name: str, sandbox: Any,
    monkeypatch: pytest.MonkeyPatch, fidelity: Any, resent: str, second: str,
) -> None:
    """A deploy run again (a Prefect retry whose first attempt reached the API) sends the same revision name and
    template. UNSURE (fidelity `same_revision_resent`): Cloud Run makes no new revision, or answers 409 and the
    deploy takes a new suffix; either way the candidate is Ready and the deploy passes."""
    import tasks.deploy as deploy_module
    from tasks.inspect import read_snapshot

    fidelity(same_revision_resent=resent)
    sha = "abc1234" + "0" * 33
    deploy(run_clients, service_name, sample_image.ref)
    suffixes = iter(["aaa", "aaa", "bbb"])
    monkeypatch.setattr(deploy_module, "new_suffix", lambda: next(suffixes))
    settings: Settings = load_settings(None, environ={}, sandbox_json=Path(sandbox.state_dir) / "sandbox.json",
                                       overrides={"services": [{"name": service_name, "env": {"GREETING": "x"}}],
                                                  "deploy_timeout_s": 60})
    names = []
    for _ in range(2):
        snapshot = await read_snapshot(cloudrun, service_name)
        stage, outcome = await deploy_module.deploy_revision.fn(
            cloudrun, settings, settings.services[0], image=sample_image.digest_ref, git_sha=sha, tag="sc-abc1234",
            snapshot=snapshot)
        assert stage.status is Status.PASS, stage.summary
        names.append(outcome.revision.name if outcome.revision else "")
    assert names == [f"{service_name}-abc1234-aaa", f"{service_name}-abc1234-{second}"]


# ------------------------------------------------------------------ a release keeps the service's configuration


@pytest.mark.docker
@pytest.mark.sandbox
async def test_release_keeps_service_account_vpc_timeout_concurrency_and_the_rest(
    prefect_api: None, scenario: Any, run_clients: RunClients, sample_image: Any, service_name: str,
) -> None:
    from tests.pipeline.test_e2e import run_flow, serving

    # the service as production runs it, deployed through the run_v2 client
    container = run_v2.Container(
        image=sample_image.digest_ref,
        env=[run_v2.EnvVar(name="KEEP_ME", value="1"), run_v2.EnvVar(name="GREETING", value="old")],
        resources=run_v2.ResourceRequirements(limits={"cpu": "1", "memory": "1Gi"}, cpu_idle=True,
                                              startup_cpu_boost=True),
        volume_mounts=[run_v2.VolumeMount(name="scratch", mount_path="/scratch")],
        startup_probe=run_v2.Probe(tcp_socket=run_v2.TCPSocketAction(port=8080), period_seconds=1,
                                   failure_threshold=30),
    )
    template = run_v2.RevisionTemplate(
        containers=[container],
        service_account=f"{service_name}@stagecheck-sandbox.iam.gserviceaccount.com",
        vpc_access=run_v2.VpcAccess(connector=CONNECTOR, egress=run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC),
        timeout=duration_pb2.Duration(seconds=42),
        max_instance_request_concurrency=5,
        volumes=[run_v2.Volume(name="scratch", empty_dir=run_v2.EmptyDirVolumeSource())],
        execution_environment=GEN2,
        session_affinity=True,
        scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=6),
        labels={"team": "payments"},
    )
    run_clients.services.create_service(parent=run_clients.parent, service_id=service_name,
                                        service=run_v2.Service(template=template)).result(polling=FAST_POLL, timeout=60)

    scenario.add_service("svc")
    config = scenario.config([{"name": service_name, "source_dir": "svc", "env": {"GREETING": "new"}}], steps="[100]")
    sha = scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service_name)
    assert report["verdict"] == "pass", report["reasons"]
    new = report["revision"]["name"]
    assert serving(run_clients, service_name) == {new: 100}

    rev = run_clients.revisions.get_revision(name=f"{run_clients.service_name(service_name)}/revisions/{new}")
    assert rev.service_account == f"{service_name}@stagecheck-sandbox.iam.gserviceaccount.com"
    assert rev.vpc_access.connector == CONNECTOR and rev.vpc_access.egress == run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC
    assert rev.timeout.seconds == 42
    assert rev.max_instance_request_concurrency == 5
    assert [v.name for v in rev.volumes] == ["scratch"]
    assert rev.execution_environment == GEN2 and rev.session_affinity is True
    assert (rev.scaling.min_instance_count, rev.scaling.max_instance_count) == (0, 6)  # config sets no scaling
    (main,) = rev.containers
    assert main.image == report["image"]["pinned"] and main.image != sample_image.digest_ref
    assert [(m.name, m.mount_path) for m in main.volume_mounts] == [("scratch", "/scratch")]
    assert main.startup_probe.failure_threshold == 30
    assert [(e.name, e.value) for e in main.env] == [("KEEP_ME", "1"), ("GREETING", "new")]
    assert dict(main.resources.limits) == {"cpu": "1", "memory": "1Gi"}  # config sets no resources
    assert main.resources.cpu_idle is True and main.resources.startup_cpu_boost is True
    assert dict(rev.labels) == {"team": "payments", "stagecheck-sha": sha[:7], "managed-by": "stagecheck"}
    # the deploy stage shows what the candidate runs with
    (facts,) = [e["data"]["candidate"] for e in run.stage(service_name, "deploy")["evidence"] if e["kind"] == "template"]
    assert facts["service_account"] == rev.service_account and facts["vpc_connector"] == CONNECTOR
    assert (facts["timeout_s"], facts["concurrency"], facts["cpu_idle"]) == (42, 5, True)
    # the build stage recorded the image's platform
    build = run.stage(service_name, "build")
    assert build["evidence"][0]["data"]["architecture"] == "amd64"
    assert build["evidence"][0]["data"]["platform"] == "linux/amd64"


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_template_the_api_rejects_fails_the_deploy_naming_the_field(
    cloudrun: CloudRun, run_clients: RunClients, sample_image: Any, service_name: str, sandbox: Any,
) -> None:
    import tasks.deploy as deploy_module
    from tasks.inspect import read_snapshot

    # the service handles 80 requests at once; the config asks for half a CPU, which allows only one
    svc = deploy(run_clients, service_name, sample_image.ref, max_instance_request_concurrency=80)
    settings: Settings = load_settings(None, environ={}, sandbox_json=Path(sandbox.state_dir) / "sandbox.json",
                                       overrides={"services": [{"name": service_name, "cpu": "0.5"}],
                                                  "deploy_timeout_s": 60})
    snapshot = await read_snapshot(cloudrun, service_name)
    stage, _ = await deploy_module.deploy_revision.fn(
        cloudrun, settings, settings.services[0], image=sample_image.digest_ref, git_sha="d" * 40,
        tag="sc-ddddddd", snapshot=snapshot)
    assert stage.status is Status.FAIL
    assert "rejected as invalid" in stage.summary
    assert "service.template.max_instance_request_concurrency" in stage.summary
    assert "maximum concurrency of 1" in stage.summary
    after = run_clients.services.get_service(name=svc.name)
    assert after.latest_created_revision == svc.latest_created_revision
    assert [(t.revision, t.percent) for t in after.traffic_statuses] == [
        (svc.latest_ready_revision.rsplit("/", 1)[-1], 100)]
