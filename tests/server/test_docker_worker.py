"""The worker image and a Docker work pool on a team server, for real, through the sequence the docs give
(docs/deployments.md, "From nothing to a merge-triggered PASS"): the repository's Dockerfile built on a base
made here (no registry outside this machine is reachable: Debian's own packages through `debootstrap`,
imported into the engine); a Prefect server on PostgreSQL; a real `prefect worker start --type docker`
(prefect-docker) on a `docker` work pool; `prefect deploy` of examples/docker-pool/prefect.yaml; and a merge
event of a separate service repository whose flow run executes in a container of that image — host
networking (the Prefect API, the sandbox, the registry and the git server listen on 127.0.0.1) and the
Docker Engine's socket mounted for the build stage — to a PASS verdict."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from cli.commands import notify_merge
from deployments.serve import Layout, api_url, down, start_server, start_worker, wait_worker_online
from tests.git_http_server import git_http_server
from tests.server.conftest import REPO_ROOT, SAMPLE, free_port

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


# ------------------------------------------------------------------ from nothing to a merge-triggered PASS
#
# The sequence of docs/deployments.md, "From nothing to a merge-triggered PASS", step by step: a team Prefect
# server on PostgreSQL; a `docker` work pool whose job template mounts the engine's socket; a docker worker;
# a Secret block with the service repository's token; `prefect deploy` of examples/docker-pool/prefect.yaml
# from this clone; and `stagecheck notify-merge` from the service repository's "CI". The service repository
# is a second git repository (the sample service and its stagecheck.toml) served over HTTP on 127.0.0.1 by
# git's own http-backend, answering 401 without the token. Only the environment differs from a real team's:
# the pool's job template points the runs at the sandbox (STAGECHECK_ENDPOINTS__*: endpoints and credentials),
# with host networking (everything here listens on 127.0.0.1), and the worker image is local (pull: Never).

TEMPLATE = Path("examples/docker-pool/prefect.yaml")
TOKEN = "shop-deploy-token-7c1f"
SECRET_BLOCK = "shop-git-token"


@dataclass
class ServiceRepository:
    root: Path  # served as <git server>/shop
    service: str
    shas: list[str]  # [the merged commit (builds), its successor (does not build)]


def _service_repository(base: Path, sandbox_json: dict[str, Any]) -> ServiceRepository:
    """The sample service and a stagecheck.toml naming the staging project (as a team writes it: project,
    region, registry, LB); a second commit breaks the build, so a PASS shows that the merged commit was built."""
    root = base / "served" / "shop"
    shutil.copytree(SAMPLE, root / "svc", ignore=shutil.ignore_patterns("README.md", "bin"))
    service = f"shop-{uuid.uuid4().hex[:6]}"
    (root / "stagecheck.toml").write_text("\n".join([
        f'project = "{sandbox_json["project"]}"', f'region = "{sandbox_json["region"]}"',
        f'registry = "{sandbox_json["registry"]}"', f'lb_url = "{sandbox_json["lb_url"]}"',
        'report_dir = "reports"',
        "[probes]", "deadline_s = 30", "consecutive_successes = 2", "initial_backoff_s = 0.1", "max_backoff_s = 0.5",
        "[traffic]", "steps = [100]", "bake_s = 1",
        "[logs]", "settle_s = 5",
        "[[services]]", f'name = "{service}"', 'source_dir = "svc"', ""]))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "uploadpack.allowAnySHA1InWant", "true")  # a run fetches its commit by SHA
    git("add", "-A")
    git("commit", "-qm", "the sample service")
    merged = git("rev-parse", "HEAD")
    with (root / "svc" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write("RUN echo 'this commit does not build' && exit 3\n")
    git("commit", "-qam", "a later commit that does not build")
    return ServiceRepository(root=root, service=service, shas=[merged, git("rev-parse", "HEAD")])


def _pool_template(path: Path, env: dict[str, str], volumes: list[str]) -> dict[str, Any]:
    """What `prefect work-pool get-default-base-job-template --type docker` wrote, with the defaults a platform
    team edits: the engine's socket mounted (plus, here, the sandbox's state), its env, the network."""
    template = json.loads(path.read_text())
    properties = template["variables"]["properties"]
    properties["volumes"]["default"] = volumes
    properties["env"]["default"] = env
    properties["network_mode"]["default"] = "host"
    properties["image_pull_policy"]["default"] = "Never"  # the worker image exists only in this engine
    path.write_text(json.dumps(template))
    return template


def _prefect(*args: str, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@dataclass
class MergeOutcome:
    run: Any  # the merge-triggered flow run, final
    runs_of_deployment: int
    artifacts: dict[str, Any]
    logs: str  # the run's log messages, as the UI shows them
    worker_log: str
    failed_deploy: subprocess.CompletedProcess[str]  # `prefect deploy` without DEPLOY_IMAGE
    deployments_after_failed_deploy: int
    git_paths: list[str]
    rows_in_postgres: int  # flow_run rows of that id in the server's PostgreSQL database
    repository: ServiceRepository
    repository_url: str


@pytest.fixture(scope="module")
def merge_outcome(worker_image: str, docker_env: Any, sandbox: Any, sample_image: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[MergeOutcome]:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from localenv import postgres

    work = tmp_path_factory.mktemp("adopt")
    sandbox_json = json.loads((Path(sandbox.state_dir) / "sandbox.json").read_text())
    repository = _service_repository(work, sandbox_json)
    pool = f"staging-docker-{uuid.uuid4().hex[:4]}"
    server, worker = Layout(work / "server"), Layout(work / "worker")
    database = postgres.start()
    try:
        # 1. the team server, on PostgreSQL
        port = free_port()
        url = api_url(port)
        start_server(server, port, database_url=database.url)
        env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(work / "prefect-home"), "DO_NOT_TRACK": "1"}
        # 2. the Docker work pool: the default job template, edited, then created
        template = work / "pool.json"
        made = _prefect("work-pool", "get-default-base-job-template", "--type", "docker", "--file", str(template),
                        env=env)
        assert made.returncode == 0, made.stdout + made.stderr
        socket_path = docker_env.docker_host.removeprefix("unix://")
        state = str(Path(sandbox.state_dir).resolve())
        _pool_template(template, volumes=[f"{socket_path}:{socket_path}", f"{state}:{state}"], env={
            "DOCKER_HOST": docker_env.docker_host,
            "STAGECHECK_ENDPOINTS__RUN_API": sandbox_json["run_api"],
            "STAGECHECK_ENDPOINTS__LOGGING_API": sandbox_json["logging_api"],
            "STAGECHECK_ENDPOINTS__IAM_CREDENTIALS_API": sandbox_json["run_api"],
            "STAGECHECK_ENDPOINTS__CREDENTIALS_FILE": sandbox_json["credentials_file"]})
        created = _prefect("work-pool", "create", pool, "--type", "docker", "--base-job-template", str(template),
                           env=env)
        assert created.returncode == 0, created.stdout + created.stderr
        # 3. a docker worker on it (it starts the runs' containers on this engine)
        saved_host = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = docker_env.docker_host
        try:
            record = start_worker(worker, url, pool, name="staging-docker-worker", query_seconds=1,
                                  worker_type="docker")
        finally:
            if saved_host is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved_host
        with temporary_settings(updates={PREFECT_API_URL: url}):
            asyncio.run(wait_worker_online(pool, record, worker.worker_log))
            # 4. the service repository's token, in a Secret block
            Secret(value=f"ci-bot:{TOKEN}").save(SECRET_BLOCK)
        with git_http_server(repository.root.parent, "ci-bot", TOKEN) as git_server:
            repository_url = f"{git_server.url}/shop"
            deploy_env = {**env, "DEPLOY_NAME": "shop", "DEPLOY_REPOSITORY": repository_url,
                          "DEPLOY_CONFIG": "stagecheck.toml", "DEPLOY_CREDENTIALS": SECRET_BLOCK,
                          "DEPLOY_BRANCH": "main", "DEPLOY_POOL": pool, "DEPLOY_IMAGE": worker_image}
            # 5. prefect deploy: first without the image (refused before anything is registered), then for real
            failed = _prefect("deploy", "--prefect-file", str(TEMPLATE), "--all",
                              env={k: v for k, v in deploy_env.items() if k != "DEPLOY_IMAGE"})

            async def deployments() -> list[Any]:
                async with PrefectClient(api=url) as client:
                    return list(await client.read_deployments())

            before = len(asyncio.run(deployments()))
            deployed = _prefect("deploy", "--prefect-file", str(TEMPLATE), "--all", env=deploy_env)
            assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
            [deployment] = asyncio.run(deployments())
            # 6. the service repository's CI, after the merge
            code = notify_merge.main(["--sha", repository.shas[0], "--ref", "refs/heads/main", "--repo", "acme/shop",
                                      "--url", repository_url, "--config", "stagecheck.toml", "--api-url", url])
            assert code == 0

            async def outcome() -> tuple[Any, int, dict[str, Any], str]:
                async with PrefectClient(api=url) as client:
                    of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
                    deadline = time.monotonic() + 900
                    while True:
                        runs = await client.read_flow_runs(deployment_filter=of_deployment)
                        if runs and runs[0].state is not None and runs[0].state.is_final():
                            break
                        assert time.monotonic() < deadline, f"no final merge-triggered run: {runs}"
                        await asyncio.sleep(1.0)
                    run = runs[0]
                    await asyncio.sleep(2.0)  # a second run, were the event delivered twice, would exist by now
                    count = len(await client.read_flow_runs(deployment_filter=of_deployment))
                    of_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                    artifacts = {a.key: a for a in await client.read_artifacts(flow_run_filter=of_run) if a.key}
                    logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
                    return run, count, artifacts, "\n".join(entry.message for entry in logs)

            run, count, artifacts, logs = asyncio.run(outcome())
            paths = list(git_server.paths)
        rows = subprocess.run(
            [str(postgres.bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(database.port), "-U", postgres.USER,
             "-d", postgres.DATABASE, "-tAc", f"select count(*) from flow_run where id = '{run.id}'"],
            capture_output=True, text=True, check=True).stdout.strip()
        yield MergeOutcome(run=run, runs_of_deployment=count, artifacts=artifacts, logs=logs,
                           worker_log=Path(worker.worker_log).read_text(), failed_deploy=failed,
                           deployments_after_failed_deploy=before, git_paths=paths, rows_in_postgres=int(rows),
                           repository=repository, repository_url=repository_url)
    finally:
        down(worker)
        down(server)
        postgres.stop(database)


def test_a_merge_event_validates_the_merged_commit_in_a_container_of_the_worker_image_to_pass(
        merge_outcome: MergeOutcome, worker_image: str, docker_env: Any) -> None:
    run, repository = merge_outcome.run, merge_outcome.repository
    assert run.state.is_completed(), (f"{run.state.name}: {run.state.message}\n{merge_outcome.logs[-3000:]}\n"
                                      f"{merge_outcome.worker_log[-3000:]}")
    assert merge_outcome.runs_of_deployment == 1
    # the trigger filled in the event's commit; the deployment's own parameters did the rest
    assert run.parameters["git_sha"] == repository.shas[0] and run.parameters["git_ref"] == "refs/heads/main"
    assert run.parameters["repository"] == merge_outcome.repository_url
    assert run.parameters["repository_credentials"] == SECRET_BLOCK
    assert f"submitting flow run '{run.id}'" in merge_outcome.worker_log
    # it ran in a container of the worker image (the docker worker records the container id)
    client = docker.DockerClient(base_url=docker_env.docker_host)
    try:
        container = client.containers.get(run.infrastructure_pid.rsplit(":", 1)[-1])
        assert container.image is not None and container.image.tags == [worker_image]
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        container.remove(force=True)
    finally:
        client.close()
    report = merge_outcome.artifacts[f"stagecheck-report-{repository.service}"]
    assert report.description.startswith("PASS"), report.description
    assert repository.shas[0][:7] in str(report.data) and repository.shas[1][:7] not in str(report.data)


def test_the_run_lives_in_the_team_servers_postgresql(merge_outcome: MergeOutcome) -> None:
    assert merge_outcome.rows_in_postgres == 1


def test_the_repository_token_went_to_git_only(merge_outcome: MergeOutcome) -> None:
    assert any("git-upload-pack" in path for path in merge_outcome.git_paths)  # the run fetched over HTTP
    assert not any(TOKEN in path for path in merge_outcome.git_paths)
    published = [merge_outcome.logs, merge_outcome.worker_log,
                 *(json.dumps([a.data, a.description]) for a in merge_outcome.artifacts.values())]
    assert not [text for text in published if TOKEN in text]


def test_prefect_deploy_without_a_value_of_the_template_registers_nothing(merge_outcome: MergeOutcome) -> None:
    failed = merge_outcome.failed_deploy
    assert failed.returncode != 0
    assert "DEPLOY_IMAGE is not set" in failed.stdout + failed.stderr
    assert merge_outcome.deployments_after_failed_deploy == 0
