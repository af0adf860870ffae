"""The validation flow reads the requested commit's tree (config, syntax, build context), not the
checkout's working copy, and the checkout gate refuses what it cannot check out (in-process flow runs
on the test harness, a real Docker build)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.fixtures_sandbox import unique_name
from tests.pipeline.test_e2e import run_flow

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(300)]

LABEL = "dev.stagecheck.test.commit"


def _stamp(scenario: Any, directory: str, n: int) -> None:
    dockerfile = scenario.root / directory / "Dockerfile"
    lines = [line for line in dockerfile.read_text().splitlines() if LABEL not in line]
    dockerfile.write_text("\n".join([*lines, f'LABEL {LABEL}="{n}"']) + "\n")


async def test_an_older_commit_is_built_from_its_own_tree_with_its_own_config(
        prefect_api: None, scenario: Any, docker_client: docker.DockerClient) -> None:
    service = unique_name("co")
    scenario.add_service("svc")
    _stamp(scenario, "svc", 0)
    config = scenario.config([{"name": service, "source_dir": "svc"}])
    first = scenario.commit("first")
    # HEAD moves the service to another folder (the old one is gone) and breaks a Python file
    (scenario.root / "svc").rename(scenario.root / "moved")
    _stamp(scenario, "moved", 1)
    config = scenario.config([{"name": service, "source_dir": "moved"}])
    scenario.write("tools/broken.py", "def f(:\n")
    scenario.commit("second")
    checkouts = Path(os.environ["STAGECHECK_CACHE_DIR"]) / "checkouts"

    run = await run_flow(scenario, config, git_sha=first, dry_run=True)

    assert run.state.is_completed(), run.state.message
    report = run.report(service)
    assert report["verdict"] == "pass" and report["git_sha"] == first
    assert run.stage_names(service)[:3] == ["checkout", "syntax", "build"]
    assert "checked out for this run" in run.stage(service, "checkout")["summary"]
    (image,) = docker_client.images.list(filters={"label": f"org.opencontainers.image.revision={first}"})
    assert image.labels[LABEL] == "0"  # commit 1's tree would say 1 (and fail the syntax check)
    scenario.repositories.add(service)
    assert list(checkouts.iterdir()) == []  # the per-run tree is gone


async def test_uncommitted_changes_or_an_unknown_commit_fail_the_checkout_gate(
        prefect_api: None, scenario: Any, docker_client: docker.DockerClient) -> None:
    service = unique_name("co")
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}])
    scenario.commit()
    scenario.write("svc/app/extra.sh", "echo not committed\n")
    (scenario.root / "svc" / "Dockerfile").write_text("FROM scratch\n")  # tracked, modified

    dirty = await run_flow(scenario, config, dry_run=True)
    assert dirty.state.is_failed()
    report = dirty.report(service)
    assert report["decided_by"] == "checkout" and "uncommitted changes" in report["reasons"][0]
    assert dirty.stage_names(service) == ["checkout"]

    unknown = await run_flow(scenario, config, git_sha="0123456789abcdef0123456789abcdef01234567", dry_run=True)
    assert unknown.state.is_failed()
    report = unknown.report(service)
    assert report["decided_by"] == "checkout"
    assert "commit 0123456789abcdef0123456789abcdef01234567 not found" in report["reasons"][0]
    assert report["git_sha"] is None
    assert not docker_client.images.list(filters={"label": f"dev.stagecheck.service={service}"})
