"""The worker image and a Docker work pool, for real: the repository's Dockerfile built on a base made here
(no registry outside this machine is reachable: Debian's own packages through `debootstrap`, imported into
the engine), a real `prefect worker start --type docker` (prefect-docker) on a `docker` work pool, and a
validation whose flow run executes in a container of that image — host networking (the Prefect API, the
sandbox and the registry listen on 127.0.0.1) and the Docker Engine's socket mounted for the build stage —
to a PASS verdict."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deployments.serve import Layout, api_url, down, start_server, start_worker, wait_worker_online
from tests.server.conftest import REPO_ROOT, free_port
from tests.server.team import TeamProject, make_project

pytestmark = [pytest.mark.server, pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(1500)]

BASE_IMAGE = "stagecheck-worker-base:bookworm"  # kept in the engine between sessions (built once, ~2-5 min)
BASE_PACKAGES = "python3,python3-venv,git,ca-certificates"
POOL = "stagecheck-docker"
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "prefect.yaml", "stagecheck", "flows",
           "tasks", "deployments", "cli", "localenv")


def _base_image(client: docker.DockerClient, work: Path) -> str:
    """Debian bookworm (minbase) with Python 3.11, venv and git, from Debian's packages (debootstrap)."""
    try:
        client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed: `make system-packages`", pytrace=False)
    rootfs = work / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs),
                    "http://deb.debian.org/debian"], check=True, capture_output=True, timeout=1200)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # the downloaded packages: not needed
        for leftover in (rootfs / cache).glob("*"):
            if leftover.is_file():
                leftover.unlink()
    archive = work / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    shutil.rmtree(rootfs, ignore_errors=True)
    repository, tag = BASE_IMAGE.split(":")
    with archive.open("rb") as data:
        client.api.import_image_from_data(data, repository=repository, tag=tag)
    archive.unlink()
    return BASE_IMAGE


@pytest.fixture(scope="module")
def worker_image(docker_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The repository's Dockerfile built FROM the local base, offline: the dependencies' wheels in
    wheels/ of the build context (pip's own index on this machine fills it)."""
    client = docker.DockerClient(base_url=docker_env.docker_host, timeout=600)
    work = tmp_path_factory.mktemp("worker-image")
    base = _base_image(client, work)
    context = work / "context"
    context.mkdir()
    for name in CONTEXT:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--wheel-dir", str(wheels), str(context)], check=True, timeout=900)
    # the build backend, and what the base's Python (Debian's 3.11.2) needs beyond this one's (redis: async-timeout)
    subprocess.run([*pip, "download", "--dest", str(wheels), "setuptools>=68", "wheel", "async-timeout>=4.0.3"],
                   check=True, timeout=300)
    tag = f"stagecheck-worker:test-{uuid.uuid4().hex[:8]}"
    client.images.build(path=str(context), tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True)
    try:
        yield tag
    finally:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.APIError:
            pass
        client.close()


def _in_image(image: str, docker_host: str, *command: str) -> subprocess.CompletedProcess[str]:
    client = docker.DockerClient(base_url=docker_host)
    try:
        output = client.containers.run(image, list(command), remove=True, network_mode="host")
        return subprocess.CompletedProcess(list(command), 0, output.decode(), "")
    except docker.errors.ContainerError as exc:
        return subprocess.CompletedProcess(list(command), exc.exit_status, "", str(exc.stderr or b""))
    finally:
        client.close()


def test_the_worker_image_has_stagecheck_and_git_and_no_sandbox_or_dev_dependency(
        worker_image: str, docker_env: Any) -> None:
    found = _in_image(worker_image, docker_env.docker_host, "python", "-c", (
        "import importlib.util as u, shutil, flows.validate, stagecheck; "
        "print(sorted(m for m in ('pytest', 'ruff', 'mypy', 'importlinter', 'prefect_docker', 'sandbox', 'asyncpg_x')"
        " if u.find_spec(m)), bool(shutil.which('git')))"))
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[] True"


@pytest.fixture(scope="module")
def docker_pool(tmp_path_factory: pytest.TempPathFactory, docker_env: Any) -> Iterator[tuple[str, Layout]]:
    """A Prefect server (SQLite) with a `docker` work pool and a real docker worker polling it."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_docker.worker import DockerWorker

    server, worker = Layout(tmp_path_factory.mktemp("docker-pool-server")), Layout(
        tmp_path_factory.mktemp("docker-pool-worker"))
    url = api_url(free_port())
    try:
        start_server(server, int(url.split(":")[2].split("/")[0]))

        async def pool() -> None:
            from prefect import get_client

            async with get_client() as client:
                await client.create_work_pool(WorkPoolCreate(
                    name=POOL, type="docker", base_job_template=DockerWorker.get_default_base_job_template()))

        with temporary_settings(updates={PREFECT_API_URL: url}):
            asyncio.run(pool())
            old = os.environ.get("DOCKER_HOST")
            os.environ["DOCKER_HOST"] = docker_env.docker_host  # the worker starts containers on this engine
            try:
                record = start_worker(worker, url, POOL, name="stagecheck-docker-worker", query_seconds=1,
                                      worker_type="docker")
            finally:
                if old is None:
                    os.environ.pop("DOCKER_HOST", None)
                else:
                    os.environ["DOCKER_HOST"] = old
            asyncio.run(wait_worker_online(POOL, record, worker.worker_log))
        yield url, worker
    finally:
        down(worker)
        down(server)


@pytest.fixture(scope="module")
def docker_project(tmp_path_factory: pytest.TempPathFactory, sandbox: Any, sample_image: Any) -> TeamProject:
    return make_project(tmp_path_factory.mktemp("docker-project"), sandbox.state_dir, uuid.uuid4().hex[:6])


def test_a_validation_runs_in_a_container_of_the_worker_image_to_a_pass_verdict(
        worker_image: str, docker_pool: tuple[str, Layout], docker_project: TeamProject, sandbox: Any,
        docker_env: Any) -> None:
    import json

    from prefect.client.orchestration import PrefectClient

    url, worker = docker_pool
    service = docker_project.services[0]
    socket_path = docker_env.docker_host.removeprefix("unix://")
    shared = sorted({str(docker_project.root), docker_project.state_dir, str(Path(sandbox.state_dir).resolve())})
    job_variables = {
        "image": worker_image, "image_pull_policy": "Never", "network_mode": "host", "auto_remove": False,
        "volumes": [f"{socket_path}:{socket_path}", *(f"{p}:{p}" for p in shared)],
        "env": {"DOCKER_HOST": docker_env.docker_host},
    }

    async def drive() -> Any:
        async with PrefectClient(api=url) as client:
            flow_id = await client.create_flow_from_name("stagecheck-validate")
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name="in-a-container", work_pool_name=POOL, entrypoint="flows/validate.py:validate",
                path="/opt/stagecheck", job_variables=job_variables,
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/stagecheck"}}])
            created = await client.create_flow_run_from_deployment(deployment_id,
                                                                   parameters=docker_project.request(service))
            deadline = time.monotonic() + 900
            while True:
                run = await client.read_flow_run(created.id)
                if run.state is not None and run.state.is_final():
                    return run
                assert time.monotonic() < deadline, f"run still {run.state.name if run.state else None}"
                await asyncio.sleep(1.0)

    run = asyncio.run(drive())
    log = Path(worker.worker_log).read_text()
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n{log[-3000:]}"
    assert f"submitting flow run '{run.id}'" in log
    # the flow ran in a container of the worker image (the docker worker records the container id)
    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        container = client.containers.get(run.infrastructure_pid.rsplit(":", 1)[-1])
        assert container.image is not None and container.image.tags == [worker_image]
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        container.remove(force=True)
    finally:
        client.close()
    report = json.loads((docker_project.root / "reports" / f"{service}-latest.json").read_text())
    assert report["verdict"] == "pass"
    assert report["git_sha"] == subprocess.run(["git", "-C", str(docker_project.root), "rev-parse", "HEAD"],
                                               capture_output=True, text=True, check=True).stdout.strip()
