"""Traffic: a URL per service (weighted split over its revisions), a URL per traffic tag (that revision
only) and a front load balancer that routes to services by path prefix or Host header.

Every proxied request, including 503s and injected faults, becomes a request-log entry."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, Field, field_validator
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox import model
from sandbox.faults import FaultInjector
from sandbox.instances import RevisionInstance
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

    def instance(self, service_id: str, revision: str) -> RevisionInstance | None: ...
    def behavior(self, service_id: str) -> Behavior: ...


# ------------------------------------------------------------------ load balancer routing (pure)


class LbRoute(BaseModel):
    service: str
    path_prefix: str | None = None
    host: str | None = None
    strip_prefix: bool = True

    @field_validator("path_prefix")
    @classmethod
    def _slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        return value


class LbConfig(BaseModel):
    routes: list[LbRoute] = Field(default_factory=list)
    default_routes: bool = True  # /<service>/... and <service>.<anything> when no route matches


def _prefix_match(path: str, prefix: str) -> bool:
    bare = prefix.rstrip("/")
    return bare == "" or path == bare or path.startswith(bare + "/")


def _strip(path: str, prefix: str) -> str:
    rest = path[len(prefix.rstrip("/")):]
    return rest if rest.startswith("/") else "/" + rest


def match_route(config: LbConfig, host: str, path: str, services: set[str]) -> tuple[str, str] | None:
    """(service, path to forward) for a request to the load balancer, or None (404)."""
    hostname = host.split(":", 1)[0].lower()
    candidates = [
        r for r in config.routes
        if (r.host is None or r.host.lower() == hostname)
        and (r.path_prefix is None or _prefix_match(path, r.path_prefix))
    ]
    if candidates:
        best = max(candidates, key=lambda r: (r.host is not None, len(r.path_prefix or "")))
        forwarded = _strip(path, best.path_prefix) if best.path_prefix and best.strip_prefix else path
        return best.service, forwarded
    if not config.default_routes:
        return None
    label = hostname.split(".", 1)[0]
    if "." in hostname and label in services:
        return label, path
    first = path.lstrip("/").split("/", 1)[0]
    if first in services:
        return first, _strip(path, "/" + first)
    return None


# ------------------------------------------------------------------ forwarding


@dataclass(frozen=True)
class Target:
    service: str
    fault_key: str
    pick: Callable[[model.Service], str | None]  # revision for this request
    path: str | None = None  # forwarded path (LB strips a prefix); None = as received


def _unavailable() -> Response:
    return PlainTextResponse("Service Unavailable", status_code=503)


NO_INSTANCE = "The request was aborted because there was no available instance."


def _no_instance(instance: RevisionInstance | None) -> Response:
    """Cloud Run's answer when no instance took the request within the hold: 429 "no available instance"
    while one is still starting, 503 when the start failed (or nothing can serve)."""
    if instance is not None and instance.state == "STARTING":
        return PlainTextResponse(NO_INSTANCE, status_code=429)
    return _unavailable()


def _not_found() -> Response:
    return PlainTextResponse("Not Found", status_code=404)


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

    def _tag_app(self, service: str, tag: str) -> ASGIApp:
        def pick(svc: model.Service) -> str | None:
            return next((s.revision for s in svc.traffic_statuses if s.tag == tag and s.revision), None)

        target = Target(service, f"proxy.tag.{service}.{tag}", pick)

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
        service, path = routed
        await self.forward(scope, receive, send, Target(service, f"proxy.lb.{service}", self._split, path))

    # ---------------------------------------------------------- forwarding

    async def forward(self, scope: Scope, receive: Receive, send: Send, target: Target) -> None:
        started = time.monotonic()
        counting = _Counting(send)
        svc = self.backend.services.get(target.service)
        if svc is None:
            await _not_found()(scope, receive, counting)
            return
        revision = target.pick(svc) or ""
        body = b""
        try:
            fault = await self.faults.apply(target.fault_key)
            if fault is not None:
                await fault(scope, receive, counting)
                return
            try:
                body = await _read_body(receive)
            except ValueError:
                await PlainTextResponse("Request Entity Too Large", status_code=413)(scope, receive, counting)
                return
            instance = self.backend.instance(target.service, revision) if revision else None
            port = await instance.acquire(self.backend.behavior(target.service).cold_start_hold_s) if instance else None
            if instance is None or port is None:
                await _no_instance(instance)(scope, receive, counting)
                return
            instance.begin_request()
            try:
                await self._relay(scope, body, port, revision, target, counting)
            finally:
                instance.end_request()
        finally:
            if counting.status:
                self.log.request(
                    target.service, revision,
                    method=scope["method"], url=_request_url(scope), status=counting.status,
                    latency_s=time.monotonic() - started, user_agent=_header(scope, b"user-agent") or None,
                    request_size=len(body) or None, response_size=counting.size,
                )

    async def _relay(self, scope: Scope, body: bytes, port: int, revision: str, target: Target, send: Send) -> None:
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
                response = await self._client.send(request, stream=True)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                if attempt == 1:
                    await _unavailable()(scope, _no_receive, send)
                    return
            except httpx.TimeoutException:
                await PlainTextResponse("Gateway Timeout", status_code=504)(scope, _no_receive, send)
                return
            except httpx.TransportError:  # e.g. reset by an instance stopping under the request: as Cloud Run, 503
                await _unavailable()(scope, _no_receive, send)
                return
        assert response is not None
        try:
            out_headers = [(k.lower(), v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP]
            out_headers.append((REVISION_HEADER.encode(), revision.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                pass  # the instance went away mid-response: end what was sent
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
