"""`prefect deploy --all` with the shipped prefect.yaml, from a fresh clone, into a pool the test creates,
on a real Prefect server with a real process worker; the runs check out their own commits.

The repository under test is a copy of this one (its tracked and new files) with four commits that
differ only in a label of the sample service's Dockerfile (`dev.stagecheck.test.commit` = 0..3), pushed
to a local bare `origin`. `prefect deploy` runs in a `git clone` of that origin; each flow run's pull
step clones origin's `main` (at commit 3) on the worker, so the runs for commits 0, 1 and 2 must fetch
and check out their commit themselves. The deployment's defaults are edited once (as in the UI: the
local sandbox's state dir, dry run), so the runs build and report but deploy nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from cli.commands import notify_merge
from deployments.definitions import load_definitions, register_recovery
from deployments.serve import Layout, down, start_worker
from tests.server.conftest import POOL, REPO_ROOT, LocalServer
from tests.server.test_deployments import client_for, poll

pytestmark = [pytest.mark.server, pytest.mark.sandbox, pytest.mark.docker, pytest.mark.timeout(420)]

RUN_DEADLINE_S = 300.0
LABEL = "dev.stagecheck.test.commit"
DOCKERFILE = Path("examples/sample-service/Dockerfile")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class YamlDeployed:
    server: LocalServer
    pool: str
    fresh: Path  # the clone `prefect deploy` ran in
    origin_url: str
    shas: list[str]  # commits 0..3; origin's main is at shas[3]
    ids: dict[str, UUID]  # deployment name -> id
    deploy_output: str
    checkouts: Path  # where the runs' per-run checkouts go (the cache dir of the session)


def _copy_repository(dest: Path) -> None:
    """This repository's tracked and new (not ignored) files: nothing generated (the sample builds without)."""
    files = git(REPO_ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        src = REPO_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _make_origin(root: Path) -> tuple[str, list[str]]:
    src = root / "src"
    src.mkdir()
    _copy_repository(src)
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    git(src, "config", "user.email", "ci@example.com")
    git(src, "config", "user.name", "ci")
    original = (src / DOCKERFILE).read_text()
    shas = []
    for n in range(4):
        (src / DOCKERFILE).write_text(f'{original}LABEL {LABEL}="{n}"\n')
        git(src, "add", "-A", "-f", ".")
        git(src, "commit", "-qm", f"commit {n}")
        shas.append(git(src, "rev-parse", "HEAD"))
    origin = root / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(origin)], check=True)
    return f"file://{origin}", shas


async def _create_pool(pool: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(
            name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))


async def _edit_defaults(ids: dict[str, UUID], **changes: Any) -> None:
    """What a person does in the UI: edit a deployment's default parameters."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    async with get_client() as client:
        for deployment_id in ids.values():
            deployment = await client.read_deployment(deployment_id)
            await client.update_deployment(deployment_id, DeploymentUpdate(
                parameters={**deployment.parameters, **changes}))


async def _deployments_in_pool(pool: str) -> dict[str, UUID]:
    from prefect import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    async with get_client() as client:
        found = await client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
    return {d.name: d.id for d in found}


@pytest.fixture(scope="module")
def yaml_deployed(prefect_server: LocalServer, deployed: Any, sandbox: Any, sample_image: Any, docker_client: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[YamlDeployed]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("yaml-deploy")
    origin_url, shas = _make_origin(root)
    fresh = root / "fresh"
    subprocess.run(["git", "clone", "-q", origin_url, str(fresh)], check=True)
    pool = f"users-pool-{uuid.uuid4().hex[:6]}"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        asyncio.run(_create_pool(pool))
    env = {**os.environ, "PREFECT_API_URL": prefect_server.url, "PREFECT_HOME": str(root / "prefect-home"),
           "PREFECT_DEFAULT_WORK_POOL_NAME": pool}  # the file names no pool: Prefect's default decides
    deploy = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                            cwd=fresh, env=env, capture_output=True, text=True, timeout=180)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        ids = asyncio.run(_deployments_in_pool(pool))
        assert ids, deploy.stdout[-3000:]
        validations = {name: i for name, i in ids.items() if name != "recover"}  # the recovery flow has its own
        asyncio.run(_edit_defaults(validations, config="examples/stagecheck.sandbox.toml", sandbox=True,
                                   state_dir=sandbox.state_dir, dry_run=True))
    worker_layout = Layout(root / "worker-state")
    start_worker(worker_layout, prefect_server.url, pool, name="users-worker", query_seconds=1)
    try:
        yield YamlDeployed(server=prefect_server, pool=pool, fresh=fresh, origin_url=origin_url, shas=shas, ids=ids,
                           deploy_output=deploy.stdout,
                           checkouts=Path(os.environ["STAGECHECK_CACHE_DIR"]) / "checkouts")
    finally:
        down(worker_layout)
        # `deploy --all` moved the one recovery deployment (stagecheck-recover/recover) into this module's
        # pool, whose worker is gone now: put it back where `stagecheck serve` (the `deployed` fixture, set up
        # first for this) keeps it, for the crash test
        with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
            asyncio.run(register_recovery(work_pool=POOL, repo_root=REPO_ROOT))
        for image in docker_client.images.list(filters={"label": LABEL}):
            docker_client.images.remove(image.id, force=True)


async def _final(client: Any, run_id: UUID) -> Any:
    run = await client.read_flow_run(run_id)
    return run if run.state is not None and run.state.is_final() else None


@dataclass
class RunFacts:
    run: Any
    tasks: dict[str, Any]  # task run name -> task run
    report: str  # the report artifact's markdown


async def _facts(client: Any, run: Any) -> RunFacts:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
    tasks = {t.name: t for t in await client.read_task_runs(flow_run_filter=runs)}
    artifacts = [a for a in await client.read_artifacts(flow_run_filter=runs) if a.key == "stagecheck-report-sample"]
    return RunFacts(run=run, tasks=tasks, report=str(artifacts[0].data) if artifacts else "")


def _image_label(docker_client: Any, sha: str) -> str:
    """The test label of the image built for `sha` (its revision label is the SHA)."""
    images = docker_client.images.list(filters={"label": f"org.opencontainers.image.revision={sha}"})
    assert len(images) == 1, f"{len(images)} images built for {sha[:12]}"
    return str(images[0].labels[LABEL])


async def test_prefect_deploy_all_from_a_fresh_clone_registers_the_targets_into_the_users_pool(
        yaml_deployed: YamlDeployed) -> None:
    d = yaml_deployed
    definitions = load_definitions(d.fresh / "prefect.yaml")  # what `stagecheck serve` reads, too
    assert set(d.ids) == {x.name for x in definitions}
    async with client_for(d.server.url) as client:
        automations = await client.read_automations()
        recovery = await client.read_deployment(d.ids["recover"])
        assert recovery.entrypoint == "flows/recover.py:recover" and recovery.work_pool_name == d.pool
        crash = [a for a in automations if any(getattr(x, "deployment_id", None) == recovery.id for x in a.actions)]
        assert len(crash) == 1 and crash[0].trigger.expect == {"prefect.flow-run.Crashed"}
        for target in (x for x in definitions if x.validates):
            deployment = await client.read_deployment(d.ids[target.name])
            assert deployment.work_pool_name == d.pool
            assert deployment.entrypoint == "flows/validate.py:validate"
            assert set(deployment.tags) == set(target.tags)
            expected = [(s["cron"], s["timezone"], False) for s in target.schedules or []]  # shipped inactive
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == expected
            assert deployment.parameter_openapi_schema["properties"]["git_sha"]["anyOf"][0]["pattern"]
            # the pull step clones the deploying clone's origin and branch on the worker, then works there
            clone = deployment.pull_steps[0]["prefect.deployments.steps.git_clone"]
            assert (clone["repository"], clone["branch"]) == (d.origin_url, "main")
            assert "set_working_directory" in next(iter(deployment.pull_steps[1]))
            runs = [a for automation in automations for a in automation.actions
                    if getattr(a, "deployment_id", None) == deployment.id]
            assert [r.parameters for r in runs] == [t["parameters"] for t in target.triggers or []]
            assert [r.parameters for r in runs] == [{"git_sha": "{{ event.payload.sha }}",
                                                     "git_ref": "{{ event.payload.ref }}"}]


async def test_a_run_started_through_the_api_with_one_parameter_changed_runs_on_the_worker(
        yaml_deployed: YamlDeployed, docker_client: Any) -> None:
    d = yaml_deployed
    sha = d.shas[0]
    async with client_for(d.server.url) as client:
        created = await client.create_flow_run_from_deployment(d.ids["staging"], parameters={"git_sha": sha})
        run = await poll(lambda: _final(client, created.id), within_s=RUN_DEADLINE_S)
        facts = await _facts(client, run)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    assert run.work_pool_name == d.pool and run.infrastructure_pid
    # the changed parameter on top of the (edited) defaults
    assert run.parameters["git_sha"] == sha and run.parameters["dry_run"] is True
    assert run.parameters["config"] == "examples/stagecheck.sandbox.toml"
    checkout = facts.tasks[f"checkout-{sha[:7]}"]
    assert checkout.state.is_completed()
    assert sha in facts.report and "PASS" in facts.report
    assert _image_label(docker_client, sha) == "0"  # built from commit 0's tree, not the clone's (3)


async def test_two_merge_events_run_each_commit_on_a_worker_whose_clone_is_at_neither(
        yaml_deployed: YamlDeployed, docker_client: Any) -> None:
    d = yaml_deployed
    merged = {d.shas[1]: "1", d.shas[2]: "2"}
    unknown = "0123456789abcdef0123456789abcdef01234567"  # not in origin: the checkout gate fails
    for sha in [*merged, unknown]:
        code = await asyncio.to_thread(notify_merge.main, [
            "--sha", sha, "--ref", "refs/heads/main", "--repo", "shop", "--api-url", d.server.url])
        assert code == 0

    async def merge_runs(client: Any) -> list[Any]:
        runs = await client.read_flow_runs()
        mine = [r for r in runs if r.deployment_id == d.ids["staging"] and r.parameters.get("git_sha") in
                {*merged, unknown}]
        return mine if len(mine) == 3 else []

    async with client_for(d.server.url) as client:
        runs = await poll(lambda: merge_runs(client), within_s=90)
        finals = {run.parameters["git_sha"]: await poll(lambda run=run: _final(client, run.id), within_s=RUN_DEADLINE_S)
                  for run in runs}
        facts = {sha: await _facts(client, run) for sha, run in finals.items()}
    for sha, label in merged.items():
        run = finals[sha]
        assert run.state.is_completed(), f"{sha[:7]}: {run.state.name}: {run.state.message}"
        # only the commit and ref came from the event; the rest are the deployment's (edited) defaults
        assert run.parameters["git_ref"] == "refs/heads/main" and run.parameters["dry_run"] is True
        assert run.name == f"validate-sample-{sha[:7]}"
        assert facts[sha].tasks[f"checkout-{sha[:7]}"].state.is_completed()
        assert sha in facts[sha].report
        assert f"the clone is at {d.shas[3][:12]}" in facts[sha].report  # the worker's clone was at neither
        assert _image_label(docker_client, sha) == label
    bad = finals[unknown]
    assert bad.state.is_failed()
    checkout = facts[unknown].tasks[f"checkout-{unknown[:7]}"]
    assert checkout.state.is_failed() and "not found" in (checkout.state.message or "")
    assert "checkout" in (bad.state.message or "")
    # every per-run checkout was removed at the end of its run
    assert list(d.checkouts.iterdir()) == []


async def test_a_bad_sha_is_refused_before_a_run_starts(yaml_deployed: YamlDeployed) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    d = yaml_deployed
    async with client_for(d.server.url) as client:
        with pytest.raises(PrefectHTTPStatusError) as refused:  # the run form's pattern, enforced by the server
            await client.create_flow_run_from_deployment(d.ids["staging"], parameters={"git_sha": "main;reboot"})
        runs = [r for r in await client.read_flow_runs() if r.parameters.get("git_sha") == "main;reboot"]
    assert refused.value.response.status_code == 409 and "git_sha" in refused.value.response.text
    assert runs == []
