"""Cloud Run Admin API v2, through the unmodified google-cloud-run REST client.

The same code talks to real Cloud Run (default endpoint, Application Default Credentials) and to the
sandbox (endpoint + anonymous credentials from Settings.endpoints). The client is synchronous; the
async methods run it in a worker thread so waits never block the event loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import requests
from google.api_core import exceptions as gexc
from google.api_core import operation
from google.api_core.client_options import ClientOptions
from google.api_core.future import polling
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from stagecheck.errors import StageError
from stagecheck.model import RevisionInfo, TrafficTarget
from stagecheck.settings import ServiceConfig, Settings

T = TypeVar("T")

_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = run_v2.Condition.State.CONDITION_FAILED
_OP_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.2, maximum=2.0, multiplier=1.5)
_READ_RETRY = Retry(initial=0.2, maximum=2.0, multiplier=2.0, timeout=15.0,
                    predicate=lambda e: isinstance(e, gexc.ServiceUnavailable | gexc.TooManyRequests))


_REQUEST_PREFIX = re.compile(r"^(GET|POST|PATCH|PUT|DELETE) \S+: ")


def _message(exc: gexc.GoogleAPICallError) -> str:
    """The server's message without the REST transport's "GET https://...: " prefix."""
    return _REQUEST_PREFIX.sub("", str(exc.message or "")).strip() or type(exc).__name__


def describe_api_error(exc: BaseException, what: str) -> StageError:
    """Turn a Google client / transport exception into a readable StageError.

    HTTP classes (Forbidden, Unauthorized, BadRequest...) are the parents of the gRPC-named ones
    (PermissionDenied, Unauthenticated, InvalidArgument...), so both transports land here."""
    if isinstance(exc, gexc.Forbidden):
        return StageError(f"{what}: permission denied ({_message(exc)})",
                          hint="the identity needs roles/run.admin and roles/iam.serviceAccountUser")
    if isinstance(exc, gexc.Unauthorized):
        return StageError(f"{what}: not authenticated ({_message(exc)})",
                          hint="run `gcloud auth application-default login`")
    if isinstance(exc, gexc.NotFound):
        return StageError(f"{what}: not found ({_message(exc)})")
    if isinstance(exc, gexc.BadRequest):
        return StageError(f"{what}: rejected as invalid ({_message(exc)})")
    if isinstance(exc, gexc.TooManyRequests):
        return StageError(f"{what}: quota or rate limit hit ({_message(exc)})")
    if isinstance(exc, gexc.ServiceUnavailable):
        return StageError(f"{what}: Cloud Run API unavailable ({_message(exc)})")
    if isinstance(exc, gexc.DeadlineExceeded | gexc.GatewayTimeout):
        return StageError(f"{what}: timed out ({_message(exc)})")
    if isinstance(exc, gexc.GoogleAPICallError):
        return StageError(f"{what}: {type(exc).__name__} ({_message(exc)})")
    if isinstance(exc, TimeoutError | gexc.RetryError):
        return StageError(f"{what}: timed out ({exc})")
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return StageError(f"{what}: no Google credentials found",
                          hint="run `gcloud auth application-default login` or use --sandbox")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return StageError(f"{what}: authentication failed ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return StageError(f"{what}: Cloud Run API unreachable", hint="is the endpoint right / the sandbox up?")
    if isinstance(exc, requests.exceptions.RequestException):
        return StageError(f"{what}: transport error ({type(exc).__name__})")
    return StageError(f"{what}: {type(exc).__name__}: {exc}")


# what the Google clients and their transport raise; describe_api_error turns each into a StageError
API_ERRORS = (gexc.GoogleAPIError, auth_exc.GoogleAuthError, requests.exceptions.RequestException, TimeoutError)


def split_from_proto(traffic: Sequence[Any]) -> list[TrafficTarget]:
    out = []
    for t in traffic:
        latest = t.type_ == _LATEST
        out.append(TrafficTarget(revision=None if latest else t.revision, percent=int(t.percent), tag=t.tag or None))
    return out


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


def ready_condition(conditions: Sequence[Any]) -> ReadyState:
    """The `Ready` condition, found by type (never by position)."""
    for cond in conditions:
        if cond.type_ == "Ready":
            when = proto_time(cond.last_transition_time)
            if cond.state == _SUCCEEDED:
                return ReadyState(True, cond.message, cond.reason.name if cond.reason else "", when)
            if cond.state == _FAILED:
                return ReadyState(False, cond.message, cond.reason.name if cond.reason else "", when)
            return ReadyState(None, cond.message, "", when)
    return ReadyState(None, "no Ready condition yet", "", None)


def revision_info(rev: run_v2.Revision) -> RevisionInfo:
    """What the report needs of a revision: image, resources, scaling, creation and Ready times."""
    name = rev.name.rsplit("/", 1)[-1]
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
    )


def build_template(svc: ServiceConfig, *, image: str, revision: str, labels: dict[str, str]) -> run_v2.RevisionTemplate:
    env = [run_v2.EnvVar(name=k, value=v) for k, v in sorted(svc.env.items())]
    for name, ref in sorted(svc.secrets.items()):
        secret, version = ref.rsplit(":", 1)
        env.append(run_v2.EnvVar(name=name, value_source=run_v2.EnvVarSource(
            secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version))))
    container = run_v2.Container(
        image=image,
        ports=[run_v2.ContainerPort(container_port=svc.port)],
        env=env,
        resources=run_v2.ResourceRequirements(limits={"cpu": svc.cpu, "memory": svc.memory}),
    )
    return run_v2.RevisionTemplate(
        revision=revision,
        labels=labels,
        containers=[container],
        scaling=run_v2.RevisionScaling(min_instance_count=svc.min_instances, max_instance_count=svc.max_instances),
    )


class CloudRun:
    """Services and revisions of one project/region."""

    def __init__(self, settings: Settings) -> None:
        self.project = settings.project
        self.region = settings.region
        kwargs: dict[str, Any] = {"transport": "rest"}
        if settings.endpoints.run_api:
            kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoints.run_api)
        if settings.endpoints.anonymous:
            kwargs["credentials"] = AnonymousCredentials()
        self._kwargs = kwargs
        self._services: run_v2.ServicesClient | None = None
        self._revisions: run_v2.RevisionsClient | None = None

    # -- clients are built lazily (credentials lookup happens once, on first use)
    @property
    def services(self) -> run_v2.ServicesClient:
        if self._services is None:
            self._services = run_v2.ServicesClient(**self._kwargs)
        return self._services

    @property
    def revisions(self) -> run_v2.RevisionsClient:
        if self._revisions is None:
            self._revisions = run_v2.RevisionsClient(**self._kwargs)
        return self._revisions

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def service_path(self, service: str) -> str:
        return f"{self.parent}/services/{service}"

    def revision_path(self, service: str, revision: str) -> str:
        return f"{self.service_path(service)}/revisions/{revision}"

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

    async def update_service(self, current: run_v2.Service, *, template: run_v2.RevisionTemplate | None,
                             split: Sequence[TrafficTarget]) -> operation.Operation:
        """Start a PATCH of the whole service (template and/or traffic); await it with `finish`."""
        body = run_v2.Service(current)
        if template is not None:
            body.template = template
        body.traffic = split_to_proto(split)
        name = current.name.rsplit("/", 1)[-1]
        return await self._call(f"update service {name}", lambda: self.services.update_service(service=body, timeout=30))

    async def finish(self, op: operation.Operation, what: str, timeout_s: float) -> run_v2.Service:
        """Wait for a long-running operation; its error becomes a StageError with the API's message."""
        return await self._call(what, lambda: op.result(timeout=timeout_s, polling=_OP_POLLING))

    async def set_traffic(self, service: str, split: Sequence[TrafficTarget], timeout_s: float) -> run_v2.Service:
        current = await self.get_service(service)
        if current is None:
            raise StageError(f"service {service} disappeared while shifting traffic")
        op = await self.update_service(current, template=None, split=split)
        return await self.finish(op, f"set traffic of {service}", timeout_s)

    async def wait_revision_ready(self, service: str, revision: str, *, timeout_s: float,
                                  interval_s: float = 0.2, fast_for_s: float = 30.0) -> tuple[run_v2.Revision | None, ReadyState]:
        """Poll the revision's own Ready condition until it is terminal or the deadline passes: every
        `interval_s` for the first `fast_for_s` (most revisions start within it; Ready is seen within
        one interval), then backing off to every 2 s (bounded reads for slow starts)."""
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
            await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= fast_until:
                interval_s = min(interval_s * 1.5, 2.0)
