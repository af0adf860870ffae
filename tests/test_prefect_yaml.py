"""prefect.yaml is generated from deployments/targets.toml and kept in step with it."""

from __future__ import annotations

from pathlib import Path

import yaml

from deployments.definitions import Environment, Target, load_targets
from deployments.prefect_yaml import PREFECT_YAML, deployment, main, render
from flows.params import ValidationRequest


def test_the_committed_prefect_yaml_is_generated_from_the_targets() -> None:
    assert PREFECT_YAML.read_text() == render(load_targets())
    assert main(["--check"]) == 0


def test_check_reports_a_file_out_of_step(tmp_path: Path) -> None:
    stale = tmp_path / "prefect.yaml"
    stale.write_text(PREFECT_YAML.read_text().replace("0 6 * * 1-5", "0 7 * * 1-5"))
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0


def test_a_deployment_entry_carries_schedule_trigger_tags_and_flat_parameters() -> None:
    staging = Target(name="staging", request=ValidationRequest(config="c.toml", dry_run=True), merge_repo="acme/shop",
                     merge_branch="main", tags=("team-a",))
    production = Target(name="production", environment=Environment.PRODUCTION, cron="30 7 * * 1-5",
                        timezone="Europe/Berlin")
    entry = deployment(staging)
    assert entry["tags"] == ["stagecheck", "staging", "team-a"]
    assert entry["parameters"]["config"] == "c.toml" and entry["parameters"]["dry_run"] is True
    assert entry["schedules"] == [{"cron": "0 6 * * 1-5", "timezone": "UTC", "active": True}]
    (trigger,) = entry["triggers"]
    assert trigger["expect"] == ["stagecheck.git.merged"]
    assert trigger["match"] == {"prefect.resource.id": "git.repo.acme.shop", "stagecheck.git.ref": "main"}
    assert trigger["parameters"] == {"git_sha": "{{ event.payload.sha }}", "git_ref": "{{ event.payload.ref }}"}
    prod = deployment(production)
    assert prod["schedules"] == [{"cron": "30 7 * * 1-5", "timezone": "Europe/Berlin", "active": False}]
    assert "triggers" not in prod
    document = yaml.safe_load(render((staging, production)))
    assert [d["name"] for d in document["deployments"]] == ["staging", "production", "recover"]
    clone = document["pull"][0]["prefect.deployments.steps.git_clone"]
    assert clone["repository"] == "{{ git-origin.stdout }}" and clone["branch"] == "{{ git-branch.stdout }}"


def test_the_recovery_deployment_carries_the_crash_trigger_serve_registers() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from deployments.definitions import RECOVERY_ENTRYPOINT, recovery_trigger

    (entry,) = [d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if d["name"] == "recover"]
    assert entry["entrypoint"] == RECOVERY_ENTRYPOINT and "schedules" in entry and entry["schedules"] == []
    (trigger,) = entry["triggers"]
    parsed = DeploymentEventTrigger(**{k: v for k, v in trigger.items() if k != "type"})
    expected = recovery_trigger()
    assert parsed.model_dump(exclude={"id"}) == expected.model_dump(exclude={"id"})
    assert trigger["expect"] == ["prefect.flow-run.Crashed"]
    assert trigger["parameters"] == {"crashed_run": "{{ event.resource.id }}"}
