"""Revision templates, update masks, conflicts and names in the sandbox, through the unmodified
google-cloud-run REST clients: what Cloud Run keeps, what it rejects and with which words
(docs/sandbox.md: the fidelity table's Templates rows and their public sources)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import duration_pb2, field_mask_pb2

from tests.fixtures_sandbox import FAST_POLL, RunClients

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
GEN1 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1
GEN2 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
ALL_TRAFFIC = run_v2.VpcAccess.VpcEgress.ALL_TRAFFIC


def short(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def field_violations(exc: gexc.GoogleAPICallError) -> list[str]:
    return [v["field"] for d in exc.details if isinstance(d, dict) for v in d.get("fieldViolations", [])]


def rpc_status(exc: gexc.GoogleAPICallError) -> str:
    assert exc.response is not None
    return str(exc.response.json()["error"]["status"])


def full_template(image: str, service: str) -> run_v2.RevisionTemplate:
    """A template using most of what a production service sets."""
    container = run_v2.Container(
        image=image,
        ports=[run_v2.ContainerPort(name="http1", container_port=8080)],
        env=[run_v2.EnvVar(name="MODE", value="prod")],
        resources=run_v2.ResourceRequirements(limits={"cpu": "2", "memory": "1Gi"}, cpu_idle=True,
                                              startup_cpu_boost=True),
        volume_mounts=[run_v2.VolumeMount(name="scratch", mount_path="/scratch"),
                       run_v2.VolumeMount(name="creds", mount_path="/secrets")],
        startup_probe=run_v2.Probe(tcp_socket=run_v2.TCPSocketAction(port=8080), period_seconds=1,
                                   failure_threshold=20, timeout_seconds=1),
        liveness_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/health"), period_seconds=30),
    )
    return run_v2.RevisionTemplate(
        containers=[container],
        service_account=f"{service}-runtime@stagecheck-sandbox.iam.gserviceaccount.com",
        vpc_access=run_v2.VpcAccess(connector="projects/stagecheck-sandbox/locations/europe-west1/connectors/vpc1",
                                    egress=ALL_TRAFFIC),
        volumes=[run_v2.Volume(name="scratch", empty_dir=run_v2.EmptyDirVolumeSource(size_limit="64Mi")),
                 run_v2.Volume(name="creds", secret=run_v2.SecretVolumeSource(secret="api-creds"))],
        timeout=duration_pb2.Duration(seconds=120),
        max_instance_request_concurrency=7,
        execution_environment=GEN2,
        session_affinity=True,
        encryption_key="projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k",
        scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=4),
        labels={"team": "payments"},
        annotations={"example.com/owner": "payments"},
    )


def create(clients: RunClients, name: str, template: run_v2.RevisionTemplate, **service: Any) -> run_v2.Service:
    op = clients.services.create_service(parent=clients.parent, service_id=name,
                                         service=run_v2.Service(template=template, **service))
    result: run_v2.Service = op.result(polling=FAST_POLL, timeout=60)
    return result


def update(clients: RunClients, service: run_v2.Service, mask: list[str] | None = None) -> run_v2.Service:
    request = run_v2.UpdateServiceRequest(service=service)
    if mask is not None:
        request.update_mask = field_mask_pb2.FieldMask(paths=mask)
    result: run_v2.Service = clients.services.update_service(request=request).result(polling=FAST_POLL, timeout=60)
    return result


def test_template_fields_are_kept_and_exposed_on_the_revision(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("tpl")
    svc = create(run_clients, name, full_template(sample_image.ref, name))
    rev = run_clients.revisions.get_revision(name=svc.latest_ready_revision)
    assert rev.service_account == f"{name}-runtime@stagecheck-sandbox.iam.gserviceaccount.com"
    assert rev.vpc_access.connector.endswith("/connectors/vpc1") and rev.vpc_access.egress == ALL_TRAFFIC
    assert rev.timeout.seconds == 120
    assert rev.max_instance_request_concurrency == 7
    assert rev.execution_environment == GEN2
    assert rev.session_affinity is True
    assert rev.encryption_key.endswith("/cryptoKeys/k")
    assert (rev.scaling.min_instance_count, rev.scaling.max_instance_count) == (0, 4)
    assert dict(rev.labels) == {"team": "payments"} and dict(rev.annotations) == {"example.com/owner": "payments"}
    assert [(v.name, v.empty_dir.size_limit, v.secret.secret) for v in rev.volumes] == [
        ("scratch", "64Mi", ""), ("creds", "", "api-creds")]
    (container,) = rev.containers
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("scratch", "/scratch"), ("creds", "/secrets")]
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert container.resources.cpu_idle is True and container.resources.startup_cpu_boost is True
    assert container.startup_probe.failure_threshold == 20
    assert container.liveness_probe.http_get.path == "/health" and container.liveness_probe.period_seconds == 30
    # the service's template reads back the same
    assert svc.template.service_account == rev.service_account and svc.template.max_instance_request_concurrency == 7


def test_defaults_and_an_update_without_mask_replaces_the_whole_template(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("replace")
    first = create(run_clients, name, full_template(sample_image.ref, name))
    # a client that builds a fresh template (no mask) drops what it did not send: Cloud Run defaults
    fresh = run_v2.Service(name=first.name, template=run_v2.RevisionTemplate(
        containers=[run_v2.Container(image=sample_image.ref)]))
    second = update(run_clients, fresh)
    rev = run_clients.revisions.get_revision(name=second.latest_ready_revision)
    assert short(rev.name) != short(first.latest_ready_revision)
    assert rev.service_account == "" and rev.vpc_access.connector == "" and not rev.volumes
    assert rev.timeout.seconds == 300 and rev.max_instance_request_concurrency == 80
    assert rev.session_affinity is False
    # no resources sent: the defaults, CPU only during requests
    assert dict(rev.containers[0].resources.limits) == {"cpu": "1000m", "memory": "512Mi"}
    assert rev.containers[0].resources.cpu_idle is True


def test_update_mask_applies_only_the_named_paths(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("mask")
    first = create(run_clients, name, full_template(sample_image.ref, name))
    rev1 = short(first.latest_ready_revision)

    # mask "traffic": a changed template in the body is ignored, no new revision
    body = run_v2.Service(first)
    body.template.containers[0].env = [run_v2.EnvVar(name="MODE", value="changed")]
    body.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=rev1, percent=100, tag="pinned")]
    after = update(run_clients, body, ["traffic"])
    assert after.latest_created_revision == first.latest_created_revision
    assert [(t.revision, t.tag) for t in after.traffic] == [(rev1, "pinned")]
    assert [(e.name, e.value) for e in after.template.containers[0].env] == [("MODE", "prod")]

    # a nested path: only template.scaling.max_instance_count changes; the rest of the template stays
    body = run_v2.Service(after)
    body.template.revision = ""
    body.template.scaling.max_instance_count = 9
    body.template.service_account = "someone-else@x.iam.gserviceaccount.com"  # not in the mask
    after2 = update(run_clients, body, ["template.scaling.max_instance_count"])
    rev2 = run_clients.revisions.get_revision(name=after2.latest_created_revision)
    assert short(rev2.name) != rev1
    assert rev2.scaling.max_instance_count == 9
    assert rev2.service_account == f"{name}-runtime@stagecheck-sandbox.iam.gserviceaccount.com"

    # "template,traffic": both
    body = run_v2.Service(after2)
    body.template.revision = f"{name}-both"
    body.template.containers[0].env = [run_v2.EnvVar(name="MODE", value="both")]
    body.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100)]
    after3 = update(run_clients, body, ["template", "traffic"])
    assert short(after3.latest_ready_revision) == f"{name}-both"
    assert [(t.type_, t.percent) for t in after3.traffic] == [(LATEST, 100)]

    # unknown paths are rejected, naming update_mask
    for bad in (["templates"], ["template.scaling.bogus"], ["traffic.percent"]):
        with pytest.raises(gexc.BadRequest) as info:
            run_clients.services.update_service(request=run_v2.UpdateServiceRequest(
                service=after3, update_mask=field_mask_pb2.FieldMask(paths=bad)))
        assert field_violations(info.value) == ["update_mask"], bad
        assert "Invalid update_mask path" in info.value.message


@pytest.mark.parametrize(("limits", "cpu_idle", "extra", "fld", "words"), [
    # CPU below 1 needs request-only CPU: a resources block without cpu_idle means always-on CPU
    ({"cpu": "0.5", "memory": "512Mi"}, None, {"max_instance_request_concurrency": 1},
     "containers[0].resources.cpu_idle", "CPU below 1"),
    ({"cpu": "500m", "memory": "512Mi"}, False, {"max_instance_request_concurrency": 1},
     "containers[0].resources.cpu_idle", "cpu_idle must be set explicitly"),
    # CPU below 1 with concurrency > 1 (also the default 80 when given explicitly)
    ({"cpu": "0.5", "memory": "512Mi"}, True, {"max_instance_request_concurrency": 10},
     "max_instance_request_concurrency", "maximum concurrency of 1"),
    # CPU below 1 needs the first generation environment
    ({"cpu": "0.5", "memory": "512Mi"}, True, {"max_instance_request_concurrency": 1, "execution_environment": GEN2},
     "containers[0].resources.limits.cpu", "first generation"),
    # memory above what the CPU allows
    ({"cpu": "1", "memory": "8Gi"}, True, {}, "containers[0].resources.limits.memory", "exceeds the 4096 MiB"),
    ({"cpu": "0.25", "memory": "1Gi"}, True, {"max_instance_request_concurrency": 1},
     "containers[0].resources.limits.memory", "exceeds the 512 MiB"),
    # memory below the minimum (gen2: 512 MiB; 4 CPU: 2 GiB)
    ({"cpu": "1", "memory": "256Mi"}, True, {"execution_environment": GEN2},
     "containers[0].resources.limits.memory", "512 MiB minimum"),
    ({"cpu": "4", "memory": "1Gi"}, True, {}, "containers[0].resources.limits.memory", "2048 MiB minimum of 4 CPU"),
    # CPU values not allowed
    ({"cpu": "1.5", "memory": "1Gi"}, True, {}, "containers[0].resources.limits.cpu", "one of 1, 2, 4, 6 or 8"),
    ({"cpu": "3", "memory": "4Gi"}, True, {}, "containers[0].resources.limits.cpu", "one of 1, 2, 4, 6 or 8"),
    ({"cpu": "16", "memory": "4Gi"}, True, {}, "containers[0].resources.limits.cpu", "between 0.08 and 8"),
    ({"cpu": "0.05", "memory": "256Mi"}, True, {"max_instance_request_concurrency": 1},
     "containers[0].resources.limits.cpu", "between 0.08 and 8"),
    # scaling and timeout bounds
    ({"cpu": "1", "memory": "512Mi"}, True, {"scaling": run_v2.RevisionScaling(min_instance_count=3,
                                                                               max_instance_count=2)},
     "scaling.max_instance_count", "must be greater or equal than min_instance_count."),
    ({"cpu": "1", "memory": "512Mi"}, True, {"timeout": duration_pb2.Duration(seconds=3601)},
     "timeout", "between 1s and 3600s"),
    ({"cpu": "1", "memory": "512Mi"}, True, {"max_instance_request_concurrency": 1001},
     "max_instance_request_concurrency", "between 1 and 1000"),
])
def test_cpu_and_memory_rules(run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str],
                              limits: dict[str, str], cpu_idle: bool | None, extra: dict[str, Any], fld: str,
                              words: str) -> None:
    resources = run_v2.ResourceRequirements(limits=limits)
    if cpu_idle is not None:
        resources.cpu_idle = cpu_idle
    template = run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref, resources=resources)],
                                       **extra)
    with pytest.raises(gexc.BadRequest) as info:
        run_clients.services.create_service(parent=run_clients.parent, service_id=new_service("cpu"),
                                            service=run_v2.Service(template=template))
    assert field_violations(info.value) == [f"service.template.{fld}"]
    assert words in info.value.message


def test_fractional_cpu_with_request_only_cpu_and_concurrency_1_is_accepted(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("frac")
    resources = run_v2.ResourceRequirements(limits={"cpu": "0.5", "memory": "512Mi"}, cpu_idle=True)
    svc = create(run_clients, name, run_v2.RevisionTemplate(
        containers=[run_v2.Container(image=sample_image.ref, resources=resources)], execution_environment=GEN1))
    rev = run_clients.revisions.get_revision(name=svc.latest_ready_revision)
    assert rev.max_instance_request_concurrency == 1  # the default below 1 CPU
    assert rev.containers[0].resources.cpu_idle is True


@pytest.mark.parametrize(("where", "key"), [
    ("template.labels", "run.googleapis.com/owner"),
    ("template.annotations", "autoscaling.knative.dev/maxScale"),
    ("labels", "serving.knative.dev/route"),
    ("annotations", "x.cloud.googleapis.com/thing"),
])
def test_reserved_label_and_annotation_namespaces_are_rejected(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str], where: str, key: str
) -> None:
    template = run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref)])
    service = run_v2.Service(template=template)
    target: Any = service.template if where.startswith("template.") else service
    getattr(target, where.rsplit(".", 1)[-1])[key] = "x"
    with pytest.raises(gexc.BadRequest) as info:
        run_clients.services.create_service(parent=run_clients.parent, service_id=new_service("ns"), service=service)
    assert field_violations(info.value) == [f"service.{where}"]
    assert "reserved namespace" in info.value.message and key in info.value.message


def test_a_body_carrying_the_template_it_read_is_refused_outside_a_template_update(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    """googleapis/google-cloud-python#11870 (= python-run#123: a traffic-only change, no mask) and #14259 (mask
    `scaling.minInstanceCount`): the service as read, sent back, is a 409 naming its own revision."""
    name = new_service("echo")
    template = run_v2.RevisionTemplate(revision=f"{name}-blue", containers=[run_v2.Container(image=sample_image.ref)])
    svc = create(run_clients, name, template)
    echoed = run_v2.Service(svc)
    echoed.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100, tag="moved")]
    for mask in (None, ["traffic"], ["scaling.min_instance_count"], ["annotations"]):
        request = run_v2.UpdateServiceRequest(service=echoed)
        if mask:
            request.update_mask = field_mask_pb2.FieldMask(paths=mask)
        with pytest.raises(gexc.Conflict) as info:
            run_clients.services.update_service(request=request)
        assert info.value.message.endswith(f"Revision named '{name}-blue' with different configuration already exists.")
        assert rpc_status(info.value) == "ALREADY_EXISTS"
    # only what the mask names (name, etag, traffic): accepted, no new revision
    moved = update(run_clients, run_v2.Service(name=svc.name, etag=svc.etag, traffic=echoed.traffic), ["traffic"])
    assert [t.tag for t in moved.traffic_statuses] == ["moved"]
    assert moved.latest_created_revision == svc.latest_created_revision


@pytest.mark.parametrize("resent", ["no_new_revision", "conflict"])
def test_revision_name_conflicts(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str],
    fidelity: Callable[..., dict[str, str]], resent: str,
) -> None:
    fidelity(same_revision_resent=resent)
    name = new_service("conflict")
    template = run_v2.RevisionTemplate(revision=f"{name}-blue", containers=[run_v2.Container(image=sample_image.ref)])
    svc = create(run_clients, name, template)

    # same name, same template in a template update: UNSURE (no new revision, or 409)
    same = run_v2.Service(name=svc.name, template=svc.template, traffic=svc.traffic)
    if resent == "no_new_revision":
        again = update(run_clients, same, ["template", "traffic"])
        assert again.latest_created_revision == svc.latest_created_revision
    else:
        with pytest.raises(gexc.Conflict):
            update(run_clients, same, ["template", "traffic"])
    assert [short(r.name) for r in run_clients.revisions.list_revisions(parent=svc.name)] == [f"{name}-blue"]

    # same name, different template: 409 with Cloud Run's words
    changed = run_v2.Service(name=svc.name, template=svc.template, traffic=svc.traffic)
    changed.template.containers[0].env = [run_v2.EnvVar(name="X", value="1")]
    with pytest.raises(gexc.Conflict) as info:
        update(run_clients, changed, ["template"])
    assert info.value.message.endswith(f"Revision named '{name}-blue' with different configuration already exists.")
    assert rpc_status(info.value) == "ALREADY_EXISTS"


@pytest.mark.parametrize(("mismatch", "error", "status"), [("aborted", gexc.Conflict, "ABORTED"),
                                                           ("failed_precondition", gexc.BadRequest,
                                                            "FAILED_PRECONDITION")])
def test_an_etag_that_no_longer_matches_changes_nothing(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str],
    fidelity: Callable[..., dict[str, str]], mismatch: str, error: type[Exception], status: str,
) -> None:
    """AIP-154: ABORTED (409) since 2021, FAILED_PRECONDITION (400) before; Cloud Run's is not documented."""
    fidelity(etag_mismatch=mismatch)
    name = new_service("etag")
    svc = create(run_clients, name, run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref)]))
    stale = run_clients.services.get_service(name=svc.name)
    update(run_clients, run_v2.Service(name=svc.name, template=run_v2.RevisionTemplate(
        containers=[run_v2.Container(image=sample_image.ref, env=[run_v2.EnvVar(name="Y", value="2")])])))
    stale.template.containers[0].env = [run_v2.EnvVar(name="Z", value="3")]
    with pytest.raises(error) as info:
        run_clients.services.update_service(service=stale)
    assert rpc_status(info.value) == status  # type: ignore[arg-type]
    current = run_clients.services.get_service(name=svc.name)
    assert [(e.name, e.value) for e in current.template.containers[0].env] == [("Y", "2")]
    assert current.etag != stale.etag


def test_tag_and_service_name_together_at_most_46_characters(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("tags")  # "tags-" + 8 hex = 13 characters
    svc = create(run_clients, name, run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref)]))
    rev = short(svc.latest_ready_revision)
    longest = "t" * (46 - len(name))
    ok = run_v2.Service(svc)
    ok.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100),
                  run_v2.TrafficTarget(type_=REVISION, revision=rev, tag=longest)]
    tagged = update(run_clients, ok, ["traffic"])
    assert [t.tag for t in tagged.traffic_statuses if t.tag] == [longest]

    too_long = run_v2.Service(tagged)
    too_long.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100),
                        run_v2.TrafficTarget(type_=REVISION, revision=rev, tag=longest + "x")]
    with pytest.raises(gexc.BadRequest) as info:
        run_clients.services.update_service(service=too_long)
    assert field_violations(info.value) == ["service.traffic[1].tag"]
    assert info.value.message.endswith(
        f"traffic tag '{longest}x' and service name '{name}' together are too long. "
        "Combined traffic tag and service name cannot exceed 46 characters.")


def test_revision_names_are_prefixed_and_at_most_63_characters(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("rn")
    svc = create(run_clients, name, run_v2.RevisionTemplate(
        revision=f"{name}-" + "a" * (62 - len(name)), containers=[run_v2.Container(image=sample_image.ref)]))
    assert len(short(svc.latest_ready_revision)) == 63
    for bad in (f"{name}-" + "a" * (63 - len(name)), "other-00001-abc"):
        body = run_v2.Service(svc)
        body.template.revision = bad
        with pytest.raises(gexc.BadRequest) as info:
            run_clients.services.update_service(service=body)
        assert field_violations(info.value) == ["service.template.revision"], bad
