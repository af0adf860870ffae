"""`stagecheck serve` registers prefect.yaml's own entries (the file `prefect deploy` reads), on a real Prefect
server: the shipped staging entry with its inactive schedule and merge trigger, `--param` defaults, and what a
user adds (work queue, job variables, concurrency limit)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.definitions import PREFECT_YAML, REPO_ROOT
from deployments.serve import definitions_for, setup
from tests.server.conftest import LocalServer
from tests.server.test_deployments import client_for

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]


def test_serve_registers_the_entries_of_prefect_yaml(prefect_server: LocalServer, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    suffix = uuid.uuid4().hex[:6]
    document = yaml.safe_load(PREFECT_YAML.read_text())  # the shipped file, anchors resolved
    (staging,) = [d for d in document["deployments"] if d["name"] == "staging"]
    staging = {**staging, "name": f"staging-{suffix}",  # a name of its own on the shared test server
               "work_pool": {"work_queue_name": "nightly", "job_variables": {"env": {"LOG_LEVEL": "debug"}}},
               "concurrency_limit": 2}
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({**document, "deployments": [staging]}))
    definitions = definitions_for(path, {"dry_run": True})
    pool = f"serve-file-{suffix}"

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        done = asyncio.run(setup(definitions, pool=pool, repo_root=REPO_ROOT))

        async def read() -> tuple[Any, list[Any]]:
            async with client_for(prefect_server.url) as client:
                deployment = await client.read_deployment(done.deployment_ids[0])
                automations = [a for a in await client.read_automations()
                               if any(getattr(x, "deployment_id", None) == deployment.id for x in a.actions)]
            return deployment, automations

        deployment, automations = asyncio.run(read())

    assert deployment.work_pool_name == pool and deployment.work_queue_name == "nightly"
    assert deployment.job_variables == {"env": {"LOG_LEVEL": "debug"}}
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 2
    assert [(s.schedule.cron, s.active) for s in deployment.schedules] == [("0 6 * * 1-5", False)]  # shipped off
    assert deployment.parameters["dry_run"] is True and deployment.parameters["sandbox"] is False
    (automation,) = automations
    assert automation.trigger.expect == {"stagecheck.git.merged"}
    (action,) = automation.actions
    assert action.parameters == {"git_sha": "{{ event.payload.sha }}", "git_ref": "{{ event.payload.ref }}"}


@pytest.mark.sandbox
@pytest.mark.docker
async def test_a_merge_event_of_another_repository_starts_its_target_only_for_its_url(deployed: Any) -> None:
    """A target naming a service repository takes merge events carrying its URL (`notify-merge --url`); an event of
    the same repository name with another URL starts nothing (it cannot redirect the run or its credentials)."""
    from cli.commands import notify_merge
    from deployments.definitions import Target
    from flows.params import ValidationRequest
    from tests.server.conftest import POOL
    from tests.server.test_deployments import _final, _runs_of, poll

    project = deployed.project
    target = Target(name=f"repo-{uuid.uuid4().hex[:6]}", cron=None, merge_repo=project.repo_name, merge_branch="main",
                    request=ValidationRequest(repository=str(project.root), config=project.config.name,
                                              services=[project.services["m"]], dry_run=True, sandbox=True,
                                              state_dir=project.state_dir))
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: deployed.server.url}):
        (deployment_id,) = (await setup([target.definition()], pool=POOL, repo_root=REPO_ROOT)).deployment_ids
    base = ["--sha", project.sha, "--ref", "refs/heads/main", "--repo", project.repo_name, "--api-url",
            deployed.server.url]
    assert await asyncio.to_thread(notify_merge.main, [*base, "--url", "/srv/git/impostor"]) == 0
    assert await asyncio.to_thread(notify_merge.main, [*base, "--url", f"{project.root}/",
                                                       "--config", project.config.name]) == 0

    async with client_for(deployed.server.url) as client:
        (run,) = await poll(lambda: _runs_of(client, deployment_id), within_s=90)
        final = await poll(lambda: _final(client, run.id), within_s=240)
        runs = await _runs_of(client, deployment_id)
    assert final.state.is_completed(), f"{final.state.name}: {final.state.message}"
    assert final.parameters["repository"] == str(project.root) and final.parameters["git_sha"] == project.sha
    assert [r.id for r in runs] == [run.id]  # the impostor's event, sent first, started nothing
