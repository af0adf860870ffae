"""Traffic: a URL per service (weighted split over its revisions), a URL per traffic tag (that revision
only) and a front load balancer that routes to services by path prefix or Host header.

Every proxied request, including 503s and injected faults, becomes a request-log entry."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, Field, field_validator, model_validator
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox import model
from sandbox.faults import FaultInjector
from sandbox.fidelity import Fidelity
from sandbox.instances import NO_INSTANCE_MESSAGE, NoAvailableInstance, RevisionInstance
from sandbox.listeners import ListenerPool
from sandbox.orchestrator import Behavior
from sandbox.runlog import RunLog

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "proxy-connection",
})
REVISION_HEADER = "x-sandbox-revision"
MAX_BODY = 32 * 2**20  # Cloud Run's request size limit (HTTP/1)


class Backend(Protocol):
    services: dict[str, model.Service]
    fidelity: Fidelity

    def instance(self, service_id: str, revision: str) -> RevisionInstance | None: ...
    def behavior(self, service_id: str) -> Behavior: ...


# ------------------------------------------------------------------ load balancer routing (pure)


class LbRoute(BaseModel):
    """One route of the sandbox's URL map. The backend is a service, or (with `url_mask`) a serverless NEG
    whose URL mask picks the service and tag from the request's host and path, e.g.
    `<tag>.tags.example.test/<service>` maps `sc-1.tags.example.test/shop/x` to tag sc-1 of shop.
    Like a URL map, the route forwards the path unchanged unless `path_prefix_rewrite` replaces the
    matched `path_prefix` (urlRewrite.pathPrefixRewrite)."""

    service: str | None = None
    path_prefix: str | None = None
    host: str | None = None
    path_prefix_rewrite: str | None = None
    url_mask: str | None = None

    @field_validator("path_prefix", "path_prefix_rewrite")
    @classmethod
    def _slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/'")
        if value is not None and len(value) > 1024:
            raise ValueError("at most 1024 characters")
        return value

    @field_validator("url_mask")
    @classmethod
    def _mask(cls, value: str | None) -> str | None:
        if value is not None and "<service>" not in value:
            raise ValueError("a URL mask must contain <service>")
        return value

    @model_validator(mode="after")
    def _backend(self) -> LbRoute:
        if (self.service is None) == (self.url_mask is None):
            raise ValueError("a route names exactly one of service or url_mask")
        if self.path_prefix_rewrite is not None and self.path_prefix is None:
            raise ValueError("path_prefix_rewrite needs a path_prefix to replace")
        return self


class LbConfig(BaseModel):
    routes: list[LbRoute] = Field(default_factory=list)
    # when no route matches: Host <service>.<anything> (path unchanged) and /<service>/... with the
    # explicit rewrite of /<service> to / (the URL map the sandbox ships with; see docs/sandbox.md)
    default_routes: bool = True


@dataclass(frozen=True)
class LbMatch:
    service: str
    path: str  # the path forwarded to the service
    tag: str | None = None  # a URL mask routed to this traffic tag


_MASK_TOKEN = r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"


def _mask_regex(part: str) -> str:
    out = re.escape(part)
    for token in ("service", "tag"):
        out = out.replace(re.escape(f"<{token}>"), f"(?P<{token}>{_MASK_TOKEN})")
    return out


def match_mask(mask: str, hostname: str, path: str) -> tuple[str, str | None] | None:
    """(service, tag) that a serverless NEG URL mask parses from a request, or None."""
    host_part, _, path_part = mask.partition("/")
    groups: dict[str, str] = {}
    if host_part:
        m = re.fullmatch(_mask_regex(host_part.lower()), hostname)
        if m is None:
            return None
        groups.update({k: v for k, v in m.groupdict().items() if v})
    if path_part:
        m = re.match("/" + _mask_regex(path_part.strip("/")) + r"(?:/|$)", path)
        if m is None:
            return None
        groups.update({k: v for k, v in m.groupdict().items() if v})
    if "service" not in groups:
        return None
    return groups["service"], groups.get("tag")


def _prefix_match(path: str, prefix: str) -> bool:
    bare = prefix.rstrip("/")
    return bare == "" or path == bare or path.startswith(bare + "/")


def _rewrite(path: str, prefix: str, replacement: str) -> str:
    """urlRewrite.pathPrefixRewrite: the matched prefix of the path is replaced by `replacement`."""
    rest = path[len(prefix.rstrip("/")):]
    if not rest:
        return replacement
    return replacement.rstrip("/") + (rest if rest.startswith("/") else "/" + rest)


def match_route(config: LbConfig, host: str, path: str, services: set[str]) -> LbMatch | None:
    """Where the load balancer sends a request (service, forwarded path, tag), or None (404)."""
    hostname = host.split(":", 1)[0].lower()
    candidates: list[tuple[LbRoute, str, str | None]] = []
    for r in config.routes:
        if (r.host is not None and r.host.lower() != hostname) or (
            r.path_prefix is not None and not _prefix_match(path, r.path_prefix)
        ):
            continue
        if r.url_mask is not None:
            parsed = match_mask(r.url_mask, hostname, path)
            if parsed is not None:
                candidates.append((r, *parsed))
        elif r.service is not None:
            candidates.append((r, r.service, None))
    if candidates:
        best, service, tag = max(candidates, key=lambda c: (c[0].host is not None, len(c[0].path_prefix or "")))
        forwarded = path
        if best.path_prefix is not None and best.path_prefix_rewrite is not None:
            forwarded = _rewrite(path, best.path_prefix, best.path_prefix_rewrite)
        return LbMatch(service, forwarded, tag)
    if not config.default_routes:
        return None
    label = hostname.split(".", 1)[0]
    if "." in hostname and label in services:
        return LbMatch(label, path)
    first = path.lstrip("/").split("/", 1)[0]
    if first in services:
        return LbMatch(first, _rewrite(path, "/" + first, "/"))
    return None


# ------------------------------------------------------------------ forwarding


@dataclass(frozen=True)
class Target:
    service: str
    fault_key: str
    pick: Callable[[model.Service], str | None]  # revision for this request
    path: str | None = None  # forwarded path (a URL map rewrite); None = as received
    via: Literal["run.app", "lb"] = "run.app"  # which ingress path the request takes
    tag_url: str | None = None  # the tag whose own URL the request came in by (its ID-token audience may differ)


def _unavailable() -> Response:
    return PlainTextResponse("Service Unavailable", status_code=503)


# the platform's words in a request entry's textPayload (public request-log dumps)
READINESS_FAILED_MESSAGE = "The request failed because the instance failed the readiness check."
TIMEOUT_MESSAGE = ("The request has been terminated because it has reached the maximum request timeout. To change "
                   "this limit, see https://cloud.google.com/run/docs/configuring/request-timeout")
MALFORMED_MESSAGE = ("The request failed because either the HTTP response was malformed or connection to the "
                     "instance had an error.")


def _timed_out() -> Response:
    return PlainTextResponse(TIMEOUT_MESSAGE, status_code=504)


def cold_start_answer(starting: bool) -> Response:
    """Cloud Run's answer to a request no instance took within the cold-start hold (fidelity `cold_request`:
    the service's hold, or the request timeout): 429 "no available instance" while an instance is still
    starting, 503 when the start failed (nothing can serve)."""
    return _no_instance() if starting else _unavailable()


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)


def _no_instance() -> Response:
    return PlainTextResponse(NO_INSTANCE_MESSAGE, status_code=429)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError("request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _Counting:
    """Wraps `send` to learn the status and the number of body bytes sent."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.size = 0

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body":
            self.size += len(message.get("body", b""))
        await self._send(message)


class ProxyHub:
    """Owns the proxy listeners (service and tag URLs, the load balancer) and forwards requests."""

    def __init__(self, faults: FaultInjector, log: RunLog, pool: ListenerPool, rng: random.Random | None = None) -> None:
        self.faults = faults
        self.log = log
        self.pool = pool
        self.rng = rng or random.Random()
        self.lb = LbConfig()
        self.lb_port: int | None = None
        self._backend: Backend | None = None
        self.invoker: Callable[[model.Service, Scope, str | None], Response | None] | None = None  # sandbox/iam.py
        self._service_ports: dict[str, int] = {}
        self._tag_ports: dict[tuple[str, str], int] = {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=3600.0, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
            trust_env=False,
        )

    def attach(self, backend: Backend) -> None:
        self._backend = backend

    @property
    def backend(self) -> Backend:
        assert self._backend is not None, "ProxyHub.attach() not called"
        return self._backend

    # ---------------------------------------------------------- listeners (orchestrator's Listeners protocol)

    async def open_service(self, service: str) -> str:
        port = await self.pool.open(self._service_app(service), proxy=True)
        self._service_ports[service] = port
        return f"http://127.0.0.1:{port}"

    async def open_tag(self, service: str, tag: str) -> str:
        port = await self.pool.open(self._tag_app(service, tag), proxy=True)
        self._tag_ports[(service, tag)] = port
        return f"http://127.0.0.1:{port}"

    async def close_tag(self, service: str, tag: str) -> None:
        port = self._tag_ports.pop((service, tag), None)
        if port is not None:
            await self.pool.close(port)

    async def close_service(self, service: str) -> None:
        port = self._service_ports.pop(service, None)
        if port is not None:
            await self.pool.close(port)

    async def open_lb(self, port: int) -> str:
        self.lb_port = await self.pool.open(self._lb_app, port, proxy=True)
        return f"http://127.0.0.1:{self.lb_port}"

    async def aclose(self) -> None:
        await self._client.aclose()

    def describe(self) -> dict[str, Any]:
        return {
            "lb_port": self.lb_port,
            "services": dict(self._service_ports),
            "tags": {f"{s}/{t}": p for (s, t), p in self._tag_ports.items()},
            "lb": self.lb.model_dump(),
        }

    # ---------------------------------------------------------- apps

    def _split(self, svc: model.Service) -> str | None:
        return model.pick_revision(svc.traffic_statuses, self.rng.random())

    def _service_app(self, service: str) -> ASGIApp:
        target = Target(service, f"proxy.service.{service}", self._split)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await self.forward(scope, receive, send, target)

        return app

    @staticmethod
    def _tag_pick(tag: str) -> Callable[[model.Service], str | None]:
        def pick(svc: model.Service) -> str | None:
            return next((s.revision for s in svc.traffic_statuses if s.tag == tag and s.revision), None)

        return pick

    def _tag_app(self, service: str, tag: str) -> ASGIApp:
        target = Target(service, f"proxy.tag.{service}.{tag}", self._tag_pick(tag), tag_url=tag)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await self.forward(scope, receive, send, target)

        return app

    async def _lb_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        host = _header(scope, b"host")
        routed = match_route(self.lb, host, scope["path"], set(self.backend.services))
        if routed is None:
            await _not_found()(scope, receive, send)
            return
        pick = self._split if routed.tag is None else self._tag_pick(routed.tag)
        await self.forward(scope, receive, send,
                           Target(routed.service, f"proxy.lb.{routed.service}", pick, routed.path, via="lb"))

    # ---------------------------------------------------------- forwarding

    async def forward(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        started = time.monotonic()
        arrived = datetime.now(UTC)  # the request entry's timestamp; it is written when the answer is done
        counting = _Counting(send)
        note: list[str] = []  # the platform's words on a refusal or timeout (the entry's textPayload)
        svc = self.backend.services.get(target.service)
        if svc is None:
            await _not_found()(scope, receive, counting)
            return
        if not model.ingress_admits(svc.spec.get("ingress"), target.via,
                                    from_vpc=self.backend.behavior(target.service).vpc_clients):
            # closed by the service's ingress setting: the request never reaches it (404 as observed)
            await _not_found()(scope, receive, send)
            return
        revision = target.pick(svc) or ""
        body = b""
        instance_id: str | None = None
        try:
            denied = self.invoker(svc, scope, target.tag_url) if self.invoker is not None else None  # 401/403 first
            if denied is not None:
                await denied(scope, receive, counting)
                return
            fault, words = await self.faults.apply_noted(target.fault_key)
            if fault is not None:  # the front end answered: no instance saw it; the fault's message is logged
                note += [words] if words else []
                await fault(scope, receive, counting)
                return
            try:
                body = await _read_body(receive)
            except ValueError:
                await PlainTextResponse("Request Entity Too Large", status_code=413)(scope, receive, counting)
                return
            instances = self.backend.instance(target.service, revision) if revision else None
            behavior = self.backend.behavior(target.service)
            # a cold request is held the cold-start hold, or until served (fidelity `cold_request`, UNSURE)
            hold = behavior.cold_start_hold_s if self.backend.fidelity.cold_request == "hold_then_429" \
                else instances.request_timeout_s - (time.monotonic() - started) if instances else 0.0
            try:
                instance = await instances.acquire(hold, behavior.queue_timeout_s) if instances else None
            except NoAvailableInstance:
                note.append(NO_INSTANCE_MESSAGE)
                await _no_instance()(scope, receive, counting)
                return
            if instance is None or instance.port is None:
                if instance is not None:
                    instance.end_request()
                starting = instances is not None and any(i.state == "STARTING" for i in instances.instances)
                note.append(NO_INSTANCE_MESSAGE if starting else READINESS_FAILED_MESSAGE)
                await cold_start_answer(starting)(scope, receive, counting)
                return
            instance_id = instance.instance_id
            deadline = started + (instances.request_timeout_s if instances is not None else 300.0)
            try:
                await self._relay(scope, body, instance.port, revision, target, counting, deadline, note)
            finally:
                instance.end_request()
        finally:
            if counting.status:
                self.log.request(
                    target.service, revision,
                    method=scope["method"], url=_request_url(scope), status=counting.status,
                    latency_s=time.monotonic() - started, user_agent=_header(scope, b"user-agent") or None,
                    request_size=len(body) or None, response_size=counting.size, instance_id=instance_id,
                    timestamp=arrived, text=" ".join(note) or None,
                )

    async def _relay(self, scope: Scope, body: bytes, port: int, revision: str, target: Target, send: Send,
                     deadline: float, note: list[str]) -> None:
        """Forward to the instance; no answer by `deadline` (arrival + the revision's `timeout`) is a 504,
        as Cloud Run answers past the request timeout; a body still streaming then is cut."""
        path = target.path if target.path is not None else scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP]
        client_ip = (scope.get("client") or ("127.0.0.1", 0))[0]
        headers += [(b"x-forwarded-for", client_ip.encode()), (b"x-forwarded-proto", b"http")]
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        response: httpx.Response | None = None
        for attempt in range(2):  # a pooled connection to a stopped instance may be stale: retry once
            try:
                response = await asyncio.wait_for(self._client.send(request, stream=True),
                                                  max(0.0, deadline - time.monotonic()))
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                if attempt == 1:
                    note.append(MALFORMED_MESSAGE)
                    await _unavailable()(scope, _no_receive, send)
                    return
            except (TimeoutError, httpx.TimeoutException):
                note.append(TIMEOUT_MESSAGE)
                await _timed_out()(scope, _no_receive, send)
                return
            except httpx.TransportError:  # e.g. reset by an instance stopping under the request: as Cloud Run, 503
                note.append(MALFORMED_MESSAGE)
                await _unavailable()(scope, _no_receive, send)
                return
        assert response is not None
        try:
            out_headers = [(k.lower(), v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
            out_headers.append((REVISION_HEADER.encode(), revision.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            try:
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (httpx.HTTPError, TimeoutError):
                pass  # the instance went away mid-response, or the request timeout: end what was sent
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


def _request_url(scope: Scope) -> str:
    host = _header(scope, b"host") or "127.0.0.1"
    query = scope.get("query_string", b"").decode("latin-1")
    return f"http://{host}{scope.get('raw_path', scope['path'].encode()).decode('latin-1')}" + (f"?{query}" if query else "")
