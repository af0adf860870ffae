"""Cloud Run resource state (services, revisions, operations), naming and validation.

Pure: no I/O, no clock or randomness of its own (callers pass `now` and a `random.Random`).
JSON in and out follows the proto3 JSON mapping of `google.cloud.run.v2` (camelCase fields,
enums as names on output and as names or integers on input, int64 as strings on output).
"""

from __future__ import annotations

import copy
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

# "Combined traffic tag and service name cannot exceed 46 characters." (gcloud / server, facts §2 Tags)
MAX_TAG_AND_SERVICE = 46
MAX_REVISION_NAME = 63
# labels/annotations in these namespaces are rejected by Cloud Run API v2 (RevisionTemplate/Service proto comments)
RESERVED_NAMESPACES = ("run.googleapis.com", "cloud.googleapis.com", "serving.knative.dev", "autoscaling.knative.dev")
# CPU -> the most memory it allows (facts §3, docs configuring/services/cpu + memory-limits)
_MEMORY_CEILING = {2.0: 8 * 2**30, 4.0: 16 * 2**30, 6.0: 24 * 2**30, 8.0: 32 * 2**30}
_MEMORY_FLOOR = {4.0: 2 * 2**30, 6.0: 4 * 2**30, 8.0: 4 * 2**30}
WHOLE_CPUS = (1, 2, 4, 6, 8)
MAX_CONCURRENCY = 1000
MAX_TIMEOUT_S = 3600
# enums the client sends as integers (`enum-encoding=int`); stored and returned as names so that a
# template re-sent by another client compares equal
_ENUMS: dict[str, dict[Any, str]] = {
    "executionEnvironment": {0: "", 1: "EXECUTION_ENVIRONMENT_GEN1", 2: "EXECUTION_ENVIRONMENT_GEN2"},
    "egress": {0: "", 1: "ALL_TRAFFIC", 2: "PRIVATE_RANGES_ONLY"},
    "encryptionKeyRevocationAction": {0: "", 1: "PREVENT_NEW", 2: "SHUTDOWN"},
}


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


def validate_revision_name(service: str, name: str) -> None:
    fld = "service.template.revision"
    if not name.startswith(f"{service}-") or not REVISION_NAME_RE.match(name):
        raise ApiError(
            400,
            f"Revision name '{name}' must be prefixed by the service name '{service}-' and use only "
            f"lowercase letters, digits and hyphens (at most {MAX_REVISION_NAME} characters).",
            field=fld,
        )


def revision_conflict(name: str) -> ApiError:
    """Re-sending an existing revision name with a different template (google-cloud-python#14259,
    firebase-tools#10151): 409 with Cloud Run's words."""
    return ApiError(409, f"Revision named '{name}' with different configuration already exists.",
                    field="service.template.revision")


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
    liveness_probe: dict[str, Any] = field(default_factory=dict)


def _enum_name(value: Any, table: dict[Any, str], fld: str) -> str:
    if value in table:
        return table[value]
    if isinstance(value, str) and value in table.values():
        return value
    raise ApiError(400, f"{fld}: unknown value {value!r}.", field=fld)


def ingress_container(containers: list[dict[str, Any]]) -> int:
    """Index of the container that receives requests: the one with a port (else the first)."""
    return next((i for i, c in enumerate(containers) if isinstance(c, dict) and c.get("ports")), 0)


def normalize_template(template: dict[str, Any]) -> dict[str, Any]:
    """Canonical RevisionTemplate: pruned, enums as names, Cloud Run's defaults filled in (idempotent).

    A container without `resources` gets the default limits and CPU only during requests (cpuIdle
    true, "true by default"); a container whose `resources` were sent keeps cpuIdle as sent — absent
    means false, i.e. CPU always allocated (ResourceRequirements.cpu_idle proto comment)."""
    tpl = prune(template) or {}
    if "executionEnvironment" in tpl:
        tpl["executionEnvironment"] = _enum_name(tpl["executionEnvironment"], _ENUMS["executionEnvironment"],
                                                 "service.template.execution_environment")
    if "encryptionKeyRevocationAction" in tpl:
        tpl["encryptionKeyRevocationAction"] = _enum_name(
            tpl["encryptionKeyRevocationAction"], _ENUMS["encryptionKeyRevocationAction"],
            "service.template.encryption_key_revocation_action")
    vpc = tpl.get("vpcAccess")
    if isinstance(vpc, dict) and "egress" in vpc:
        vpc["egress"] = _enum_name(vpc["egress"], _ENUMS["egress"], "service.template.vpc_access.egress")
    tpl = prune(tpl)
    containers = tpl.get("containers") or []
    for i, container in enumerate(containers):
        fld = f"service.template.containers[{i}]"
        if not isinstance(container, dict) or not container.get("image"):
            raise ApiError(400, f"{fld}.image: a container image is required.", field=f"{fld}.image")
        if len(containers) == 1:  # a multi-container template names its ingress container's port itself
            container.setdefault("ports", [{"name": "http1", "containerPort": DEFAULT_CONTAINER_PORT}])
        for port in container.get("ports", []):
            port.setdefault("containerPort", DEFAULT_CONTAINER_PORT)
        if "resources" not in container:
            container["resources"] = {"cpuIdle": True}
        limits = container["resources"].setdefault("limits", {})
        limits.setdefault("memory", DEFAULT_MEMORY)
        limits.setdefault("cpu", DEFAULT_CPU)
    tpl.setdefault("timeout", "300s")
    if not tpl.get("maxInstanceRequestConcurrency") and containers:
        main = containers[ingress_container(containers)]
        cpus = parse_cpu(main["resources"]["limits"]["cpu"],
                         f"service.template.containers[{ingress_container(containers)}].resources.limits.cpu")
        tpl["maxInstanceRequestConcurrency"] = 80 if cpus >= 1 else 1  # RevisionTemplate proto comment
    return tpl


def parse_duration_s(value: Any, fld: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(value))
    if not m:
        raise ApiError(400, f"{fld}: invalid duration {value!r} (e.g. '300s').", field=fld)
    return float(m.group(1))


def _reserved(key: str) -> str | None:
    domain = key.split("/", 1)[0] if "/" in key else ""
    return next((ns for ns in RESERVED_NAMESPACES if domain == ns or domain.endswith("." + ns)), None)


def validate_metadata(meta: dict[str, Any], fld: str, *, allowed: set[str] | frozenset[str] = frozenset()) -> None:
    """Labels/annotations: Cloud Run API v2 rejects the system namespaces (proto comments)."""
    for key in sorted(meta or {}):
        ns = _reserved(key)
        if ns is not None and key not in allowed:
            raise ApiError(
                400,
                f"Violation in {fld}: key '{key}' uses the reserved namespace '{ns}'. Cloud Run API v2 does not "
                "support labels or annotations with `run.googleapis.com`, `cloud.googleapis.com`, "
                "`serving.knative.dev`, or `autoscaling.knative.dev` namespaces.",
                field=fld,
            )


# Annotations "follow Kubernetes annotations' namespacing, limits, and rules" (Service / RevisionTemplate proto
# comments): a key is an optional DNS-subdomain prefix (<= 253) + "/" + a name (<= 63, alphanumeric at both ends,
# `-_.` inside), checked lowercased; keys + values together at most 256 KiB (apimachinery ValidateAnnotations).
MAX_ANNOTATIONS_BYTES = 256 * 1024
_QUALIFIED_NAME = re.compile(r"^([a-z0-9]([-a-z0-9_.]*[a-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def annotation_key_problem(key: str) -> str | None:
    """Why Kubernetes' IsQualifiedName rejects an annotation key (checked lowercased), or None."""
    lowered = key.lower()
    if lowered.count("/") > 1:
        return "a qualified name has at most one '/' (an optional DNS subdomain prefix, then the name)"
    prefix, slash, name = lowered.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a DNS subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters)"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                "an alphanumeric character")
    return None


def validate_annotations(meta: dict[str, Any], fld: str, *, allowed: set[str] | frozenset[str] = frozenset()) -> None:
    """Reserved namespaces (validate_metadata), then Kubernetes' key syntax and the 256 KiB total."""
    validate_metadata(meta, fld, allowed=allowed)
    total = 0
    for key, value in sorted((meta or {}).items()):
        problem = annotation_key_problem(key)
        if problem is not None:
            raise ApiError(400, f"Violation in {fld}: key '{key}' is invalid: {problem}.", field=fld)
        if not isinstance(value, str):
            raise ApiError(400, f"Violation in {fld}: the value of '{key}' must be a string.", field=fld)
        total += len(key.encode()) + len(value.encode())
    if total > MAX_ANNOTATIONS_BYTES:
        raise ApiError(400, f"Violation in {fld}: annotations are too long: must have at most "
                            f"{MAX_ANNOTATIONS_BYTES} bytes (keys and values together), got {total}.", field=fld)


def memory_ceiling(cpus: float) -> int:
    """The most memory a CPU setting allows: < 0.5 CPU 512 MiB, < 1 CPU 1 GiB, 1 CPU 4 GiB, 2 CPU 8 GiB,
    4 CPU 16 GiB, 6 CPU 24 GiB, 8 CPU 32 GiB."""
    if cpus < 0.5:
        return 512 * 2**20
    if cpus < 1:
        return 2**30
    if cpus < 2:
        return 4 * 2**30
    return _MEMORY_CEILING.get(cpus, 32 * 2**30)


def validate_template(tpl: dict[str, Any]) -> None:
    """What Cloud Run rejects in a (normalized) RevisionTemplate, with Google-style 400s naming the field.

    CPU / memory / concurrency rules: docs configuring/services/cpu and memory-limits (facts §3)."""
    base = "service.template"
    validate_metadata(tpl.get("labels") or {}, f"{base}.labels")
    validate_annotations(tpl.get("annotations") or {}, f"{base}.annotations")
    containers = tpl.get("containers") or []
    if not containers:
        raise ApiError(400, f"{base}.containers: at least one container is required.", field=f"{base}.containers")
    validate_containers(containers)
    concurrency = as_int(tpl.get("maxInstanceRequestConcurrency"), f"{base}.max_instance_request_concurrency")
    if not 0 <= concurrency <= MAX_CONCURRENCY:
        raise ApiError(400, f"Violation in {base}.max_instance_request_concurrency: must be between 1 and "
                       f"{MAX_CONCURRENCY}, got {concurrency}.", field=f"{base}.max_instance_request_concurrency")
    timeout_s = parse_duration_s(tpl.get("timeout", "300s"), f"{base}.timeout")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ApiError(400, f"Violation in {base}.timeout: must be between 1s and {MAX_TIMEOUT_S}s, got "
                       f"{tpl.get('timeout')}.", field=f"{base}.timeout")
    scaling = tpl.get("scaling") or {}
    lo = as_int(scaling.get("minInstanceCount"), f"{base}.scaling.min_instance_count")
    hi = as_int(scaling.get("maxInstanceCount"), f"{base}.scaling.max_instance_count")
    if hi and lo > hi:
        raise ApiError(400, f"Violation in {base}.scaling.max_instance_count: must be greater or equal than "
                       "min_instance_count.", field=f"{base}.scaling.max_instance_count")
    gen2 = tpl.get("executionEnvironment") == "EXECUTION_ENVIRONMENT_GEN2"
    for i, c in enumerate(containers):
        fld = f"{base}.containers[{i}].resources"
        resources = c.get("resources") or {}
        limits = resources.get("limits") or {}
        cpus = parse_cpu(limits.get("cpu", DEFAULT_CPU), f"{fld}.limits.cpu")
        memory = parse_memory(limits.get("memory", DEFAULT_MEMORY), f"{fld}.limits.memory")
        cpu_text, mem_text = limits.get("cpu", DEFAULT_CPU), limits.get("memory", DEFAULT_MEMORY)
        if not 0.08 <= cpus <= 8:
            raise ApiError(400, f"Violation in {fld}.limits.cpu: CPU must be between 0.08 and 8, got '{cpu_text}'.",
                           field=f"{fld}.limits.cpu")
        if cpus > 1 and cpus not in WHOLE_CPUS:
            raise ApiError(400, f"Violation in {fld}.limits.cpu: CPU above 1 must be one of 1, 2, 4, 6 or 8, "
                           f"got '{cpu_text}'.", field=f"{fld}.limits.cpu")
        if cpus < 1:
            if resources.get("cpuIdle") is not True:
                raise ApiError(400, f"Violation in {fld}.cpu_idle: CPU below 1 ('{cpu_text}') requires CPU to be "
                               "allocated only during request processing (cpu_idle = true); when resources are "
                               "set, cpu_idle must be set explicitly.", field=f"{fld}.cpu_idle")
            if concurrency > 1:
                raise ApiError(400, f"Violation in {base}.max_instance_request_concurrency: CPU below 1 "
                               f"('{cpu_text}') requires a maximum concurrency of 1, got {concurrency}.",
                               field=f"{base}.max_instance_request_concurrency")
            if gen2:
                raise ApiError(400, f"Violation in {fld}.limits.cpu: CPU below 1 ('{cpu_text}') requires the "
                               "first generation execution environment.", field=f"{fld}.limits.cpu")
        ceiling = memory_ceiling(cpus)
        if memory > ceiling:
            raise ApiError(400, f"Violation in {fld}.limits.memory: memory '{mem_text}' exceeds the "
                           f"{ceiling // 2**20} MiB that {cpu_text} CPU allows (more memory needs more CPU: "
                           "> 512 MiB needs 0.5, > 1 GiB needs 1, > 4 GiB needs 2, > 8 GiB needs 4, "
                           "> 16 GiB needs 6, > 24 GiB needs 8).", field=f"{fld}.limits.memory")
        env_floor = 512 * 2**20 if gen2 else 128 * 2**20
        floor = max(_MEMORY_FLOOR.get(cpus, 0), env_floor)
        if memory < floor:
            why = (f"{cpu_text} CPU" if floor > env_floor else
                   "the second generation execution environment" if gen2 else "the first generation execution environment")
            raise ApiError(400, f"Violation in {fld}.limits.memory: memory '{mem_text}' is below the "
                           f"{floor // 2**20} MiB minimum of {why}.", field=f"{fld}.limits.memory")


MAX_CONTAINERS = 10  # "up to 10 containers" per instance (docs: deploying, sidecars)
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_containers(containers: list[dict[str, Any]]) -> None:
    """Multi-container (sidecar) rules: at most 10 containers; exactly one ingress container, the only one with
    a port (and one port at most: "Only a single port can be specified"); with several containers each has a
    unique DNS_LABEL name; `dependsOn` names other containers of the template, without cycles."""
    base = "service.template.containers"
    if len(containers) > MAX_CONTAINERS:
        raise ApiError(400, f"Violation in {base}: a revision can have at most {MAX_CONTAINERS} containers, "
                       f"got {len(containers)}.", field=base)
    for i, c in enumerate(containers):
        if len(c.get("ports") or []) > 1:
            raise ApiError(400, f"Violation in {base}[{i}].ports: only a single port can be specified.",
                           field=f"{base}[{i}].ports")
    if len(containers) == 1:
        if containers[0].get("dependsOn"):
            raise ApiError(400, f"Violation in {base}[0].depends_on: container '{containers[0].get('name', '')}' "
                           f"depends on '{containers[0]['dependsOn'][0]}', which is not another container of this "
                           "revision.", field=f"{base}[0].depends_on")
        return
    with_port = [i for i, c in enumerate(containers) if c.get("ports")]
    if len(with_port) != 1:
        raise ApiError(400, f"Violation in {base}: exactly one container (the ingress container) must specify a "
                       f"port when a revision has several containers; {len(with_port)} do.", field=base)
    names: dict[str, int] = {}
    for i, c in enumerate(containers):
        name = c.get("name", "")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            raise ApiError(400, f"Violation in {base}[{i}].name: each container of a multi-container revision "
                           f"needs a name that is a DNS label (RFC 1123), got {name!r}.", field=f"{base}[{i}].name")
        if name in names:
            raise ApiError(400, f"Violation in {base}[{i}].name: container name '{name}' is used by "
                           f"containers[{names[name]}] too; names must be unique.", field=f"{base}[{i}].name")
        names[name] = i
    graph: dict[str, list[str]] = {}
    for i, c in enumerate(containers):
        deps = [str(d) for d in c.get("dependsOn") or []]
        for d in deps:
            if d not in names or d == c["name"]:
                raise ApiError(400, f"Violation in {base}[{i}].depends_on: container '{c['name']}' depends on "
                               f"'{d}', which is not another container of this revision.",
                               field=f"{base}[{i}].depends_on")
        graph[c["name"]] = deps
    start_order(graph)


def start_order(graph: dict[str, list[str]]) -> list[str]:
    """Containers in an order where each starts after the ones it depends on; a cycle is a 400."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise ApiError(400, f"Violation in service.template.containers: container dependencies form a cycle "
                           f"({cycle}).", field="service.template.containers")
        state[name] = 1
        for dep in graph[name]:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in graph:
        visit(name, [])
    return order


def container_spec(template: dict[str, Any]) -> ContainerSpec:
    """Validate a normalized template and extract the container the sandbox runs: the ingress container.

    Sidecars are validated and kept on the revision, but not run: every instance runs on the host's network,
    where two instances' sidecars would collide on their ports (a stated limit of the sandbox)."""
    containers = template.get("containers") or []
    if not containers:
        raise ApiError(400, "service.template.containers: at least one container is required.",
                       field="service.template.containers")
    validate_containers(containers)
    index = ingress_container(containers)
    c = containers[index]
    fld = f"service.template.containers[{index}]"
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
        liveness_probe=c.get("livenessProbe") or {},
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
            if len(t.tag) + len(service) > MAX_TAG_AND_SERVICE:
                raise ApiError(400, tag_too_long_message(t.tag, service), field=f"{fld}.tag")
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


def ingress_admits(ingress: str | None, path: Literal["run.app", "lb"], *, from_vpc: bool = False) -> bool:
    """Whether a request reaches the service: from outside the VPC, run.app URLs (service and tag URLs)
    are open only with INGRESS_TRAFFIC_ALL; an external load balancer also with INTERNAL_LOAD_BALANCER
    ("internal and Cloud Load Balancing"). `from_vpc` (the behaviour `vpc_clients`: the callers run inside the
    service's VPC network): `internal` admits the run.app URLs too (docs securing/ingress); `none` admits nothing."""
    setting = ingress or INGRESS_ALL
    if from_vpc and path == "run.app":
        return setting in (INGRESS_ALL, INGRESS_INTERNAL_ONLY, INGRESS_INTERNAL_LB)
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


# Update-mask paths the API knows: client-settable Service fields, and the messages a path may descend into.
_TEMPLATE_FIELDS = frozenset({
    "revision", "labels", "annotations", "scaling", "vpcAccess", "timeout", "serviceAccount", "containers",
    "volumes", "executionEnvironment", "encryptionKey", "maxInstanceRequestConcurrency", "serviceMesh",
    "encryptionKeyRevocationAction", "encryptionKeyShutdownDuration", "sessionAffinity", "healthCheckDisabled",
    "nodeSelector", "gpuZonalRedundancyDisabled",
})
MASK_SCHEMA: dict[str, frozenset[str]] = {
    "": frozenset({
        "description", "labels", "annotations", "client", "clientVersion", "ingress", "launchStage",
        "binaryAuthorization", "template", "traffic", "scaling", "invokerIamDisabled", "defaultUriDisabled",
        "iapEnabled", "multiRegionSettings", "customAudiences", "threatDetectionEnabled", "buildConfig",
    }) | SERVICE_OUTPUT_ONLY,
    "template": _TEMPLATE_FIELDS,
    "template.scaling": frozenset({"minInstanceCount", "maxInstanceCount"}),
    "template.vpcAccess": frozenset({"connector", "egress", "networkInterfaces"}),
    "template.serviceMesh": frozenset({"mesh"}),
    "template.nodeSelector": frozenset({"accelerator"}),
    "scaling": frozenset({"minInstanceCount", "scalingMode", "maxInstanceCount", "manualInstanceCount"}),
    "binaryAuthorization": frozenset({"useDefault", "policy", "breakglassJustification"}),
    "multiRegionSettings": frozenset({"regions", "multiRegionId"}),
}


def parse_update_mask(mask: str | None, *, unknown: Literal["reject", "ignore"] = "reject") -> list[list[str]]:
    """`updateMask` query value -> paths as camelCase segments; unknown paths are a 400 naming update_mask
    (`unknown="ignore"`: dropped, they change nothing — sandbox/fidelity.py `unknown_mask_path`).

    The REST client sends the FieldMask's JSON form (comma-separated, camelCase: `template,traffic`,
    `scaling.minInstanceCount`); snake_case segments are accepted too. `*` means every field."""
    paths: list[list[str]] = []
    for raw in (p.strip() for p in (mask or "").split(",") if p.strip()):
        if raw == "*":
            paths.append(["*"])
            continue
        segments = [_camel(seg) for seg in raw.split(".")]
        for depth, seg in enumerate(segments):
            parent = ".".join(segments[:depth])
            known = MASK_SCHEMA.get(parent)
            if known is None or seg not in known:
                if unknown == "ignore":
                    break
                raise ApiError(400, f"Invalid update_mask path '{raw}': '{seg}' is not a field of "
                               f"{'Service' if not parent else 'Service.' + parent} that can be updated.",
                               field="update_mask")
        else:
            paths.append(segments)
    return paths


def _get_path(node: dict[str, Any], path: list[str]) -> Any:
    for seg in path:
        if not isinstance(node, dict) or seg not in node:
            return None
        node = node[seg]
    return node


def _set_path(node: dict[str, Any], path: list[str], value: Any) -> None:
    for seg in path[:-1]:
        child = node.get(seg)
        if not isinstance(child, dict):
            child = node[seg] = {}
        node = child
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def apply_update_mask(current: dict[str, Any], incoming: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    """No paths (no mask) or `*`: the body replaces the whole resource (omitted fields fall back to defaults,
    as clients send the whole Service). Paths (a mask, or the fields a body populates: `populated_paths`):
    only those (top-level or nested) are taken from the body; a named path absent from the body is cleared.
    Output-only paths are ignored."""
    if not paths or ["*"] in paths:
        return incoming
    merged = copy.deepcopy(current)
    for path in paths:
        if path[0] in SERVICE_OUTPUT_ONLY:
            continue
        _set_path(merged, path, copy.deepcopy(_get_path(incoming, path)))
    merged["template"] = normalize_template(prune(merged.get("template") or {}))
    return prune(merged) | {"template": merged["template"]}


def populated_paths(body: dict[str, Any]) -> list[list[str]]:
    """The top-level fields a body populates, as mask paths: AIP-134's reading of an omitted mask ("all fields
    that are populated"; sandbox/fidelity.py `no_mask="populated"`)."""
    return [[key] for key in prune(body) if key not in SERVICE_OUTPUT_ONLY] or [["etag"]]


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


# RevisionTemplate fields that a Revision carries under the same name (google.cloud.run.v2 Revision)
REVISION_TEMPLATE_FIELDS = (
    "labels", "annotations", "scaling", "vpcAccess", "maxInstanceRequestConcurrency", "timeout", "serviceAccount",
    "containers", "volumes", "executionEnvironment", "encryptionKey", "serviceMesh", "encryptionKeyRevocationAction",
    "encryptionKeyShutdownDuration", "sessionAffinity", "nodeSelector", "gpuZonalRedundancyDisabled",
)


def revision_to_json(svc: Service, rev: Revision, log_uri: str) -> dict[str, Any]:
    """A Revision as the API returns it: every field of the template it was created from, plus status."""
    tpl = rev.template
    out: dict[str, Any] = {
        "name": f"{svc.name}/revisions/{rev.name}",
        "uid": rev.uid,
        "generation": "1",
        "createTime": rfc3339(rev.create_time),
        "updateTime": rfc3339(rev.update_time),
        "launchStage": svc.spec.get("launchStage", ""),
        "service": svc.name,
    }
    out.update({key: copy.deepcopy(tpl[key]) for key in REVISION_TEMPLATE_FIELDS if key in tpl})
    out.update({
        "reconciling": rev.phase == "PENDING",
        "conditions": [rev.ready.to_json()],
        "observedGeneration": "1",
        "logUri": log_uri,
        "etag": '"' + hashlib.sha1(rev.uid.encode()).hexdigest()[:16] + '"',
    })
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


def tag_too_long_message(tag: str, service: str) -> str:
    """gcloud's full output for the server-side check (policyengine-api#3729, firebase-tools#6137)."""
    return (f"spec.traffic.tag: traffic tag '{tag}' and service name '{service}' together are too long. "
            f"Combined traffic tag and service name cannot exceed {MAX_TAG_AND_SERVICE} characters.")


def revision_not_ready_message(revision: str, detail: str) -> str:
    return f"Revision '{revision}' is not ready and cannot serve traffic. {detail}"
