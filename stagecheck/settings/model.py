"""The whole settings model (`Settings`) and the build-input check run before any stage."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stagecheck.analysis.config import AnalysisSettings
from stagecheck.retry_policy import ApiRetries
from stagecheck.settings.endpoints import Endpoints, SyntaxSettings
from stagecheck.settings.logs import LogRules
from stagecheck.settings.price import PriceTable
from stagecheck.settings.probes import ProbePolicy
from stagecheck.settings.rules import MAX_SLOT_WAIT_S, MAX_WAIT_S, PROJECT_ID_RE, REGION_RE, ConfigError
from stagecheck.settings.services import ServiceConfig
from stagecheck.settings.traffic import TrafficPlan


class Settings(BaseModel):
    """A validation target: where to deploy, what to deploy, and how to judge it.

    Build it with `load_settings`, which merges the sources in their order of precedence
    (file < `STAGECHECK_*` env < sandbox endpoints < overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str  # Google Cloud project ID of the staging environment
    region: str  # Cloud Run region of the services, e.g. europe-west1
    registry: str = Field(description="image registry, e.g. REGION-docker.pkg.dev/PROJECT/REPO")
    registry_login: Literal["auto", "google"] = Field(
        "auto", description="auto: `oauth2accesstoken` + an access token of the API calls' identity for Artifact "
        "Registry and gcr.io hosts only; google: for this registry whatever its name (e.g. behind a proxy)")
    services: tuple[ServiceConfig, ...]  # the Cloud Run services to validate, one [[services]] table each
    lb_url: str | None = Field(None, description="load balancer base URL; LB probes are skipped without it")
    lb_tag_url: str | None = Field(
        None, description="URL the load balancer serves a revision tag at (serverless NEG URL mask), with {tag} "
        "and {service}, e.g. https://{tag}.tags.staging.example.com; the candidate is probed there before traffic")
    lb_tag_host: str | None = Field(
        None, description="Host header for lb_tag_url when the LB is reached by address, with {tag} and {service}")
    worker_in_vpc: bool = Field(False, description="the worker runs inside the services' VPC network: the run.app "
                                "URLs (tag URLs included) of `internal` and `internal-and-cloud-load-balancing` "
                                "services are reachable there, so they are probed instead of reported closed")
    endpoints: Endpoints = Endpoints()
    docker_host: str | None = Field(None, description="Docker Engine; default DOCKER_HOST / local socket")
    probes: ProbePolicy = ProbePolicy()
    traffic: TrafficPlan = TrafficPlan()
    logs: LogRules = LogRules()
    syntax: SyntaxSettings = SyntaxSettings()
    price: PriceTable = PriceTable()
    analysis: AnalysisSettings | None = Field(
        None, description="canary vs baseline under load during the bake, judged with statistics (off when absent)")
    repo_root: Path = Path(".")  # the repository the syntax gate reads and the commit is taken from (relative to this file)
    report_dir: Path = Path("reports")  # where the JSON reports are written (relative to this file)
    deploy_timeout_s: float = Field(300.0, gt=0)  # longest wait for a deploy, traffic change or rollback to be applied
    extra_tags: tuple[str, ...] = ()  # image tags pushed besides the git SHA, e.g. ["staging"]
    git_sha: str | None = Field(None, description="commit to validate; default: HEAD of repo_root")
    dry_run: bool = Field(False, description="validate config, syntax and build; deploy nothing")
    slot_wait_s: float = Field(1800.0, gt=0, description="max wait for the service's concurrency slot "
                                                         "(another validation of the same service running)")
    api_retries: ApiRetries = ApiRetries()
    gcp_credentials_block: str | None = Field(
        None, description="a prefect-gcp GcpCredentials block whose credentials call Cloud Run, Cloud Logging and "
        "the registry (pip install 'stagecheck[gcp]'); default: endpoints.credentials_file, else ADC")
    result_storage: str | None = Field(
        None, description="Prefect result storage for the JSON reports and the records of pushed images: a storage "
        "block slug (local-file-system/NAME, gcs-bucket/NAME) or a folder; default: Prefect's default result storage")

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not PROJECT_ID_RE.match(v):
            raise ValueError(
                "project IDs are 6-30 characters: lowercase letters, digits, hyphens; start with a letter"
            )
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_RE.match(v):
            raise ValueError("region is like 'europe-west1'")
        return v

    @field_validator("git_sha")
    @classmethod
    def _git_sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{7,40}", v):
            raise ValueError(f"a commit SHA is 7 to 40 lowercase hex digits (got {v[:60]!r})")
        return v

    @field_validator("lb_url")
    @classmethod
    def _lb(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("lb_url needs an http:// or https:// scheme")
        return v.rstrip("/") if v else v

    @field_validator("lb_tag_url", "lb_tag_host")
    @classmethod
    def _tag_template(cls, v: str | None, info: Any) -> str | None:
        if v is None:
            return v
        fields = set(re.findall(r"\{([^{}]*)\}", v))
        if fields - {"tag", "service"}:
            raise ValueError(f"only {{tag}} and {{service}} may be used, not {sorted(fields - {'tag', 'service'})}")
        if info.field_name == "lb_tag_url" and not re.match(r"^https?://", v):
            raise ValueError("lb_tag_url needs an http:// or https:// scheme")
        return v.rstrip("/")

    def lb_tag_target(self, tag: str, service: str) -> tuple[str, dict[str, str]] | None:
        """(URL, headers) at which the load balancer serves `tag` of `service`, when configured."""
        if self.lb_tag_url is None:
            return None
        url = self.lb_tag_url.format(tag=tag, service=service)
        headers = {"Host": self.lb_tag_host.format(tag=tag, service=service)} if self.lb_tag_host else {}
        return url, headers

    @model_validator(mode="after")
    def _unique_services(self) -> Settings:
        if not self.services:
            raise ValueError("at least one [[services]] entry is needed")
        names = [s.name for s in self.services]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate service names: {names}")
        return self

    @model_validator(mode="after")
    def _bounded_waits(self) -> Settings:
        """Every wait has a bound: an infinite or absurd timeout is refused before anything moves."""
        waits: list[tuple[str, float, float]] = [
            ("deploy_timeout_s", self.deploy_timeout_s, MAX_WAIT_S),
            ("slot_wait_s", self.slot_wait_s, MAX_SLOT_WAIT_S),
            ("probes.deadline_s", self.probes.deadline_s, MAX_WAIT_S),
            ("probes.request_timeout_s", self.probes.request_timeout_s, MAX_WAIT_S),
            ("probes.max_backoff_s", self.probes.max_backoff_s, MAX_WAIT_S),
            ("probes.initial_backoff_s", self.probes.initial_backoff_s, MAX_WAIT_S),
            ("probes.success_interval_s", self.probes.success_interval_s, MAX_WAIT_S),
            ("traffic.hold_s", self.traffic.hold_s, MAX_WAIT_S),
            ("traffic.bake_s", self.traffic.bake_s, MAX_WAIT_S),
            ("logs.settle_s", self.logs.settle_s, MAX_WAIT_S),
        ]
        for i, svc in enumerate(self.services):
            if svc.traffic is not None:
                waits.append((f"services.{i}.traffic.hold_s", svc.traffic.hold_s, MAX_WAIT_S))
            waits += [(f"services.{i}.smoke.{j}.timeout_s", smoke.timeout_s, MAX_WAIT_S)
                      for j, smoke in enumerate(svc.smoke)]
        for where, value, limit in waits:
            if not value <= limit:  # also catches inf and nan
                raise ValueError(f"{where}: at most {limit:g} seconds (got {value})")
        return self

    def service(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise ConfigError(f"no service {name!r} in the config (known: {', '.join(s.name for s in self.services)})")

    def traffic_for(self, svc: ServiceConfig) -> TrafficPlan:
        return svc.traffic or self.traffic


def check_sources(settings: Settings, services: Iterable[ServiceConfig] | None = None) -> None:
    """The build inputs exist: each service's source_dir is a directory holding its Dockerfile.

    A separate check (not a model validator): the model describes a target, this checks the checkout
    the run builds from. Raises ConfigError naming every missing input."""
    problems = []
    chosen = list(settings.services if services is None else services)
    for svc in chosen:
        index = settings.services.index(svc)
        where = f"services.{index}"
        if not svc.source_dir.is_dir():
            what = "is not a directory" if svc.source_dir.exists() else "does not exist"
            problems.append(f"  {where}.source_dir: the build context {svc.source_dir.resolve()} {what}")
        elif not (svc.source_dir / svc.dockerfile).is_file():
            problems.append(f"  {where}.dockerfile: {svc.dockerfile!r} not found in {svc.source_dir.resolve()}")
        ignore = svc.contract.ignore_file
        if ignore is not None and not ignore.is_file():
            problems.append(f"  {where}.contract.ignore_file: {ignore} is not a file")
    if problems:
        raise ConfigError("invalid configuration (build inputs):\n" + "\n".join(problems))
