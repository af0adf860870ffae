"""The deployments: `prefect.yaml` at the repository root is their one source. `prefect deploy --all` reads it
into any Prefect server or Cloud workspace; `stagecheck serve` (`make serve`) reads the same entries with
`load_definitions` and registers them into its local server to run from this clone (a `process` pool).

A `Definition` is one `deployments:` entry as Prefect reads it (YAML anchors resolved by the YAML loader):
name, entrypoint, description, tags, parameters, schedules, triggers, concurrency_limit and the work pool's
work queue and job variables. A `Target` builds such an entry in code (the tests' deployments): a config,
its cron schedule (on for staging, off for production unless said), a merge trigger, default parameters.
Everything here is pure except `register` and `register_recovery`.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deployments.events import MERGE_EVENT, REF_LABEL, URL_LABEL, resource_id
from flows.params import ValidationRequest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/validate.py:validate"  # relative to the repo root: resolves from any clone
FLOW_NAME = "stagecheck-validate"
DEFAULT_POOL = "stagecheck"
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
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
    """prefect.yaml (or a target) is unusable; the message says what and where."""


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
        """The events this target's trigger takes: of its repository (name, and git URL when the target names
        one: an event cannot send a run, or its credentials, elsewhere) and branch."""
        match = {"prefect.resource.id": resource_id(self.merge_repo)}
        if self.merge_branch != "*":
            match[REF_LABEL] = self.merge_branch
        if self.request.repository:
            from stagecheck.repository import canonical_url

            match[URL_LABEL] = canonical_url(self.request.repository)
        return match

    def all_tags(self) -> list[str]:
        return list(dict.fromkeys(["stagecheck", self.environment.value, *self.tags]))

    def entry(self) -> dict[str, Any]:
        """Pure: this target as a prefect.yaml `deployments:` entry."""
        out: dict[str, Any] = {
            "name": self.name, "entrypoint": ENTRYPOINT,
            "description": self.description or f"Validate a release on Cloud Run {self.environment.value}.",
            "tags": self.all_tags(), "parameters": self.parameters(),
            "schedules": ([{"cron": self.cron, "timezone": self.timezone, "active": self.schedule_active}]
                          if self.cron else []),
        }
        if self.triggered_by_merges:
            out["triggers"] = [{"type": "event", "name": f"{self.name}: validate merged commits", "enabled": True,
                                "expect": [MERGE_EVENT], "match": self.merge_match(),
                                "parameters": self.merge_parameters()}]
        return out

    def definition(self) -> Definition:
        return Definition.model_validate(self.entry())


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


def recovery_entry() -> dict[str, Any]:
    """Pure: the recovery deployment's prefect.yaml entry, with its crash Automation."""
    trigger = recovery_trigger().model_dump(mode="json")
    return {
        "name": RECOVERY_DEPLOYMENT, "entrypoint": RECOVERY_ENTRYPOINT, "description": RECOVERY_DESCRIPTION,
        "tags": list(RECOVERY_TAGS), "parameters": {}, "schedules": [],
        "triggers": [{"type": "event", "name": trigger["name"], "enabled": True, "expect": sorted(trigger["expect"]),
                      "match": trigger["match"], "match_related": trigger["match_related"],
                      "parameters": trigger["parameters"]}],
    }


class WorkPoolEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class Definition(BaseModel):
    """One `deployments:` entry of prefect.yaml, as `prefect deploy` reads it (other keys are kept, unused here)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    entrypoint: str = Field(min_length=3)
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[dict[str, Any]] | None = None
    triggers: list[dict[str, Any]] | None = None
    concurrency_limit: int | dict[str, Any] | None = None
    enforce_parameter_schema: bool = True
    work_pool: WorkPoolEntry = Field(default_factory=WorkPoolEntry)

    @property
    def validates(self) -> bool:
        """A deployment of the validation flow (the one taking ValidationRequest's parameters)."""
        return self.entrypoint == ENTRYPOINT

    def with_parameters(self, overrides: dict[str, Any]) -> Definition:
        return self.model_copy(update={"parameters": {**self.parameters, **overrides}})

    def schedule_objects(self) -> list[dict[str, Any]]:
        """The schedules as `prefect deploy` builds them (cron / interval / rrule, time zone, active)."""
        from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

        return [_schedule_config_to_deployment_schedule(dict(s)) for s in self.schedules or []]

    def trigger_objects(self) -> list[Any]:
        """The triggers as `prefect deploy` builds them (named `<deployment>__automation_<n>` when unnamed)."""
        from prefect.events import DeploymentTriggerTypes
        from pydantic import TypeAdapter

        adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
        return [adapter.validate_python({"name": f"{self.name}__automation_{i}", **spec})
                for i, spec in enumerate(self.triggers or [], start=1)]

    def active_schedules(self) -> list[dict[str, Any]]:
        """Pure: the schedules that would start runs as registered (`active` defaults to true, as in Prefect)."""
        return [s for s in self.schedules or [] if s.get("active", True)]


def load_definitions(path: Path = PREFECT_YAML) -> tuple[Definition, ...]:
    """The deployments of a prefect.yaml (anchors and aliases resolved); DefinitionError naming the entry and
    field on any problem, also for an invalid schedule or trigger."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}") from None
    entries = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DefinitionError(f"{path}: no `deployments:` list")
    out = []
    for index, entry in enumerate(entries):
        where = f"{path}: deployments[{index}]" + (f" ({entry.get('name')})" if isinstance(entry, dict) else "")
        try:
            definition = Definition.model_validate(entry)
            definition.schedule_objects()
            definition.trigger_objects()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise DefinitionError(f"{where}: {problems}") from None
        except (ValueError, TypeError) as exc:
            raise DefinitionError(f"{where}: {exc}") from None
        out.append(definition)
    names = [d.name for d in out]
    if len(names) != len(set(names)):
        raise DefinitionError(f"{path}: deployment names must be distinct: {names}")
    return tuple(out)


def service_names(definition: Definition, repo_root: Path = REPO_ROOT) -> list[str]:
    """The services a validation deployment's runs may validate, for their concurrency limits (runs of a service
    outside this list create its limit themselves); [] for another repository's config or an unreadable one."""
    params = definition.parameters
    if params.get("services"):
        return [str(s) for s in params["services"]]
    if params.get("repository"):  # the config is in another repository: the runs create their limits
        return []
    config = Path(str(params.get("config") or "stagecheck.toml"))
    return config_service_names(config if config.is_absolute() else repo_root / config)


async def register(definitions: tuple[Definition, ...] | list[Definition], *, work_pool: str = DEFAULT_POOL,
                   repo_root: Path = REPO_ROOT) -> list[UUID]:
    """Create or update each deployment on the configured Prefect API, to run from `repo_root` on `work_pool` (a
    process pool: the worker runs the flow in that directory) with its work queue, job variables, schedules,
    triggers and concurrency limit as the file says."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    ids = []
    for definition in definitions:
        deployment = await RunnerDeployment.afrom_storage(
            storage=LocalStorage(str(repo_root)),
            entrypoint=definition.entrypoint,
            name=definition.name,
            description=definition.description,
            schedules=definition.schedule_objects(),  # type: ignore[arg-type]
            parameters=definition.parameters,
            triggers=definition.trigger_objects(),
            tags=definition.tags,
            concurrency_limit=definition.concurrency_limit,  # type: ignore[arg-type]
            enforce_parameter_schema=definition.enforce_parameter_schema,
            work_pool_name=work_pool,
            work_queue_name=definition.work_pool.work_queue_name,
            job_variables=definition.work_pool.job_variables or None,
        )
        ids.append(await deployment.aapply())
    return ids


async def register_recovery(*, work_pool: str = DEFAULT_POOL, repo_root: Path = REPO_ROOT) -> UUID:
    """Create or update the recovery deployment (`stagecheck-recover/recover`) with its crash trigger."""
    (deployment_id,) = await register([Definition.model_validate(recovery_entry())], work_pool=work_pool,
                                      repo_root=repo_root)
    return deployment_id
