"""The `[[services]]` entries: one Cloud Run service each, its build, runtime and smoke commands."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from stagecheck.settings.contract import ContractSettings
from stagecheck.settings.probes import HealthChecks
from stagecheck.settings.rules import (
    CPU_RE,
    ENV_NAME_RE,
    MAX_MEMORY_MIB,
    MAX_SERVICE_NAME,
    MAX_TAG_AND_SERVICE,
    MEMORY_RE,
    RESERVED_ENV,
    SECRET_REF_RE,
    SERVICE_NAME_RE,
    TRAFFIC_TAG_LENGTH,
    TRAFFIC_TAG_PREFIX,
    Strict,
    cpu_amount,
    memory_ceiling_mib,
    memory_mib,
)
from stagecheck.settings.traffic import TrafficPlan


class SmokeCommand(Strict):
    """One smoke command run against the released revision."""

    name: str  # the command's name in the report
    command: str  # shell command run from repo_root, with STAGECHECK_BASE_URL and the others in its env
    timeout_s: float = Field(60.0, gt=0)  # the command fails after this long


class ServiceConfig(Strict):
    """One Cloud Run service: what is built, how it runs, how it is probed."""

    name: str = Field(description="Cloud Run service name")
    source_dir: Path = Path(".")
    dockerfile: str = "Dockerfile"  # Dockerfile name, relative to source_dir
    image_name: str | None = Field(None, description="repository name in the registry (default: service name)")
    port: int = Field(8080, ge=1, le=65535)  # the container port Cloud Run sends requests to
    memory: str = "512Mi"
    cpu: str = "1"
    cpu_idle: bool | None = Field(
        None, description="true: CPU only during requests; false: CPU always allocated; unset: keep the "
                          "service's setting (true for a new service)")
    min_instances: int = Field(0, ge=0)  # Cloud Run min instances, applied when set here (else the service's are kept)
    max_instances: int = Field(3, ge=1)  # Cloud Run max instances, applied when set here (else the service's are kept)
    env: dict[str, str] = Field(default_factory=dict)  # plain environment variables of the revision (credential-like names are redacted in output)
    secrets: dict[str, str] = Field(default_factory=dict, description="ENV_NAME -> secret:version")
    health: HealthChecks = HealthChecks()  # path and mode per URL kind: tagged, service, lb
    contract: ContractSettings = ContractSettings()
    lb_path_prefix: str | None = Field(None, description="path prefix of this service on the LB (default /<name>)")
    smoke: tuple[SmokeCommand, ...] = ()  # commands run against the released revision, each must exit 0
    traffic: TrafficPlan | None = None  # this service's own [traffic] plan; unset: the top-level one
    build_args: dict[str, str] = Field(default_factory=dict)  # docker build --build-arg values (part of the build key: a change rebuilds)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SERVICE_NAME_RE.match(v):
            raise ValueError(
                "Cloud Run service names use lowercase letters, digits and hyphens, start with a letter, "
                "end with a letter or digit and are at most 49 characters"
            )
        if len(v) > MAX_SERVICE_NAME:
            raise ValueError(
                f"{len(v)} characters is too long for stagecheck's traffic tag "
                f"'{TRAFFIC_TAG_PREFIX}<sha7>' ({TRAFFIC_TAG_LENGTH} characters): Combined traffic tag and service "
                f"name cannot exceed {MAX_TAG_AND_SERVICE} characters, so service names are at most "
                f"{MAX_SERVICE_NAME} characters"
            )
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not MEMORY_RE.match(v):
            raise ValueError("memory is like '512Mi' or '2Gi'")
        return v

    @field_validator("memory")
    @classmethod
    def _memory_cap(cls, v: str) -> str:
        mib = int(v[:-2]) * (1024 if v.endswith("Gi") else 1)
        if not 0 < mib <= MAX_MEMORY_MIB:
            raise ValueError(f"memory is more than 0 and at most 32Gi on Cloud Run (got {v!r})")
        return v

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if not CPU_RE.match(v):
            raise ValueError(f"cpu is 0.08 to 1 in fractions (or 80m-1000m), or 2, 4, 6 or 8 (got {v!r})")
        cpus = cpu_amount(v)
        if not 0.08 <= cpus <= 8:
            raise ValueError(f"Cloud Run CPU is between 0.08 and 8 (got {v!r})")
        if cpus > 1 and cpus not in (2, 4, 6, 8):
            raise ValueError(f"CPU above 1 must be a whole number: 1, 2, 4, 6 or 8 (got {v!r})")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if key in RESERVED_ENV:
                raise ValueError(f"{key} is reserved by Cloud Run")
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key, ref in v.items():
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if not SECRET_REF_RE.match(ref):
                raise ValueError(f"secret reference for {key} must be 'name:version' (version a number or latest)")
        return v

    @model_validator(mode="after")
    def _scaling(self) -> ServiceConfig:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances exceeds max_instances")
        cpus = cpu_amount(self.cpu)
        if cpus < 1 and self.cpu_idle is False:
            raise ValueError("cpu below 1 requires CPU only during requests: set cpu_idle = true")
        if {"cpu", "memory"} <= self.model_fields_set and memory_mib(self.memory) > memory_ceiling_mib(cpus):
            raise ValueError(f"memory {self.memory} is more than {self.cpu} CPU allows "
                             f"({memory_ceiling_mib(cpus)} MiB; > 512 MiB needs 0.5 CPU, > 1 GiB 1, > 4 GiB 2, "
                             "> 8 GiB 4, > 16 GiB 6, > 24 GiB 8)")
        if set(self.env) & set(self.secrets):
            raise ValueError(f"variables both plain and secret: {sorted(set(self.env) & set(self.secrets))}")
        return self

    @property
    def repository(self) -> str:
        return self.image_name or self.name

    @property
    def lb_prefix(self) -> str:
        return (self.lb_path_prefix or f"/{self.name}").rstrip("/")
