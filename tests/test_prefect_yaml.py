"""prefect.yaml is the one source of the deployments: `prefect deploy` reads it, and so does `stagecheck serve`
(deployments.definitions.load_definitions). Its shipped defaults are safe in a real workspace."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import yaml

from deployments.definitions import (
    ENTRYPOINT,
    PREFECT_YAML,
    RECOVERY_ENTRYPOINT,
    DefinitionError,
    Target,
    load_definitions,
    recovery_trigger,
    service_names,
)
from deployments.serve import ServeError, default_pool, definitions_for, parse_params
from flows.params import ValidationRequest


def test_the_shipped_file_is_safe_in_a_real_workspace() -> None:
    definitions = load_definitions()
    validations = [d for d in definitions if d.validates]
    assert validations and any(d.entrypoint == RECOVERY_ENTRYPOINT for d in definitions)
    for definition in definitions:
        assert definition.active_schedules() == [], definition.name  # nothing starts by itself
        assert definition.work_pool.name is None  # PREFECT_DEFAULT_WORK_POOL_NAME (or the user's) decides
    for definition in validations:
        assert definition.parameters["sandbox"] is False  # nothing pointed at the local sandbox
        assert list(definition.parameters) == list(ValidationRequest.model_fields)  # the whole run form
        ValidationRequest(**definition.parameters)


def _run_branch_step(repo: Path) -> str:
    """The `git-branch` build step of the shipped file, run by Prefect's own step function in `repo`."""
    from prefect.deployments.steps.utility import run_shell_script

    (step,) = [s["prefect.deployments.steps.run_shell_script"] for s in yaml.safe_load(PREFECT_YAML.read_text())["build"]
               if s["prefect.deployments.steps.run_shell_script"]["id"] == "git-branch"]
    out = asyncio.run(run_shell_script(script=step["script"], directory=str(repo), stream_output=False))
    return str(out["stdout"]).strip()


def test_the_branch_is_never_taken_from_a_detached_head(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b.c", "-c", "user.name=n", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "release")
    git("commit", "-q", "--allow-empty", "-m", "one")
    assert _run_branch_step(tmp_path) == "release"
    git("checkout", "-q", "--detach")
    with pytest.raises(RuntimeError, match="HEAD is detached"):
        _run_branch_step(tmp_path)


def test_the_recovery_deployment_carries_the_crash_trigger() -> None:
    (recover,) = [d for d in load_definitions() if d.entrypoint == RECOVERY_ENTRYPOINT]
    (trigger,) = recover.trigger_objects()
    assert trigger.model_dump(exclude={"id"}) == recovery_trigger().model_dump(exclude={"id"})


EDITED = """
definitions:
  params: &params
    config: services/shop/stagecheck.toml
    dry_run: true
  trigger: &trigger
    type: event
    expect: [stagecheck.git.merged]
    parameters: {git_sha: "{{ event.payload.sha }}"}
deployments:
- name: shop
  entrypoint: flows/validate.py:validate
  parameters:
    <<: *params
    services: [shop]
  work_pool:
    name: k8s
    work_queue_name: staging
    job_variables: {env: {LOG_LEVEL: debug}}
  concurrency_limit: 2
  schedules:
  - interval: 3600
  triggers:
  - <<: *trigger
    match: {prefect.resource.id: git.repo.shop}
- name: recover
  entrypoint: flows/recover.py:recover
"""


def test_a_users_file_with_anchors_queues_job_variables_and_concurrency_loads(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(EDITED)
    shop, recover = load_definitions(path)
    assert shop.parameters == {"config": "services/shop/stagecheck.toml", "dry_run": True, "services": ["shop"]}
    assert (shop.work_pool.name, shop.work_pool.work_queue_name) == ("k8s", "staging")
    assert shop.work_pool.job_variables == {"env": {"LOG_LEVEL": "debug"}} and shop.concurrency_limit == 2
    assert len(shop.active_schedules()) == 1  # `active` defaults to true, as Prefect reads it
    (trigger,) = shop.trigger_objects()
    assert trigger.name == "shop__automation_1" and trigger.parameters == {"git_sha": "{{ event.payload.sha }}"}
    assert service_names(shop) == ["shop"] and not recover.validates


@pytest.mark.parametrize(("text", "fragment"), [
    ("deployments: []\n", "no `deployments:` list"),
    ("deployments:\n- name: a\n", "deployments[0] (a): entrypoint"),
    ("deployments:\n- name: a\n  entrypoint: flows/validate.py:validate\n  schedules: [{cron: '61 * * * *'}]\n",
     "deployments[0] (a)"),
    ("deployments:\n- {name: a, entrypoint: x.py:f}\n- {name: a, entrypoint: x.py:f}\n", "distinct"),
    ("deployments: [\n", "not valid YAML"),
])
def test_a_bad_file_is_a_readable_error_naming_the_entry(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as err:
        load_definitions(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_serve_params_change_only_the_validation_deployments_defaults(tmp_path: Path) -> None:
    assert parse_params(["sandbox=true", "config=examples/x.toml", "services=[\"a\"]"]) == {
        "sandbox": True, "config": "examples/x.toml", "services": ["a"]}
    with pytest.raises(ServeError, match="KEY=VALUE"):
        parse_params(["sandbox"])
    definitions = definitions_for(PREFECT_YAML, {"sandbox": True, "state_dir": "/s"})
    for definition in definitions:
        if definition.validates:
            assert definition.parameters["sandbox"] is True and definition.parameters["state_dir"] == "/s"
        else:
            assert "sandbox" not in definition.parameters
    with pytest.raises(ServeError, match="--param colour: not a parameter"):
        definitions_for(PREFECT_YAML, {"colour": "red"})


def test_serve_takes_the_default_work_pool_from_prefects_setting() -> None:
    from prefect.settings import PREFECT_DEFAULT_WORK_POOL_NAME, temporary_settings

    with temporary_settings(updates={PREFECT_DEFAULT_WORK_POOL_NAME: "team-pool"}):
        assert default_pool() == "team-pool"
    with temporary_settings(restore_defaults={PREFECT_DEFAULT_WORK_POOL_NAME}):
        assert default_pool() == "stagecheck"


def test_a_target_of_another_repository_takes_only_merges_of_its_url() -> None:
    shop = Target(name="shop", merge_repo="acme/shop", merge_branch="main", request=ValidationRequest(
        repository="https://github.com/acme/shop.git", config="deploy/stagecheck.toml"))
    entry = shop.entry()
    (trigger,) = entry["triggers"]
    assert trigger["match"] == {"prefect.resource.id": "git.repo.acme.shop", "stagecheck.git.ref": "main",
                                "stagecheck.git.url": "https://github.com/acme/shop"}
    assert trigger["parameters"] == {"git_sha": "{{ event.payload.sha }}", "git_ref": "{{ event.payload.ref }}"}
    assert entry["entrypoint"] == ENTRYPOINT and entry["parameters"]["repository"] == "https://github.com/acme/shop.git"
    assert service_names(shop.definition()) == []  # its config is in the other repository: runs create limits


DOCKER_POOL_FILE = Path(__file__).resolve().parents[1] / "examples" / "docker-pool" / "prefect.yaml"


def test_the_docker_pool_file_runs_the_image_and_takes_merges_of_its_repository_only() -> None:
    """examples/docker-pool/prefect.yaml: the flow from the worker image (its WORKDIR), the run form's own
    parameter names, and a trigger of the merge event on the URL label (the end-to-end run of this file:
    tests/server/test_docker_worker.py)."""
    from deployments.events import MERGE_EVENT, REF_LABEL, URL_LABEL

    doc = yaml.safe_load(DOCKER_POOL_FILE.read_text())
    workdir = [line.split()[1] for line in (Path(__file__).resolve().parents[1] / "Dockerfile").read_text().splitlines()
               if line.startswith("WORKDIR ")]
    assert doc["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir[-1]}}]
    [entry] = doc["deployments"]
    assert entry["entrypoint"] == ENTRYPOINT
    assert set(entry["parameters"]) <= set(ValidationRequest.model_fields)
    assert entry["parameters"]["repository"] == "{{ $DEPLOY_REPOSITORY }}"
    [trigger] = entry["triggers"]
    assert trigger["expect"] == [MERGE_EVENT]
    assert trigger["match"][URL_LABEL] == entry["parameters"]["repository"]  # an event of another URL starts nothing
    assert trigger["match"][REF_LABEL] == "{{ $DEPLOY_BRANCH }}"
    assert set(trigger["parameters"]) == {"git_sha", "git_ref"}


@pytest.mark.parametrize(("env", "message"), [
    ({}, "DEPLOY_NAME is not set"),
    ({"DEPLOY_NAME": "shop", "DEPLOY_REPOSITORY": "https://git.example.com/acme/shop.git", "DEPLOY_CONFIG": "s.toml",
      "DEPLOY_BRANCH": "main", "DEPLOY_POOL": "p", "DEPLOY_IMAGE": "i"}, "drop the trailing .git"),
    ({"DEPLOY_NAME": "shop", "DEPLOY_REPOSITORY": "https://git.example.com/acme/shop", "DEPLOY_CONFIG": "s.toml",
      "DEPLOY_BRANCH": "main", "DEPLOY_POOL": "p", "DEPLOY_IMAGE": "i"}, ""),
])
def test_the_docker_pool_files_check_step_stops_prefect_deploy_on_a_missing_value(env: dict[str, str],
                                                                                    message: str) -> None:
    import shlex

    step = yaml.safe_load(DOCKER_POOL_FILE.read_text())["build"][0]["prefect.deployments.steps.run_shell_script"]
    done = subprocess.run(shlex.split(step["script"]), env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True)
    assert (done.returncode != 0) == bool(message)
    assert message in done.stderr
