"""Cloud Run Admin API v2, through the unmodified google-cloud-run REST client.

The same code talks to real Cloud Run (default endpoint, Application Default Credentials) and to the
sandbox (endpoint + the service-account key file it writes, from Settings.endpoints). The client is synchronous; the
async methods run it in a worker thread so waits never block the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core import operation
from google.api_core.client_options import ClientOptions
from google.api_core.future import polling
from google.api_core.retry import Retry
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from stagecheck.clients.api_errors import API_ERRORS, describe_api_error
from stagecheck.clients.api_errors import api_message as _message
from stagecheck.clients.identity import api_credentials
from stagecheck.errors import Api, StageError
from stagecheck.managed_env import (
    MANAGED_ENV_ANNOTATION,
    managed_names,
    managed_value,
    plan_env,
    user_keys,
)
from stagecheck.model import RevisionInfo, TrafficTarget
from stagecheck.settings import ServiceConfig, Settings

T = TypeVar("T")

_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = run_v2.Condition.State.CONDITION_FAILED
_OP_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.1, maximum=2.0, multiplier=1.5)
_READ_RETRY = Retry(initial=0.2, maximum=2.0, multiplier=2.0, timeout=15.0,
                    predicate=lambda e: isinstance(e, gexc.ServiceUnavailable | gexc.TooManyRequests))


def revision_id(name: str) -> str:
    """A revision's id from its resource name (`projects/p/locations/l/services/s/revisions/s-00002-abc`
    -> `s-00002-abc`), through the client library's path parser; an id stays as it is."""
    return run_v2.RevisionsClient.parse_revision_path(name).get("revision") or name


def service_id(name: str) -> str:
    """A service's id from its resource name (`projects/p/locations/l/services/s` -> `s`)."""
    return run_v2.ServicesClient.parse_service_path(name).get("service") or name


def split_from_proto(traffic: Sequence[Any]) -> list[TrafficTarget]:
    out = []
    for t in traffic:
        latest = t.type_ == _LATEST
        out.append(TrafficTarget(revision=None if latest else t.revision, percent=int(t.percent), tag=t.tag or None))
    return out


def split_from_statuses(statuses: Sequence[Any]) -> list[TrafficTarget]:
    """What serves (`traffic_statuses`), each target with its concrete revision (LATEST resolved)."""
    return [TrafficTarget(revision=s.revision or None, percent=int(s.percent), tag=s.tag or None) for s in statuses]


def ingress_name(service: Any) -> str:
    """The service's ingress setting as its enum name ('' when unset, which means all traffic)."""
    value: Any = getattr(service, "ingress", 0)
    return str(value.name) if value else ""


def split_to_proto(split: Sequence[TrafficTarget]) -> list[run_v2.TrafficTarget]:
    out = []
    for t in split:
        if t.revision is None:
            out.append(run_v2.TrafficTarget(type_=_LATEST, percent=t.percent, tag=t.tag or ""))
        else:
            out.append(run_v2.TrafficTarget(type_=_REVISION, revision=t.revision, percent=t.percent, tag=t.tag or ""))
    return out


@dataclass(frozen=True)
class ReadyState:
    ready: bool | None  # None: still reconciling
    message: str
    reason: str
    transition_time: datetime | None


def proto_time(ts: Any) -> datetime | None:
    """A proto timestamp, or None when unset (an unset one reads as 1970-01-01)."""
    return ts if isinstance(ts, datetime) and ts.year > 1970 else None


def condition_reason(cond: Any) -> str:
    """The reason of a Condition: `reason` (CommonReason), else `revision_reason` (e.g.
    HEALTH_CHECK_CONTAINER_ERROR) or `execution_reason` — the oneof Cloud Run fills for revisions."""
    for attr in ("reason", "revision_reason", "execution_reason"):
        value: Any = getattr(cond, attr, 0)
        if value:
            return str(value.name)
    return ""


def ready_condition(conditions: Sequence[Any]) -> ReadyState:
    """The `Ready` condition, found by type (never by position)."""
    for cond in conditions:
        if cond.type_ == "Ready":
            when = proto_time(cond.last_transition_time)
            if cond.state == _SUCCEEDED:
                return ReadyState(True, cond.message, condition_reason(cond), when)
            if cond.state == _FAILED:
                return ReadyState(False, cond.message, condition_reason(cond), when)
            return ReadyState(None, cond.message, "", when)
    return ReadyState(None, "no Ready condition yet", "", None)


def revision_info(rev: run_v2.Revision) -> RevisionInfo:
    """What the report needs of a revision: image, resources, scaling, creation and Ready times."""
    name = revision_id(rev.name)
    container = rev.containers[0] if rev.containers else None
    limits = dict(container.resources.limits) if container else {}
    return RevisionInfo(
        name=name,
        created_at=proto_time(rev.create_time),
        ready_at=ready_condition(rev.conditions).transition_time,
        image=container.image if container else None,
        memory=limits.get("memory"),
        cpu=limits.get("cpu"),
        min_instances=rev.scaling.min_instance_count,
        max_instances=rev.scaling.max_instance_count,
        timeout_s=rev.timeout.total_seconds() if "timeout" in rev else None,
    )


def merge_env(current: Sequence[run_v2.EnvVar], svc: ServiceConfig,
              managed_before: Collection[str] = ()) -> list[run_v2.EnvVar]:
    """The serving revision's variables with the config's `env` and `secrets` applied (stagecheck.managed_env).

    A config variable replaces one of the same name whether plain or secret; new ones are appended (plain,
    then secrets, each sorted). A variable in `managed_before` (set by an earlier release: the serving
    revision's `stagecheck.dev/managed-env` annotation) that the config no longer names is removed; any
    other variable stays as it is, in its order (set outside stagecheck)."""
    ours: dict[str, run_v2.EnvVar] = {k: run_v2.EnvVar(name=k, value=v) for k, v in sorted(svc.env.items())}
    for name, ref in sorted(svc.secrets.items()):
        secret, version = ref.rsplit(":", 1)
        ours[name] = run_v2.EnvVar(name=name, value_source=run_v2.EnvVarSource(
            secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version)))
    plan = plan_env([var.name for var in current], managed_before, list(ours))
    out = [ours.pop(var.name) if var.name in ours else run_v2.EnvVar(var) for var in current
           if var.name not in plan.removed]
    return [*out, *ours.values()]


def configured_env(svc: ServiceConfig) -> list[str]:
    """The variable names the config sets (env, then secrets), as merge_env appends them."""
    return [*sorted(svc.env), *sorted(n for n in svc.secrets if n not in svc.env)]


def template_from_revision(rev: run_v2.Revision, current: run_v2.RevisionTemplate | None = None
                           ) -> run_v2.RevisionTemplate:
    """The template that would create `rev` again: every RevisionTemplate field a Revision carries (its
    containers, volumes, scaling, service account, VPC access, timeout, concurrency, execution environment,
    encryption key, session affinity, labels, annotations...), the system-namespace labels and annotations
    a revision may carry dropped (the API rejects them on a template). `health_check_disabled`, which a
    Revision does not carry, comes from the service's `current` template."""
    tpl = run_v2.RevisionTemplate()
    for name in run_v2.RevisionTemplate.meta.fields:
        if name in ("revision", "labels", "annotations", "health_check_disabled"):
            continue
        if name in run_v2.Revision.meta.fields and name in rev:
            setattr(tpl, name, getattr(rev, name))
    tpl.labels = user_keys(dict(rev.labels))
    tpl.annotations = user_keys(dict(rev.annotations))
    if current is not None:
        tpl.health_check_disabled = current.health_check_disabled
    return tpl


def ingress_index(containers: Sequence[run_v2.Container]) -> int:
    """The container that receives requests: the one with a port (sidecars have none), else the first."""
    return next((i for i, c in enumerate(containers) if c.ports), 0)


def build_template(svc: ServiceConfig, *, image: str, revision: str, labels: dict[str, str],
                   current: run_v2.RevisionTemplate | None = None) -> run_v2.RevisionTemplate:
    """The candidate's template: a copy of `current` (the serving revision's, see template_from_revision)
    with only image, env, port, resources, revision name, labels and the managed-env annotation changed
    (scaling only when the config sets it explicitly).

    An update replaces the whole template, so everything else the service runs with — service
    account, VPC access, volumes and mounts, timeout, concurrency, probes, execution environment,
    session affinity, encryption key, sidecars, annotations — is carried over unchanged. Without
    `current` (a first deployment) the template comes from the config alone. `resources` always set
    `cpu_idle` explicitly (a resources block without it means always-on CPU): the config's
    `cpu_idle`, else the service's, else true; `startup_cpu_boost` is kept."""
    tpl = run_v2.RevisionTemplate(current) if current is not None else run_v2.RevisionTemplate()
    explicit = svc.model_fields_set
    tpl.revision = revision
    tpl.labels = {**dict(tpl.labels), **labels}
    containers = [run_v2.Container(c) for c in tpl.containers] or [run_v2.Container()]
    main = containers[ingress_index(containers)]
    main.image = image
    main.env = merge_env(list(main.env), svc, managed_names(dict(tpl.annotations)))
    tpl.annotations = {**dict(tpl.annotations), MANAGED_ENV_ANNOTATION: managed_value(configured_env(svc))}
    if main.ports:
        main.ports[0].container_port = svc.port
    else:
        main.ports = [run_v2.ContainerPort(container_port=svc.port)]
    had = "resources" in main
    limits = dict(main.resources.limits) if had else {}
    limits["cpu"] = svc.cpu if "cpu" in explicit or not limits.get("cpu") else limits["cpu"]
    limits["memory"] = svc.memory if "memory" in explicit or not limits.get("memory") else limits["memory"]
    cpu_idle = svc.cpu_idle if svc.cpu_idle is not None else (main.resources.cpu_idle if had else True)
    main.resources = run_v2.ResourceRequirements(limits=limits, cpu_idle=cpu_idle,
                                                 startup_cpu_boost=main.resources.startup_cpu_boost if had else False)
    tpl.containers = containers
    if current is None or "min_instances" in explicit:
        tpl.scaling.min_instance_count = svc.min_instances
    if current is None or "max_instances" in explicit:
        tpl.scaling.max_instance_count = svc.max_instances
    return tpl


def template_facts(tpl: run_v2.RevisionTemplate) -> dict[str, Any]:
    """What a template runs with, for the deploy evidence (the settings a release must not lose)."""
    main = tpl.containers[ingress_index(tpl.containers)] if tpl.containers else run_v2.Container()
    return {
        "service_account": tpl.service_account or "(project default)",
        "vpc_connector": tpl.vpc_access.connector or None,
        "vpc_network_interfaces": len(tpl.vpc_access.network_interfaces),
        "timeout_s": tpl.timeout.total_seconds() if "timeout" in tpl else None,
        "concurrency": tpl.max_instance_request_concurrency or None,
        "execution_environment": tpl.execution_environment.name if tpl.execution_environment else None,
        "session_affinity": tpl.session_affinity,
        "volumes": [v.name for v in tpl.volumes],
        "containers": len(tpl.containers),
        "cpu": main.resources.limits.get("cpu"),
        "memory": main.resources.limits.get("memory"),
        "cpu_idle": main.resources.cpu_idle,
        "startup_cpu_boost": main.resources.startup_cpu_boost,
        "startup_probe": "startup_probe" in main,
        "scaling": [tpl.scaling.min_instance_count, tpl.scaling.max_instance_count],
        "env": [e.name for e in main.env],
    }


def _rpc_status(exc: gexc.GoogleAPICallError) -> str:
    """The google.rpc status name of an HTTP error body ("ABORTED", "ALREADY_EXISTS", ...), or ""."""
    try:
        return str(exc.response.json()["error"]["status"]) if exc.response is not None else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def update_conflict(exc: gexc.Conflict, what: str) -> StageError:
    """A 409 on UpdateService: a revision-name conflict, or a concurrent modification (etag)."""
    message = _message(exc)
    if "with different configuration already exists" in message:
        return RevisionNameConflict(f"{what}: {message}")
    return EtagMismatch(f"{what}: the service changed since it was read ({_rpc_status(exc) or 'CONFLICT'}: {message})")


class EtagMismatch(StageError):
    """409/ABORTED: the service was modified since it was read (its etag no longer matches)."""


class RevisionNameConflict(StageError):
    """409: "Revision named '<rev>' with different configuration already exists."."""


DEPLOY_MASK = ("template", "traffic")
TRAFFIC_MASK = ("traffic",)
ANNOTATIONS_MASK = ("annotations",)
ETAG_ATTEMPTS = 3


class CloudRun:
    """Services and revisions of one project/region."""

    def __init__(self, settings: Settings) -> None:
        self.project = settings.project
        self.region = settings.region
        kwargs: dict[str, Any] = {"transport": "rest"}
        if settings.endpoints.run_api:
            kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoints.run_api)
        self._credentials_file = settings.endpoints.credentials_file
        self._credentials_block = settings.gcp_credentials_block
        self._kwargs = kwargs
        self._services: run_v2.ServicesClient | None = None
        self._revisions: run_v2.RevisionsClient | None = None

    # -- clients are built lazily (credentials lookup happens once, on first use)
    def _client_kwargs(self) -> dict[str, Any]:
        """The GcpCredentials block's or the key file's service account when the settings name one, else ADC
        (the client's default)."""
        if "credentials" not in self._kwargs and (self._credentials_file or self._credentials_block):
            self._kwargs["credentials"] = api_credentials(self._credentials_file, self._credentials_block)
        return self._kwargs

    @property
    def services(self) -> run_v2.ServicesClient:
        if self._services is None:
            self._services = run_v2.ServicesClient(**self._client_kwargs())
        return self._services

    @property
    def revisions(self) -> run_v2.RevisionsClient:
        if self._revisions is None:
            self._revisions = run_v2.RevisionsClient(**self._client_kwargs())
        return self._revisions

    # resource names through the client library's path helpers
    @property
    def parent(self) -> str:
        return run_v2.ServicesClient.common_location_path(self.project, self.region)

    def service_path(self, service: str) -> str:
        return run_v2.ServicesClient.service_path(self.project, self.region, service)

    def revision_path(self, service: str, revision: str) -> str:
        return run_v2.RevisionsClient.revision_path(self.project, self.region, service, revision)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except API_ERRORS as exc:
            raise describe_api_error(exc, what) from None

    async def get_service(self, service: str) -> run_v2.Service | None:
        def get() -> run_v2.Service | None:
            try:
                return self.services.get_service(name=self.service_path(service), retry=_READ_RETRY, timeout=30)
            except gexc.NotFound:
                return None
        return await self._call(f"get service {service}", get)

    async def get_revision(self, service: str, revision: str) -> run_v2.Revision:
        return await self._call(
            f"get revision {revision}",
            lambda: self.revisions.get_revision(name=self.revision_path(service, revision), retry=_READ_RETRY, timeout=30),
        )

    async def create_service(self, service: str, template: run_v2.RevisionTemplate,
                             split: Sequence[TrafficTarget]) -> operation.Operation:
        """Start creating the service; await the returned operation with `finish`."""
        body = run_v2.Service(template=template, traffic=split_to_proto(split))
        return await self._call(
            f"create service {service}",
            lambda: self.services.create_service(parent=self.parent, service=body, service_id=service, timeout=30),
        )

    async def update_service(self, current: run_v2.Service, *, template: run_v2.RevisionTemplate | None = None,
                             split: Sequence[TrafficTarget],
                             update_mask: Sequence[str] | None = None,
                             annotations: Mapping[str, str | None] | None = None) -> operation.Operation:
        """Start a PATCH of `current` (read from the API: its etag guards against concurrent changes)
        with a new template and/or traffic; await it with `finish`.

        `update_mask` names the paths that change, as proto field names ("template", "traffic",
        "template.scaling.max_instance_count"); the REST transport sends the FieldMask's JSON form, the
        camelCase paths joined by commas (`?updateMask=template,traffic`). By default "template,traffic"
        with a template, "traffic" without. Raises EtagMismatch when the
        service changed since `current` was read, RevisionNameConflict when the template's revision
        name exists with a different configuration. `annotations` sets (None: removes) service annotations;
        the mask must then name `annotations`."""
        body = run_v2.Service(current)
        if template is not None:
            body.template = template
        body.traffic = split_to_proto(split)
        for key, value in (annotations or {}).items():
            if value is None:
                body.annotations.pop(key, None)
            else:
                body.annotations[key] = value
        mask = list(update_mask) if update_mask is not None else list(DEPLOY_MASK if template is not None else TRAFFIC_MASK)
        request = run_v2.UpdateServiceRequest(service=body, update_mask=field_mask_pb2.FieldMask(paths=mask))
        what = f"update service {service_id(current.name)}"

        def patch() -> operation.Operation:
            try:
                return self.services.update_service(request=request, timeout=30)
            except gexc.Conflict as exc:
                raise update_conflict(exc, what) from None

        return await self._call(what, patch)

    async def update_with_retry(
        self, current: run_v2.Service,
        build: Callable[[run_v2.Service], tuple[run_v2.RevisionTemplate | None, Sequence[TrafficTarget]]],
        *, update_mask: Sequence[str] | None = None, attempts: int = ETAG_ATTEMPTS,
        annotations: Mapping[str, str | None] | None = None,
    ) -> tuple[operation.Operation, int]:
        """`update_service` with what `build(current)` returns; on an etag mismatch the service is read
        again and the update rebuilt from it, at most `attempts` times. Returns the operation and the
        number of etag retries."""
        name = service_id(current.name)
        for attempt in range(attempts):
            template, split = build(current)
            try:
                return await self.update_service(current, template=template, split=split,
                                                 update_mask=update_mask, annotations=annotations), attempt
            except EtagMismatch as exc:
                if attempt + 1 >= attempts:
                    raise StageError(f"{exc.message}; gave up after {attempts} attempts",
                                     hint="something else keeps changing the service; retry when it is quiet") from None
                fresh = await self.get_service(name)
                if fresh is None:
                    raise StageError(f"service {name} disappeared during the update") from None
                current = fresh
        raise AssertionError("unreachable")

    async def finish(self, op: operation.Operation, what: str, timeout_s: float) -> run_v2.Service:
        """Wait for a long-running operation; its error becomes a StageError with the API's message,
        and one still running after `timeout_s` a StageError naming the operation and the bound."""
        def wait() -> run_v2.Service:
            try:
                return op.result(timeout=timeout_s, polling=_OP_POLLING, retry=_READ_RETRY)  # GetOperation is a read
            except TimeoutError as exc:  # concurrent.futures.TimeoutError: polled until the bound, never done
                inner = exc.__context__  # ... or a GetOperation that kept failing past its own retry bound
                if isinstance(inner, gexc.RetryError) and isinstance(inner.cause, gexc.GoogleAPICallError):
                    raise describe_api_error(inner, f"{what} (polling the operation)") from None
                name = op.operation.name.rsplit("/", 1)[-1]
                raise StageError(f"{what}: operation {name} still not done at its {timeout_s:g} s deadline "
                                 f"(the {Api.RUN} kept answering done=false)",
                                 hint="check the service in the console before another release") from None
        return await self._call(what, wait)

    async def set_traffic(self, service: str, split: Sequence[TrafficTarget], timeout_s: float,
                          annotations: Mapping[str, str | None] | None = None) -> run_v2.Service:
        """Set the split; with `annotations`, in the same request (mask `traffic,annotations`)."""
        current = await self.get_service(service)
        if current is None:
            raise StageError(f"service {service} disappeared while shifting traffic")
        mask = TRAFFIC_MASK + ANNOTATIONS_MASK if annotations else TRAFFIC_MASK
        op, _ = await self.update_with_retry(current, lambda _: (None, split), update_mask=mask,
                                             annotations=annotations)
        return await self.finish(op, f"set traffic of {service}", timeout_s)

    async def tag_revision(self, service: str, revision: str, tag: str, timeout_s: float) -> run_v2.Service:
        """Give `revision` the traffic tag `tag` (a 0 % target) without moving traffic: the split read now
        (again after an etag mismatch) with the tag added, mask `traffic`; the service once the operation is done."""
        from stagecheck.traffic import with_tag

        current = await self.get_service(service)
        if current is None:
            raise StageError(f"service {service} not found")
        op, _ = await self.update_with_retry(
            current, lambda svc: (None, with_tag(split_from_proto(svc.traffic), revision, tag)), update_mask=TRAFFIC_MASK)
        return await self.finish(op, f"tag {revision} of {service} as {tag}", timeout_s)

    async def set_annotations(self, service: str, changes: Mapping[str, str | None], timeout_s: float,
                              *, wait: bool = True) -> run_v2.Service | None:
        """Set (None: remove) service annotations in a PATCH whose mask names only `annotations`, guarded by
        the service's etag (read again and retried on a mismatch); traffic and template stay as they are.
        The accepted PATCH has stored them (a read shows them); `wait` also waits for its operation."""
        current = await self.get_service(service)
        if current is None:
            raise StageError(f"service {service} not found")
        op, _ = await self.update_with_retry(current, lambda svc: (None, split_from_proto(svc.traffic)),
                                             update_mask=ANNOTATIONS_MASK, annotations=changes)
        if not wait:
            return None
        return await self.finish(op, f"update the annotations of {service}", timeout_s)

    async def wait_served(self, service: str, *, timeout_s: float, interval_s: float = 0.2) -> run_v2.Service:
        """The service once Cloud Run has reconciled it (`reconciling` false, `observed_generation` caught up
        with `generation`), so its `traffic_statuses` say what serves; the last read when the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            svc = await self.get_service(service)
            if svc is None:
                raise StageError(f"service {service} disappeared while its traffic was being verified")
            if (not svc.reconciling and svc.observed_generation >= svc.generation) or time.monotonic() >= deadline:
                return svc
            await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
            interval_s = min(interval_s * 1.5, 2.0)

    async def revision_ready(self, service: str, revision: str) -> bool:
        """Whether the revision exists and its Ready condition SUCCEEDED."""
        try:
            rev = await self.get_revision(service, revision)
        except StageError as exc:
            if "not found" in exc.message:
                return False
            raise
        return ready_condition(rev.conditions).ready is True

    async def wait_revision_ready(self, service: str, revision: str, *, timeout_s: float,
                                  interval_s: float = 0.2, fast_for_s: float = 30.0,
                                  on_poll: Callable[[float], Awaitable[None]] | None = None,
                                  ) -> tuple[run_v2.Revision | None, ReadyState]:
        """Poll the revision's own Ready condition until it is terminal or the deadline passes: every
        `interval_s` for the first `fast_for_s` (most revisions start within it; Ready is seen within
        one interval), then backing off to every 2 s (bounded reads for slow starts). `on_poll` hears
        the seconds waited after each poll that found the revision not Ready yet (a progress display)."""
        started = time.monotonic()
        fast_until = time.monotonic() + fast_for_s
        deadline = time.monotonic() + timeout_s
        rev: run_v2.Revision | None = None
        state = ReadyState(None, "revision not created yet", "", None)
        while True:
            try:
                rev = await self.get_revision(service, revision)
                state = ready_condition(rev.conditions)
                if state.ready is not None:
                    return rev, state
            except StageError as exc:
                if "not found" not in exc.message:
                    raise
            if time.monotonic() >= deadline:
                return rev, ReadyState(None, f"not Ready after {timeout_s:.0f}s: {state.message}", "", None)
            if on_poll is not None:
                await on_poll(time.monotonic() - started)
            await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= fast_until:
                interval_s = min(interval_s * 1.5, 2.0)
