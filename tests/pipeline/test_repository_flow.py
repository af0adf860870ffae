"""A service repository stagecheck does not live in: the flow, run from another directory, checks out the
requested commit of that repository (a second local git repository holding the sample service and its
stagecheck.toml), reads its config there and validates it to PASS in the sandbox (a real Docker build, the
test harness's Prefect server)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from flows.validate import validate
from stagecheck.concurrency import ensure_service_limits
from tests.fixtures_sandbox import unique_name
from tests.server.test_deployments import poll

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(300)]


async def test_a_commit_of_another_repository_is_validated_to_pass(
        prefect_api: None, scenario: Any, docker_client: docker.DockerClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    service = unique_name("repo")
    scenario.add_service("svc")
    scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]", bake_s=0)
    first = scenario.commit("first")
    (scenario.root / "svc" / "Dockerfile").write_text("FROM scratch\nCOPY missing /missing\n")  # HEAD cannot build
    scenario.commit("broken")
    worker = tmp_path / "worker"  # the flow runs elsewhere: stagecheck's directory, not the service's
    worker.mkdir()
    monkeypatch.chdir(worker)
    scenario.repositories.add(service)
    await ensure_service_limits([service])

    state = await validate(config="stagecheck.toml", repository=scenario.root.as_uri(), git_sha=first,  # type: ignore[call-overload]
                           git_ref="main", sandbox=True, state_dir=scenario.sandbox.state_dir, return_state=True)

    assert state.is_completed(), state.message
    report = json.loads((worker / "reports" / f"{service}-latest.json").read_text())  # out of the deleted tree
    assert report["verdict"] == "pass" and report["git_sha"] == first
    (image,) = docker_client.images.list(filters={"label": f"org.opencontainers.image.revision={first}"})
    assert image.labels["dev.stagecheck.service"] == service
    checkouts = Path(os.environ["STAGECHECK_CACHE_DIR"]) / "checkouts"
    assert list(checkouts.iterdir()) == []  # the run's tree of the repository is gone


async def test_an_unknown_commit_or_a_missing_config_of_another_repository_fails_the_run(
        prefect_api: None, scenario: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario.add_service("svc")
    scenario.config([{"name": unique_name("repo"), "source_dir": "svc"}])
    scenario.commit("first")
    monkeypatch.chdir(tmp_path)

    unknown = await validate(config="stagecheck.toml", repository=str(scenario.root), git_sha="0" * 40,  # type: ignore[call-overload]
                             sandbox=True, state_dir=scenario.sandbox.state_dir, return_state=True)
    missing = await validate(config="deploy/stagecheck.toml", repository=str(scenario.root),  # type: ignore[call-overload]
                             sandbox=True, state_dir=scenario.sandbox.state_dir, return_state=True)

    assert unknown.is_failed() and f"commit {'0' * 40} not found" in str(unknown.message)
    assert missing.is_failed() and "config 'deploy/stagecheck.toml' not found" in str(missing.message)
    assert list((Path(os.environ["STAGECHECK_CACHE_DIR"]) / "checkouts").iterdir()) == []


async def test_a_private_repository_is_read_with_the_token_of_a_secret_block_that_no_output_shows(
        prefect_api: None, scenario: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository behind a git HTTP server on 127.0.0.1 that answers 401 without the token; the token is in a
    Prefect Secret block; the run (a dry run) passes, and neither its logs nor its report carry the token."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from tests.git_http_server import git_http_server

    token = f"tok-{uuid.uuid4().hex}"
    block = f"git-token-{uuid.uuid4().hex[:8]}"
    await Secret(value=f"ci-bot:{token}").save(block, overwrite=True)
    service = unique_name("priv")
    scenario.add_service("svc")
    scenario.config([{"name": service, "source_dir": "svc"}])
    sha = scenario.commit("first")
    await asyncio.to_thread(subprocess.run, ["git", "-C", str(scenario.root), "config",
                                             "uploadpack.allowAnySHA1InWant", "true"], check=True)
    monkeypatch.chdir(tmp_path)
    scenario.repositories.add(service)

    with git_http_server(scenario.root.parent, "ci-bot", token) as server:
        url = f"{server.url}/{scenario.root.name}"
        refused = await validate(config="stagecheck.toml", repository=url, git_sha=sha, dry_run=True,  # type: ignore[call-overload]
                                 sandbox=True, state_dir=scenario.sandbox.state_dir, return_state=True)
        state = await validate(config="stagecheck.toml", repository=url, repository_credentials=block,  # type: ignore[call-overload]
                               git_sha=sha, dry_run=True, sandbox=True, state_dir=scenario.sandbox.state_dir,
                               return_state=True)

    assert refused.is_failed() and "git fetch from" in str(refused.message)  # without the block: 401
    assert state.is_completed(), state.message
    report = (tmp_path / "reports" / f"{service}-latest.json").read_text()
    assert json.loads(report)["verdict"] == "pass" and json.loads(report)["git_sha"] == sha
    async def logs_with_the_verdict() -> list[Any]:  # the run's logs reach the API in the background
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[state.state_details.flow_run_id, refused.state_details.flow_run_id])))
        return logs if any(f"{service}: PASS" in log.message for log in logs) else []

    logs = await poll(logs_with_the_verdict, within_s=30)
    assert not any(token in log.message for log in logs)
    assert token not in report and not any(token in path for path in server.paths)
