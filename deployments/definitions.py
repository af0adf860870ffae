"""The deployments of the validation flow, one per *target* (`deployments/targets.toml`).

A target names a config (which project, which services), its cron schedule (on by default for
staging, off for production), whether merges trigger it, and the default run parameters that the
Prefect UI's run form starts from (the form itself comes from `flows.params.ValidationRequest`,
whose fields carry descriptions and defaults). Everything here is pure except `register`.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deployments.events import MERGE_EVENT, REF_LABEL, resource_id
from flows.params import ValidationRequest
from stagecheck.settings import ConfigError, read_toml

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/validate.py:validate"  # relative to the repo root: resolves from any clone
FLOW_NAME = "stagecheck-validate"
DEFAULT_POOL = "stagecheck"
DEFAULT_TARGETS_FILE = REPO_ROOT / "deployments" / "targets.toml"
# The recovery deployment: an Automation (a deployment trigger) starts it when a validation flow run
# crashes (its process was killed mid-release), with the crashed run; it restores the split that run left.
RECOVERY_ENTRYPOINT = "flows/recover.py:recover"
RECOVERY_FLOW_NAME = "stagecheck-recover"
RECOVERY_DEPLOYMENT = "recover"
CRASHED_EVENT = "prefect.flow-run.Crashed"
RECOVERY_DESCRIPTION = ("Restore the traffic split a crashed validation left on its Cloud Run services "
                        "(started by the crash trigger; or run it with services=[...]).")
RECOVERY_TAGS = ("stagecheck", "recovery")


class Environment(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"


class DefinitionError(Exception):
    """The targets file is unusable; the message says what and where."""


class Target(BaseModel):
    """One deployment of the validation flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="deployment name (the UI shows stagecheck-validate/<name>)",
                      pattern=r"^[a-z][a-z0-9-]{0,62}$")
    environment: Environment = Environment.STAGING
    description: str | None = None
    request: ValidationRequest = Field(default_factory=ValidationRequest,
                                       description="default run parameters (the UI's run form starts from them)")
    cron: str | None = Field("0 6 * * 1-5", description="when scheduled runs start; none: no schedule")
    timezone: str = Field("UTC", description="IANA time zone of the cron")
    schedule_enabled: bool | None = Field(None, description="default: on for staging, off for production")
    merge_trigger: bool | None = Field(None, description="a merge event starts a run; default: staging only")
    merge_repo: str = Field("*", description="only merges of this repository (git.repo.<name>); * for any")
    merge_branch: str = Field("*", description="only merges into this branch; * for any")
    tags: tuple[str, ...] = ()

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=v)
        except ValidationError:
            raise ValueError(f"invalid cron expression {v!r}") from None
        return v

    @property
    def schedule_active(self) -> bool:
        if self.schedule_enabled is not None:
            return self.schedule_enabled
        return self.environment is Environment.STAGING

    @property
    def triggered_by_merges(self) -> bool:
        if self.merge_trigger is not None:
            return self.merge_trigger
        return self.environment is Environment.STAGING

    @property
    def full_name(self) -> str:
        return f"{FLOW_NAME}/{self.name}"

    def parameters(self) -> dict[str, Any]:
        """The deployment's default parameters (JSON, what the run form is pre-filled with): the flow's
        flat parameters, one per field of the request."""
        return self.request.model_dump(mode="json")

    def merge_parameters(self) -> dict[str, Any]:
        """A merge-triggered run's parameters: only the event's commit and ref. The server fills in the
        rest from the deployment's defaults (key by key), so defaults edited in the UI reach merge runs."""
        return {"git_sha": "{{ event.payload.sha }}", "git_ref": "{{ event.payload.ref }}"}

    def merge_match(self) -> dict[str, str]:
        match = {"prefect.resource.id": resource_id(self.merge_repo)}
        if self.merge_branch != "*":
            match[REF_LABEL] = self.merge_branch
        return match

    def all_tags(self) -> list[str]:
        return list(dict.fromkeys(["stagecheck", self.environment.value, *self.tags]))


class Targets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[Target, ...] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _distinct(cls, v: tuple[Target, ...]) -> tuple[Target, ...]:
        names = [t.name for t in v]
        if len(names) != len(set(names)):
            raise ValueError(f"target names must be distinct: {names}")
        return v


def load_targets(path: Path = DEFAULT_TARGETS_FILE) -> tuple[Target, ...]:
    """Read a targets file; DefinitionError with a readable message on any problem."""
    try:
        data = read_toml(path, "targets file")
    except ConfigError as exc:
        raise DefinitionError(str(exc)) from None
    try:
        return Targets(**data).targets
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DefinitionError(f"{path}: {problems}") from None


def schedules(target: Target) -> list[dict[str, Any]]:
    """The deployment's schedules: its cron, active or not (an inactive one is kept so a person can
    switch it on in the UI)."""
    if target.cron is None:
        return []
    from prefect.client.schemas.schedules import CronSchedule

    return [{"schedule": CronSchedule(cron=target.cron, timezone=target.timezone), "active": target.schedule_active}]


def triggers(target: Target) -> list[Any]:
    if not target.triggered_by_merges:
        return []
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return [DeploymentEventTrigger(
        name=f"{target.name}: validate merged commits",
        expect={MERGE_EVENT},
        match=target.merge_match(),
        parameters=target.merge_parameters(),
    )]


def config_service_names(config: Path) -> list[str]:
    """The service names a config declares, read without validating the rest (its endpoints may
    need a sandbox that is not up yet); [] when the file is missing or unreadable."""
    try:
        data = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    services = data.get("services")
    if not isinstance(services, list):
        return []
    return [str(s["name"]) for s in services if isinstance(s, dict) and isinstance(s.get("name"), str)]


def service_names(target: Target, repo_root: Path = REPO_ROOT) -> list[str]:
    """The services a target's runs may validate, for their concurrency limits (runs of a service
    outside this list fail at the lock, loudly, until its limit is created)."""
    if target.request.services:
        return list(target.request.services)
    config = Path(target.request.config)
    return config_service_names(config if config.is_absolute() else repo_root / config)


async def register(targets: tuple[Target, ...], *, work_pool: str = DEFAULT_POOL,
                   repo_root: Path = REPO_ROOT) -> list[UUID]:
    """Create or update each target's deployment on the configured Prefect API, to run from
    `repo_root` on the `work_pool` (a process pool: the worker runs the flow in that directory)."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    ids = []
    for target in targets:
        deployment = await RunnerDeployment.afrom_storage(
            storage=LocalStorage(str(repo_root)),
            entrypoint=ENTRYPOINT,
            name=target.name,
            description=target.description or f"Validate a release on Cloud Run {target.environment.value}.",
            schedules=schedules(target),  # type: ignore[arg-type]
            parameters=target.parameters(),
            triggers=triggers(target),
            tags=target.all_tags(),
            work_pool_name=work_pool,
        )
        ids.append(await deployment.aapply())
    return ids


def recovery_trigger() -> Any:
    """Pure: the trigger of the recovery deployment: a `prefect.flow-run.Crashed` event whose related flow is
    the validation flow; the run gets the crashed run (`prefect.flow-run.<id>`) and reads the rest from it."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="recover the traffic of a crashed validation",
        expect={CRASHED_EVENT},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
        parameters={"crashed_run": "{{ event.resource.id }}"},
    )


async def register_recovery(*, work_pool: str = DEFAULT_POOL, repo_root: Path = REPO_ROOT) -> UUID:
    """Create or update the recovery deployment (`stagecheck-recover/recover`) with its crash trigger."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    deployment = await RunnerDeployment.afrom_storage(
        storage=LocalStorage(str(repo_root)),
        entrypoint=RECOVERY_ENTRYPOINT,
        name=RECOVERY_DEPLOYMENT,
        description=RECOVERY_DESCRIPTION,
        triggers=[recovery_trigger()],
        tags=list(RECOVERY_TAGS),
        work_pool_name=work_pool,
    )
    return await deployment.aapply()
