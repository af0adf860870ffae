"""One settings model for a validation target.

Sources, lowest to highest precedence: built-in defaults < the TOML file (`stagecheck.toml`) <
environment (`STAGECHECK_*`, nested with `__`, e.g. `STAGECHECK_PROBES__DEADLINE_S=90`) < explicit
overrides (flow parameters / CLI flags). `--sandbox` fills the endpoints from the sandbox's
`sandbox.json`; with no endpoints set the real Google Cloud defaults and ADC are used.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stagecheck.analysis.config import AnalysisSettings
from stagecheck.contract.findings import FailOn
from stagecheck.retry_policy import ApiRetries

SERVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
PROJECT_ID_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]{1,2}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_REF_RE = re.compile(r"^(projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}:(latest|[0-9]+)$")
MEMORY_RE = re.compile(r"^[0-9]+(Mi|Gi)$")
BLOCK_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_-]*$")  # a Prefect block: type-slug/name
RESERVED_ENV = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
# stagecheck tags each candidate `sc-<sha7>`; Cloud Run: "Combined traffic tag and service name cannot
# exceed 46 characters." (gcloud/server message; policyengine-api#3729, firebase-tools#6137)
TRAFFIC_TAG_PREFIX = "sc-"
TRAFFIC_TAG_LENGTH = len(TRAFFIC_TAG_PREFIX) + 7
MAX_TAG_AND_SERVICE = 46
MAX_SERVICE_NAME = MAX_TAG_AND_SERVICE - TRAFFIC_TAG_LENGTH  # 36; revision names SERVICE-SHA7-xyz stay <= 63


def cpu_amount(cpu: str) -> float:
    """'1' / '0.5' / '500m' -> CPUs (ValueError otherwise)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m?)", cpu)
    if not m:
        raise ValueError("cpu is like '1', '2', '0.5' or '500m'")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def memory_mib(memory: str) -> int:
    return int(memory[:-2]) * (1024 if memory.endswith("Gi") else 1)


def memory_ceiling_mib(cpus: float) -> int:
    """The most memory Cloud Run allows for a CPU setting (docs: configuring/services/cpu, memory-limits)."""
    if cpus < 0.5:
        return 512
    if cpus < 1:
        return 1024
    return {1.0: 4, 2.0: 8, 4.0: 16, 6.0: 24, 8.0: 32}.get(cpus, 32) * 1024
MAX_MEMORY_MIB = 32 * 1024  # Cloud Run's maximum memory per instance
CPU_RE = re.compile(r"^(?:[0-9]+(?:\.[0-9]{1,3})?|[0-9]+m)$")
MAX_WAIT_S = 3600.0  # no single wait of a validation (deploy, probe deadline, settle, hold, smoke) beyond an hour
MAX_SLOT_WAIT_S = 86400.0
MAX_CONFIG_BYTES = 1024 * 1024
# What stagecheck itself puts in the environment of smoke commands (and its own runtime knobs): never config.
NOT_CONFIG_ENV = {"STAGECHECK_STATE_DIR", "STAGECHECK_CONFIG", "STAGECHECK_WEBHOOK_URL", "STAGECHECK_CACHE_DIR",
                  "STAGECHECK_REGISTRY_USERNAME", "STAGECHECK_REGISTRY_PASSWORD", "STAGECHECK_BASE_URL",
                  "STAGECHECK_TAG_URL", "STAGECHECK_LB_URL", "STAGECHECK_REVISION", "STAGECHECK_SERVICE"}


def cpu_is_valid(value: str) -> bool:
    """Cloud Run CPU: 0.08-1 in fractions (or 80m-1000m), above 1 only 2, 4, 6 or 8."""
    if not CPU_RE.match(value):
        return False
    cpus = cpu_amount(value)
    return 0.08 <= cpus <= 1 or cpus in {2.0, 4.0, 6.0, 8.0}


class ConfigError(Exception):
    """The configuration is unusable; the message says what and where."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeMode(StrEnum):
    REQUIRED = "required"  # gates the verdict
    ADVISORY = "advisory"  # reported, never gating (e.g. a direct URL closed by ingress settings)
    OFF = "off"


class UrlKind(StrEnum):
    TAGGED = "tagged"  # the new revision's tag URL, before it gets traffic
    SERVICE = "service"  # the service's direct run.app URL
    LB = "lb"  # the load balancer in front of the service


class AfterPass(StrEnum):
    LATEST = "latest"  # LATEST=100 after a passed release: the next `gcloud run deploy` serves its revision
    PINNED = "pinned"  # the validated revision stays pinned at 100 % (a later deploy gets 0 % until shifted)


class DegradedPolicy(StrEnum):
    WARN = "warn"
    FAIL = "fail"


class UrlCheck(Strict):
    path: str = "/health"
    mode: ProbeMode = ProbeMode.REQUIRED

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class HealthChecks(Strict):
    tagged: UrlCheck = UrlCheck()
    service: UrlCheck = UrlCheck()
    lb: UrlCheck = UrlCheck(path="/api/health")
    websocket_path: str | None = None

    def for_kind(self, kind: UrlKind) -> UrlCheck:
        return {UrlKind.TAGGED: self.tagged, UrlKind.SERVICE: self.service, UrlKind.LB: self.lb}[kind]


class ContractSettings(Strict):
    """`[services.contract]`: the breaking-changes audit of the service's OpenAPI document (stage `contract`)."""

    openapi_path: str = Field("/openapi.json", description="where the service serves its OpenAPI 3.0/3.1 document")
    fail_on: FailOn = Field(FailOn.ERR, description='"ERR", "WARN" or "never" (report only)')
    ignore_file: Path | None = Field(None, description="accepted changes, in oasdiff's ignore format (relative to "
                                                        "the config)")

    @field_validator("openapi_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class ProbeAuth(StrEnum):
    ID_TOKEN = "id_token"  # a Google ID token of the run's identity (private services: the Cloud Run default)
    NONE = "none"  # no credentials: only for a public service (allUsers invoker or invoker IAM check disabled)


AUTH_STATUSES = (401, 403)  # an invoker/token problem, never a cold start


class ProbePolicy(Strict):
    deadline_s: float = Field(60.0, gt=0, description="give up on a URL after this long")
    consecutive_successes: int = Field(3, ge=1, description="K healthy answers in a row pass the probe")
    request_timeout_s: float = Field(5.0, gt=0)
    retry_statuses: tuple[int, ...] = Field((503, 429), description="cold-start answers that are retried")
    initial_backoff_s: float = Field(0.2, ge=0)
    max_backoff_s: float = Field(3.0, gt=0)
    jitter: float = Field(0.3, ge=0, le=1, description="fraction of the backoff randomised")
    success_interval_s: float = Field(0.2, ge=0, description="pause between consecutive successful probes")
    degraded: DegradedPolicy = DegradedPolicy.WARN
    auth: ProbeAuth = Field(ProbeAuth.ID_TOKEN, description="id_token: send an ID token (audience = service URL); "
                                                            "none: no credentials (public services only)")
    lb_audience: str | None = Field(None, description="ID-token audience for load-balancer probes (one of the "
                                                      "service's custom_audiences); default: the service URL")
    id_token_account: str | None = Field(
        None, pattern=r"^[a-z][-a-z0-9]*@[-a-z0-9.]+\.iam\.gserviceaccount\.com$",
        description="service account whose ID tokens the probes send when the run's identity cannot mint one "
                    "(Workload Identity Federation, a person's credentials): minted through IAM Credentials "
                    "generateIdToken; the run's identity needs roles/iam.serviceAccountTokenCreator on it")

    @field_validator("retry_statuses")
    @classmethod
    def _not_auth(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        auth = sorted(set(v) & set(AUTH_STATUSES))
        if auth:
            raise ValueError(f"{auth} are invoker/token answers, not cold starts: they are never retried")
        return v
    headers: dict[str, str] = Field(default_factory=dict, repr=False,
                                    description="extra headers sent with every probe (e.g. an API key); "
                                                "their values are treated as secrets: never shown, always redacted")


class TrafficPlan(Strict):
    steps: tuple[int, ...] = Field((100,), description="percent to the new revision per step; last is 100")
    hold_s: float = Field(0.0, ge=0, description="wait (and watch) this long after each canary step")
    after_pass: AfterPass = Field(AfterPass.LATEST, description="traffic after a passed release: latest | pinned")
    keep_tags: int = Field(3, ge=1, description="stagecheck's own sc-* tags kept (newest); older ones are removed")
    bake_s: float = Field(60.0, ge=0, description="watch the release this long after the last step (0: no bake)")
    bake_interval_s: float = Field(2.0, gt=0, description="pause between bake probes of the serving URLs")

    @field_validator("steps")
    @classmethod
    def _valid_steps(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("needs at least one step")
        if any(not 0 < s <= 100 for s in v):
            raise ValueError("each step is a percent in 1..100")
        if list(v) != sorted(set(v)):
            raise ValueError("steps must strictly increase")
        if v[-1] != 100:
            raise ValueError("the last step must be 100")
        return v


class LogRules(Strict):
    settle_s: float = Field(20.0, ge=0, description="max wait for log ingestion to reach the last probe")
    severity_threshold: str = Field("ERROR", description="entries at or above this severity are gated")
    max_new_signatures: int = Field(0, ge=0, description="new signatures at/above threshold tolerated")
    tolerated_signatures: tuple[str, ...] = Field((), description="known signatures (substring or regex)")
    max_5xx_rate: float = Field(0.0, ge=0, le=1, description="share of 5xx request logs tolerated (after cold start)")
    max_entries: int = Field(5000, ge=1)
    reads_per_minute: float = Field(
        30.0, gt=0, le=60,
        description="entries.list budget per project for the whole run (Cloud Logging allows 60/min/project)")
    read_retries: int = Field(5, ge=0, description="retries of a read answered 429 or 503 (with backoff)")
    severity_fields: tuple[str, ...] = Field(
        (), description="jsonPayload fields read as the severity of entries Cloud Logging left at DEFAULT "
                        "(e.g. [\"level\"] for pino/winston); opt-in: Cloud Run reads only `severity`")

    @field_validator("severity_fields")
    @classmethod
    def _field_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for index, name in enumerate(v):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}", name):
                raise ValueError(f"[{index}] {name!r} is not a JSON field name (letters, digits, _ . -)")
            if name in ("severity", "message"):
                raise ValueError(f"[{index}] {name!r}: Cloud Logging already reads it")
        return v

    @field_validator("severity_threshold")
    @classmethod
    def _severity(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}:
            raise ValueError(f"unknown severity {v!r}")
        return v

    @field_validator("tolerated_signatures")
    @classmethod
    def _regexes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # the same rule as log_analysis.compile_tolerated: '/.../' is a regex, checked here, before anything moves
        for index, pattern in enumerate(v):
            if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise ValueError(f"[{index}] {pattern!r} is not a valid regular expression: {exc}") from None
        return v


class SmokeCommand(Strict):
    name: str
    command: str
    timeout_s: float = Field(60.0, gt=0)


class PriceTable(Strict):
    """Cloud Run list prices (USD, tier 1, request-based billing); override for your region/contract."""

    vcpu_second: float = 0.000024
    gib_second: float = 0.0000025
    per_million_requests: float = 0.40
    idle_vcpu_second: float = 0.0000025  # min-instances idle rate
    idle_gib_second: float = 0.0000025
    assumed_requests_per_month: int = 1_000_000
    assumed_request_s: float = 0.2


class ServiceConfig(Strict):
    name: str = Field(description="Cloud Run service name")
    source_dir: Path = Path(".")
    dockerfile: str = "Dockerfile"
    image_name: str | None = Field(None, description="repository name in the registry (default: service name)")
    port: int = Field(8080, ge=1, le=65535)
    memory: str = "512Mi"
    cpu: str = "1"
    cpu_idle: bool | None = Field(
        None, description="true: CPU only during requests; false: CPU always allocated; unset: keep the "
                          "service's setting (true for a new service)")
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(3, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, description="ENV_NAME -> secret:version")
    health: HealthChecks = HealthChecks()
    contract: ContractSettings = ContractSettings()
    lb_path_prefix: str | None = Field(None, description="path prefix of this service on the LB (default /<name>)")
    smoke: tuple[SmokeCommand, ...] = ()
    traffic: TrafficPlan | None = None
    build_args: dict[str, str] = Field(default_factory=dict)

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


class SyntaxSettings(Strict):
    enabled: bool = True
    target_version: str | None = Field(None, description="X.Y; default: the running interpreter's")
    exclude: tuple[str, ...] = ()

    @field_validator("target_version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"3\.[0-9]{1,2}", v):
            raise ValueError("target_version is like '3.11'")
        return v

    def version_tuple(self) -> tuple[int, int] | None:
        if self.target_version is None:
            return None
        major, minor = self.target_version.split(".")
        return int(major), int(minor)


class Endpoints(Strict):
    """Where the APIs are. All None: real Google Cloud with Application Default Credentials."""

    run_api: str | None = None
    logging_api: str | None = None
    iam_credentials_api: str = Field("https://iamcredentials.googleapis.com",
                                     description="IAM Credentials API (generateIdToken for probes.id_token_account)")
    credentials_file: str | None = Field(
        None, description="credentials file for the API calls and ID tokens: a service-account key (the sandbox "
                          "writes one) or any Application Default Credentials file (external_account, "
                          "authorized_user, impersonated_service_account); unset: Application Default Credentials")
    console_base: str = "https://console.cloud.google.com"

    @field_validator("credentials_file")
    @classmethod
    def _key_file(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"credentials file not found: {v}")
        return v

    @field_validator("run_api", "logging_api", "iam_credentials_api")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("endpoint needs an http:// or https:// scheme")
        return v.rstrip("/") if v else v


class Settings(BaseModel):
    """A validation target: where to deploy, what to deploy, and how to judge it.

    Build it with `load_settings`, which merges the sources in their order of precedence
    (file < `STAGECHECK_*` env < sandbox endpoints < overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    region: str
    registry: str = Field(description="image registry, e.g. REGION-docker.pkg.dev/PROJECT/REPO")
    registry_login: Literal["auto", "google"] = Field(
        "auto", description="auto: `oauth2accesstoken` + an access token of the API calls' identity for Artifact "
        "Registry and gcr.io hosts only; google: for this registry whatever its name (e.g. behind a proxy)")
    services: tuple[ServiceConfig, ...]
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
    repo_root: Path = Path(".")
    report_dir: Path = Path("reports")
    deploy_timeout_s: float = Field(300.0, gt=0)
    extra_tags: tuple[str, ...] = ()
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


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str], prefix: str = "STAGECHECK_") -> dict[str, Any]:
    """`STAGECHECK_PROBES__DEADLINE_S=90` -> {"probes": {"deadline_s": "90"}} (pydantic coerces).

    Only the documented keys are read: a variable whose first part names a Settings field. The
    variables stagecheck itself exports to smoke commands (STAGECHECK_BASE_URL, ..._LB_URL, ...) and
    its runtime knobs (STAGECHECK_STATE_DIR, ...) are never configuration, nor is anything else."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(prefix) or key in NOT_CONFIG_ENV:
            continue
        path = key[len(prefix) :].lower().split("__")
        if path[0] not in Settings.model_fields:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if value.startswith(("[", "{")):
            try:
                node[path[-1]] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        node[path[-1]] = value
    return out


def sandbox_overrides(sandbox_json: Path) -> dict[str, Any]:
    """Endpoints, project, region, registry and LB of a running sandbox (`stagecheck sandbox up`)."""
    try:
        info = json.loads(sandbox_json.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no sandbox running: {sandbox_json} not found (run `make up`)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{sandbox_json} is not valid JSON: {exc}") from None
    try:
        return {
            "project": info["project"],
            "region": info["region"],
            "registry": info["registry"],
            "lb_url": info["lb_url"],
            "docker_host": info.get("docker_host"),
            "endpoints": {"run_api": info["run_api"], "logging_api": info["logging_api"],
                          "iam_credentials_api": info["run_api"], "credentials_file": info["credentials_file"]},
        }
    except KeyError as exc:
        hint = " (a sandbox from an older version: restart it with `make down && make up`)" \
            if exc.args[0] == "credentials_file" else ""
        raise ConfigError(f"{sandbox_json} lacks {exc.args[0]!r}{hint}") from None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {describe_error(err)}" if loc else f"  {describe_error(err)}")
    missing = {str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]}
    if missing & {"project", "region", "registry"}:
        lines.append("  hint: set project/region/registry in the config, or use --sandbox for the local sandbox")
    return "\n".join(lines)


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as a short rule: no error-type prefix, no documentation URL."""
    kind = str(err.get("type", ""))
    if kind == "extra_forbidden":
        return "unknown key (not a stagecheck setting)"
    if kind == "missing":
        return "required, not set"
    message = str(err.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.endswith("_parsing") or kind.endswith("_type"):
        got = repr(err.get("input"))
        message = f"{message} (got {got if len(got) <= 60 else got[:57] + '...'})"
    return message


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; ConfigError naming the file (and the line) when it is missing or malformed."""
    try:
        if path.exists() and not path.is_dir() and not path.is_file():  # a FIFO or a device would block or never end
            raise ConfigError(f"{what} {path} is not a regular file")
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a stagecheck config")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a UTF-8 text file (binary?)") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if "\x00" in text:
        raise ConfigError(f"{what} {path} is not a text file (it contains NUL bytes)")
    if not text.strip():
        raise ConfigError(f"{what} {path} is empty")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_settings(
    config: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    sandbox_json: Path | None = None,
) -> Settings:
    """Build the Settings: TOML file < env < sandbox endpoints < explicit overrides.

    Relative paths in the file (repo_root, source_dir, report_dir) are resolved against the file's folder.
    Raises ConfigError with a readable message for every problem.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if config is not None:
        source = str(config)
        data = _resolve_paths(read_toml(config, "config file"), config.resolve().parent)
    if environ is not None:
        data = deep_merge(data, env_overrides(environ))
    if sandbox_json is not None:
        data = deep_merge(data, sandbox_overrides(sandbox_json))
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(data)
    for key in ("repo_root", "report_dir"):
        if key in out:
            out[key] = str((base / out[key]).resolve())
    storage = out.get("result_storage")
    if isinstance(storage, str) and not BLOCK_SLUG_RE.match(storage):
        out["result_storage"] = str((base / Path(storage).expanduser()).resolve())  # a folder, not a block slug
    out.setdefault("repo_root", str(base))
    out.setdefault("report_dir", str(base / "reports"))
    services = []
    for svc in out.get("services", []) or []:
        if isinstance(svc, dict) and "source_dir" in svc:
            svc = {**svc, "source_dir": str((base / svc["source_dir"]).resolve())}
        contract = svc.get("contract") if isinstance(svc, dict) else None
        if isinstance(contract, dict) and isinstance(contract.get("ignore_file"), str):
            svc = {**svc, "contract": {**contract, "ignore_file": str((base / contract["ignore_file"]).resolve())}}
        services.append(svc)
    if services:
        out["services"] = services
    return out
