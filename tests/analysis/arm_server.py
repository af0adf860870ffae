"""A real HTTP server on 127.0.0.1 (starlette on uvicorn, in a thread) that records every request: one
per arm in the load-generator tests and benchmark, and one standing for "anywhere else"."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route


@dataclass
class Hit:
    method: str
    path: str
    user_agent: str
    at: float


@dataclass
class Gauge:
    """Requests being served at once, across every server that shares it."""
    now: int = 0
    peak: int = 0


@dataclass
class ArmServer:
    status: int = 200
    delay_s: float = 0.0
    redirect_to: str = ""  # /redirect answers 302 to this URL
    throttle_first: int = 0  # the first N requests answer 429 with Retry-After: 1
    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    base: str = ""
    gauge: Gauge = field(default_factory=Gauge)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._endpoint, methods=["GET", "HEAD", "POST"])])

    async def _endpoint(self, request: Request) -> Response:
        self.hits.append(Hit(request.method, request.url.path, request.headers.get("user-agent", ""), time.monotonic()))
        self.in_flight += 1
        self.gauge.now += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.gauge.peak = max(self.gauge.peak, self.gauge.now)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if len(self.hits) <= self.throttle_first:
                return Response("slow down", status_code=429, headers={"Retry-After": "1"})
            if request.url.path == "/redirect" and self.redirect_to:
                return RedirectResponse(self.redirect_to, status_code=302)
            return Response("ok", status_code=self.status)
        finally:
            self.in_flight -= 1
            self.gauge.now -= 1


@contextmanager
def serving(server: ArmServer) -> Iterator[ArmServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
    sock.bind(("127.0.0.1", 0))
    server.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn.Server(uvicorn.Config(server.app(), log_level="warning", lifespan="off",
                                       timeout_graceful_shutdown=1, access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test HTTP server did not start")
        time.sleep(0.01)
    try:
        yield server
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()
