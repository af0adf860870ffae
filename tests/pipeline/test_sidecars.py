"""Sidecars (multi-container services, issue 18): a release changes only the ingress container (the one with a
port) and keeps every sidecar as it was, whatever the containers' order. End to end against the sandbox through
the real Google clients, the real Docker Engine and registry, on a temporary Prefect server."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import run_v2

from tests.fixtures_sandbox import FAST_POLL, RunClients
from tests.pipeline.test_after_failure import revision
from tests.pipeline.test_e2e import created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def _env(container: run_v2.Container) -> dict[str, str]:
    return {e.name: e.value for e in container.env}


async def test_a_release_of_a_service_with_a_sidecar_first_changes_only_the_ingress_container(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("sidecar")
    # deployed through the API, not by stagecheck: the sidecar (no port) comes first, the ingress container second
    # and starts after it (dependsOn)
    sidecar = run_v2.Container(name="agent", image=sample_image.digest_ref,
                               env=[run_v2.EnvVar(name="ROLE", value="agent")],
                               resources=run_v2.ResourceRequirements(limits={"cpu": "1", "memory": "256Mi"},
                                                                     cpu_idle=True))
    ingress = run_v2.Container(name="web", image=sample_image.digest_ref, depends_on=["agent"],
                               ports=[run_v2.ContainerPort(container_port=8080)],
                               env=[run_v2.EnvVar(name="OUTSIDE", value="by-hand")])
    svc = run_v2.Service(template=run_v2.RevisionTemplate(containers=[sidecar, ingress]))
    done = run_clients.services.create_service(parent=run_clients.parent, service_id=service,
                                               service=svc).result(polling=FAST_POLL, timeout=60)
    first = str(done.latest_ready_revision.rsplit("/", 1)[-1])
    before = revision(run_clients, service, first).containers

    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": {"GREETING": "sidecars"}}],
                             steps="[100]")
    scenario.commit("a release of a service with a sidecar")
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    new = report["revision"]["name"]
    assert serving(run_clients, service) == {new: 100}

    agent, web = revision(run_clients, service, new).containers
    assert agent == before[0]  # the sidecar: same name, image, env, resources, no port
    assert not agent.ports
    assert web.name == "web" and list(web.depends_on) == ["agent"]
    assert web.image != sample_image.digest_ref and "@sha256:" in web.image  # the pushed candidate, by digest
    assert _env(web) == {"OUTSIDE": "by-hand", "GREETING": "sidecars"}
    assert web.ports[0].container_port == 8080
    (template_note,) = [e for e in run.stage(service, "deploy")["evidence"] if e["kind"] == "template"]
    assert template_note["data"]["candidate"]["containers"] == 2
