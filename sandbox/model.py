"""Cloud Run resource state (services, revisions, operations), naming and validation.

Pure: no I/O, no clock or randomness of its own (callers pass `now` and a `random.Random`).
JSON in and out follows the proto3 JSON mapping of `google.cloud.run.v2` (camelCase fields,
enums as names on output and as names or integers on input, int64 as strings on output).
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random
from typing import Any, Literal

from sandbox.errors import ApiError

SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"
REVISION_TYPE = "type.googleapis.com/google.cloud.run.v2.Revision"

SERVICE_ID_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$")
REVISION_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
TAG_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,44}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})

# Fields of a Service that the server owns; whatever a client sends for them is ignored.
SERVICE_OUTPUT_ONLY = frozenset(
    {
        "name", "uid", "generation", "createTime", "updateTime", "deleteTime", "expireTime",
        "creator", "lastModifier", "observedGeneration", "terminalCondition", "conditions",
        "latestReadyRevision", "latestCreatedRevision", "trafficStatuses", "uri", "urls",
        "reconciling", "etag", "satisfiesPzs",
    }
)

LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
_TRAFFIC_TYPES = {0: None, 1: LATEST, 2: REVISION, LATEST: LATEST, REVISION: REVISION,
                  "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED": None}

ConditionState = Literal["CONDITION_PENDING", "CONDITION_RECONCILING", "CONDITION_SUCCEEDED", "CONDITION_FAILED"]
RevisionPhase = Literal["PENDING", "READY", "FAILED"]

DEFAULT_CONTAINER_PORT = 8080
DEFAULT_MEMORY = "512Mi"
DEFAULT_CPU = "1000m"


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- naming


def validate_service_id(service_id: str) -> None:
    if not service_id:
        raise ApiError(400, "serviceId is required.", field="service_id")
    if not SERVICE_ID_RE.match(service_id):
        raise ApiError(
            400,
            f"Invalid serviceId '{service_id}': must use only lowercase letters, digits and hyphens, "
            "begin with a letter, not end with a hyphen, and be at most 49 characters long.",
            field="service_id",
        )


def new_revision_name(service: str, generation: int, rng: Random) -> str:
    """Cloud Run style: SERVICE-00002-xyz (5-digit generation, 3 random lowercase letters)."""
    suffix = "".join(rng.choice(string.ascii_lowercase) for _ in range(3))
    return f"{service}-{generation:05d}-{suffix}"


def validate_revision_name(service: str, name: str, existing: set[str]) -> None:
    fld = "service.template.revision"
    if not name.startswith(f"{service}-") or not REVISION_NAME_RE.match(name):
        raise ApiError(
            400,
            f"Revision name '{name}' must be prefixed by the service name '{service}-' and use only "
            "lowercase letters, digits and hyphens (at most 63 characters).",
            field=fld,
        )
    if name in existing:
        raise ApiError(409, f"Revision named '{name}' already exists.", field=fld)


# ---------------------------------------------------------------- JSON helpers


def prune(value: Any) -> Any:
    """Drop proto3 default values (None, "", 0, False, [], {}) recursively, as the JSON mapping does."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", 0, False, [], {})}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def as_int(value: Any, fld: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid value for {fld}: {value!r} is not an integer.", field=fld) from None


def parse_memory(value: str, fld: str) -> int:
    """'512Mi' / '1Gi' / '256M' / '1G' / bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?\s*", str(value))
    if not m:
        raise ApiError(400, f"Invalid memory limit {value!r}: use a quantity such as '512Mi' or '1Gi'.", field=fld)
    unit = m.group(2) or ""
    factor = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    amount = int(float(m.group(1)) * factor)
    if amount < 6 * 2**20:
        raise ApiError(400, f"Invalid memory limit {value!r}: too small.", field=fld)
    return amount


def parse_cpu(value: str, fld: str) -> float:
    """'1000m' / '1' / '2' -> CPUs."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)(m?)\s*", str(value))
    if not m:
        raise ApiError(400, f"Invalid cpu limit {value!r}: use e.g. '1', '2' or '1000m'.", field=fld)
    cpus = float(m.group(1)) / (1000 if m.group(2) else 1)
    if cpus <= 0:
        raise ApiError(400, f"Invalid cpu limit {value!r}.", field=fld)
    return cpus


# ---------------------------------------------------------------- template


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    secret: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """What a revision's (single, ingress) container needs to run."""

    image: str
    env: tuple[EnvVar, ...]
    command: tuple[str, ...]
    args: tuple[str, ...]
    container_port: int
    memory_bytes: int
    cpus: float
    startup_probe: dict[str, Any]


def normalize_template(template: dict[str, Any]) -> dict[str, Any]:
    """Canonical RevisionTemplate: pruned, with Cloud Run's defaults filled in (idempotent)."""
    tpl = prune(template) or {}
    containers = tpl.get("containers") or []
    for i, container in enumerate(containers):
        fld = f"service.template.containers[{i}]"
        if not isinstance(container, dict) or not container.get("image"):
            raise ApiError(400, f"{fld}.image: a container image is required.", field=f"{fld}.image")
        container.setdefault("ports", [{"name": "http1", "containerPort": DEFAULT_CONTAINER_PORT}])
        for port in container["ports"]:
            port.setdefault("containerPort", DEFAULT_CONTAINER_PORT)
        limits = container.setdefault("resources", {}).setdefault("limits", {})
        limits.setdefault("memory", DEFAULT_MEMORY)
        limits.setdefault("cpu", DEFAULT_CPU)
    tpl.setdefault("timeout", "300s")
    tpl.setdefault("maxInstanceRequestConcurrency", 80)
    return tpl


def container_spec(template: dict[str, Any]) -> ContainerSpec:
    """Validate a normalized template and extract the container to run."""
    containers = template.get("containers") or []
    if not containers:
        raise ApiError(400, "service.template.containers: at least one container is required.",
                       field="service.template.containers")
    if len(containers) > 1:
        raise ApiError(501, "The sandbox runs one container per revision (sidecars are not supported).",
                       field="service.template.containers")
    c = containers[0]
    fld = "service.template.containers[0]"
    env: list[EnvVar] = []
    seen: set[str] = set()
    for j, var in enumerate(c.get("env") or []):
        efld = f"{fld}.env[{j}]"
        name = var.get("name", "")
        if not ENV_NAME_RE.match(name):
            raise ApiError(400, f"{efld}.name: invalid environment variable name {name!r}.", field=f"{efld}.name")
        if name in RESERVED_ENV:
            raise ApiError(400, f"The following reserved env names were provided: {name}. "
                           "These values are automatically set by the system.", field=f"{efld}.name")
        if name in seen:
            raise ApiError(400, f"{efld}.name: duplicate environment variable {name!r}.", field=f"{efld}.name")
        seen.add(name)
        ref = (var.get("valueSource") or {}).get("secretKeyRef")
        if ref:
            env.append(EnvVar(name, f"sandbox-secret:{ref.get('secret', '')}:{ref.get('version', 'latest')}", True))
        else:
            env.append(EnvVar(name, str(var.get("value", ""))))
    ports = c.get("ports") or [{}]
    container_port = as_int(ports[0].get("containerPort", DEFAULT_CONTAINER_PORT), f"{fld}.ports[0].containerPort")
    limits = (c.get("resources") or {}).get("limits") or {}
    return ContainerSpec(
        image=c["image"],
        env=tuple(env),
        command=tuple(c.get("command") or ()),
        args=tuple(c.get("args") or ()),
        container_port=container_port or DEFAULT_CONTAINER_PORT,
        memory_bytes=parse_memory(limits.get("memory", DEFAULT_MEMORY), f"{fld}.resources.limits.memory"),
        cpus=parse_cpu(limits.get("cpu", DEFAULT_CPU), f"{fld}.resources.limits.cpu"),
        startup_probe=c.get("startupProbe") or {},
    )


# ---------------------------------------------------------------- traffic


@dataclass(frozen=True)
class TrafficTarget:
    type: str  # LATEST | REVISION
    revision: str = ""
    percent: int = 0
    tag: str = ""

    def to_json(self) -> dict[str, Any]:
        return prune({"type": self.type, "revision": self.revision, "percent": self.percent, "tag": self.tag})


def parse_traffic(raw: list[dict[str, Any]] | None) -> list[TrafficTarget]:
    """Client JSON -> targets (enum as name or integer; missing type inferred). Empty -> LATEST 100."""
    if not raw:
        return [TrafficTarget(LATEST, percent=100)]
    targets: list[TrafficTarget] = []
    for i, item in enumerate(raw):
        fld = f"service.traffic[{i}]"
        kind = item.get("type", 0)
        if kind not in _TRAFFIC_TYPES:
            raise ApiError(400, f"{fld}.type: unknown traffic target type {kind!r}.", field=f"{fld}.type")
        resolved = _TRAFFIC_TYPES[kind] or (REVISION if item.get("revision") else LATEST)
        percent = as_int(item.get("percent"), f"{fld}.percent")
        targets.append(TrafficTarget(resolved, str(item.get("revision") or ""), percent, str(item.get("tag") or "")))
    return targets


def validate_traffic(targets: list[TrafficTarget], known_revisions: set[str], service: str) -> None:
    tags: set[str] = set()
    for i, t in enumerate(targets):
        fld = f"service.traffic[{i}]"
        if not 0 <= t.percent <= 100:
            raise ApiError(400, f"{fld}.percent: must be between 0 and 100, got {t.percent}.", field=f"{fld}.percent")
        if t.type == REVISION:
            if not t.revision:
                raise ApiError(400, f"{fld}.revision: a REVISION traffic target needs a revision name.",
                               field=f"{fld}.revision")
            if t.revision not in known_revisions:
                raise ApiError(400, f"{fld}.revision: Revision '{t.revision}' does not exist in service '{service}'.",
                               field=f"{fld}.revision")
        elif t.revision:
            raise ApiError(400, f"{fld}.revision: a LATEST traffic target must not name a revision.",
                           field=f"{fld}.revision")
        if t.tag:
            if not TAG_RE.match(t.tag):
                raise ApiError(400, f"{fld}.tag: invalid tag '{t.tag}' (lowercase letters, digits, hyphens; "
                               "begins with a letter).", field=f"{fld}.tag")
            if t.tag in tags:
                raise ApiError(400, f"{fld}.tag: duplicate tag '{t.tag}'.", field=f"{fld}.tag")
            tags.add(t.tag)
    total = sum(t.percent for t in targets)
    if total != 100:
        raise ApiError(400, f"service.traffic: traffic percentages must add up to 100, got {total}.",
                       field="service.traffic")


@dataclass(frozen=True)
class TrafficStatus:
    type: str
    revision: str
    percent: int
    tag: str = ""
    uri: str = ""

    def to_json(self) -> dict[str, Any]:
        return prune({"type": self.type, "revision": self.revision, "percent": self.percent,
                      "tag": self.tag, "uri": self.uri})


def resolve_traffic(targets: list[TrafficTarget], latest_ready: str | None) -> list[TrafficStatus]:
    """LATEST -> the latest ready revision (empty when none is ready yet)."""
    return [
        TrafficStatus(t.type, (latest_ready or "") if t.type == LATEST else t.revision, t.percent, t.tag)
        for t in targets
    ]


def revision_weights(statuses: list[TrafficStatus]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for s in statuses:
        if s.revision and s.percent > 0:
            weights[s.revision] = weights.get(s.revision, 0) + s.percent
    return weights


def pick_revision(statuses: list[TrafficStatus], draw: float) -> str | None:
    """Weighted choice by percent; `draw` is uniform in [0, 1)."""
    weights = revision_weights(statuses)
    total = sum(weights.values())
    if total == 0:
        return None
    point = draw * total
    for revision, weight in weights.items():
        if point < weight:
            return revision
        point -= weight
    return next(reversed(weights))


def serving_revisions(statuses: list[TrafficStatus]) -> set[str]:
    """Revisions that get a share of traffic or hold a tag."""
    return {s.revision for s in statuses if s.revision and (s.percent > 0 or s.tag)}


# ---------------------------------------------------------------- ingress

INGRESS_ALL = "INGRESS_TRAFFIC_ALL"
INGRESS_INTERNAL_ONLY = "INGRESS_TRAFFIC_INTERNAL_ONLY"
INGRESS_INTERNAL_LB = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
INGRESS_NONE = "INGRESS_TRAFFIC_NONE"
_INGRESS = {0: None, 1: INGRESS_ALL, 2: INGRESS_INTERNAL_ONLY, 3: INGRESS_INTERNAL_LB, 4: INGRESS_NONE,
            "INGRESS_TRAFFIC_UNSPECIFIED": None, INGRESS_ALL: INGRESS_ALL, INGRESS_INTERNAL_ONLY: INGRESS_INTERNAL_ONLY,
            INGRESS_INTERNAL_LB: INGRESS_INTERNAL_LB, INGRESS_NONE: INGRESS_NONE}


def parse_ingress(value: Any) -> str:
    """`ingress` as an enum name or integer -> its name (unset means INGRESS_TRAFFIC_ALL)."""
    if isinstance(value, bool) or value not in _INGRESS:
        raise ApiError(400, f"service.ingress: unknown ingress setting {value!r}.", field="service.ingress")
    return _INGRESS[value] or INGRESS_ALL


def ingress_admits(ingress: str | None, path: Literal["run.app", "lb"]) -> bool:
    """Whether a request from outside the VPC reaches the service: run.app URLs (service and tag URLs)
    are open only with INGRESS_TRAFFIC_ALL; an external load balancer also with INTERNAL_LOAD_BALANCER
    ("internal and Cloud Load Balancing"). The sandbox's clients are never inside the VPC."""
    setting = ingress or INGRESS_ALL
    if path == "lb":
        return setting in (INGRESS_ALL, INGRESS_INTERNAL_LB)
    return setting == INGRESS_ALL


# ---------------------------------------------------------------- resources


@dataclass
class Condition:
    type: str
    state: ConditionState
    message: str = ""
    reason: str = ""
    reason_field: str = "reason"  # reason | revisionReason
    last_transition: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return prune({
            "type": self.type,
            "state": self.state,
            "message": self.message,
            self.reason_field: self.reason,
            "lastTransitionTime": rfc3339(self.last_transition) if self.last_transition else "",
        })


@dataclass
class Revision:
    name: str
    service: str
    uid: str
    generation: int  # the service generation that created it
    template: dict[str, Any]
    create_time: datetime
    update_time: datetime
    phase: RevisionPhase = "PENDING"
    ready: Condition = field(default_factory=lambda: Condition("Ready", "CONDITION_RECONCILING"))


@dataclass
class Service:
    project: str
    location: str
    service_id: str
    uid: str
    spec: dict[str, Any]  # everything the client may set (template, traffic, labels, scaling, ...)
    create_time: datetime
    update_time: datetime
    generation: int = 1
    observed_generation: int = 0
    revision_counter: int = 0
    latest_created: str = ""
    latest_ready: str = ""
    traffic_statuses: list[TrafficStatus] = field(default_factory=list)
    terminal: Condition = field(default_factory=lambda: Condition("Ready", "CONDITION_RECONCILING"))
    reconciling: bool = True
    uri: str = ""
    tag_uris: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/services/{self.service_id}"

    @property
    def traffic(self) -> list[TrafficTarget]:
        return parse_traffic(self.spec.get("traffic"))

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(f"{self.uid}/{self.generation}".encode()).hexdigest()[:16] + '"'

    def min_instances(self) -> int:
        tpl_scaling = (self.spec.get("template") or {}).get("scaling") or {}
        svc_scaling = self.spec.get("scaling") or {}
        return max(as_int(tpl_scaling.get("minInstanceCount"), "scaling.minInstanceCount"),
                   as_int(svc_scaling.get("minInstanceCount"), "scaling.minInstanceCount"))


def service_spec_from_json(body: dict[str, Any]) -> dict[str, Any]:
    """The client-settable part of a Service body (output-only fields dropped, template normalized)."""
    spec = {k: v for k, v in prune(body).items() if k not in SERVICE_OUTPUT_ONLY}
    spec["template"] = normalize_template(spec.get("template") or {})
    return spec


def apply_update_mask(current: dict[str, Any], incoming: dict[str, Any], mask: str | None) -> dict[str, Any]:
    """Field-mask update on top-level Service fields ('template.containers' updates 'template')."""
    if not mask:
        return incoming
    merged = dict(current)
    for path in (p.strip() for p in mask.split(",") if p.strip()):
        top = _camel(path.split(".")[0])
        if top in SERVICE_OUTPUT_ONLY:
            continue
        if top in incoming:
            merged[top] = incoming[top]
        else:
            merged.pop(top, None)
    merged["template"] = normalize_template(merged.get("template") or {})
    return merged


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def template_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return normalize_template(old) != normalize_template(new)


def service_to_json(svc: Service) -> dict[str, Any]:
    out: dict[str, Any] = dict(svc.spec)
    statuses = [
        TrafficStatus(s.type, s.revision, s.percent, s.tag, svc.tag_uris.get(s.tag, "") if s.tag else "")
        for s in svc.traffic_statuses
    ]
    out.update({
        "name": svc.name,
        "uid": svc.uid,
        "generation": str(svc.generation),
        "createTime": rfc3339(svc.create_time),
        "updateTime": rfc3339(svc.update_time),
        "traffic": [t.to_json() for t in svc.traffic],
        "observedGeneration": str(svc.observed_generation),
        "terminalCondition": svc.terminal.to_json(),
        "conditions": [
            Condition("RoutesReady", svc.terminal.state, last_transition=svc.terminal.last_transition).to_json(),
            Condition("ConfigurationsReady", svc.terminal.state,
                      last_transition=svc.terminal.last_transition).to_json(),
        ],
        "latestReadyRevision": _revision_path(svc, svc.latest_ready),
        "latestCreatedRevision": _revision_path(svc, svc.latest_created),
        "trafficStatuses": [s.to_json() for s in statuses],
        "uri": svc.uri,
        "urls": [svc.uri] if svc.uri else [],
        "reconciling": svc.reconciling,
        "etag": svc.etag,
    })
    return prune(out)


def _revision_path(svc: Service, revision: str) -> str:
    return f"{svc.name}/revisions/{revision}" if revision else ""


def revision_to_json(svc: Service, rev: Revision, log_uri: str) -> dict[str, Any]:
    tpl = rev.template
    out = {
        "name": f"{svc.name}/revisions/{rev.name}",
        "uid": rev.uid,
        "generation": "1",
        "labels": tpl.get("labels") or {},
        "annotations": tpl.get("annotations") or {},
        "createTime": rfc3339(rev.create_time),
        "updateTime": rfc3339(rev.update_time),
        "launchStage": svc.spec.get("launchStage", ""),
        "service": svc.name,
        "scaling": tpl.get("scaling") or {},
        "containers": tpl.get("containers") or [],
        "timeout": tpl.get("timeout", ""),
        "maxInstanceRequestConcurrency": tpl.get("maxInstanceRequestConcurrency", 0),
        "serviceAccount": tpl.get("serviceAccount", ""),
        "executionEnvironment": tpl.get("executionEnvironment", 0),
        "reconciling": rev.phase == "PENDING",
        "conditions": [rev.ready.to_json()],
        "observedGeneration": "1",
        "logUri": log_uri,
        "etag": '"' + hashlib.sha1(rev.uid.encode()).hexdigest()[:16] + '"',
    }
    return prune(out)


# ---------------------------------------------------------------- operations


@dataclass
class Operation:
    name: str
    done: bool = False
    response: dict[str, Any] | None = None
    error: ApiError | None = None
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "done": self.done}
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.done and self.error is not None:
            out["error"] = {"code": self.error.grpc_code, "message": self.error.message}
        elif self.done and self.response is not None:
            out["response"] = self.response
        return out


def with_type(type_url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"@type": type_url, **body}


# ---------------------------------------------------------------- Cloud Run's words


def startup_timeout_message(container_port: int) -> str:
    return (
        "The user-provided container failed to start and listen on the port defined provided by the "
        f"PORT={container_port} environment variable within the allocated timeout. This can happen when the "
        "container port is misconfigured or if the timeout is too short. The health check timeout can be "
        "extended. Logs for this revision might contain more information."
    )


def container_exit_message(exit_code: int) -> str:
    return f"Container called exit({exit_code})."


def startup_probe_message() -> str:
    return ("The user-provided container failed the configured startup probe checks. "
            "Logs for this revision might contain more information.")


def image_missing_message(image: str, detail: str) -> str:
    return f"Image '{image}' not found. {detail}".strip()


def revision_not_ready_message(revision: str, detail: str) -> str:
    return f"Revision '{revision}' is not ready and cannot serve traffic. {detail}"
