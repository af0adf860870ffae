"""Serve the sandbox's logging + fault routes on a real uvicorn server on 127.0.0.1 (a free port)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette

from sandbox.errors import ApiError, api_error_handler
from sandbox.faults import FaultInjector, fault_routes
from sandbox.logapi import logging_routes
from sandbox.logstore import LogStore


@dataclass
class LoggingSandbox:
    store: LogStore
    faults: FaultInjector
    endpoint: str
    requests: list[str] = field(default_factory=list)  # "METHOD /path" of every request served

    def logging_client(self) -> object:
        """The real google-cloud-logging HTTP client pointed at this server."""
        import google.cloud.logging
        from google.auth.credentials import AnonymousCredentials

        os.environ.pop("GOOGLE_API_USE_MTLS_ENDPOINT", None)
        return google.cloud.logging.Client(
            project=self.store.project,
            credentials=AnonymousCredentials(),
            _use_grpc=False,
            client_options={"api_endpoint": self.endpoint},
        )


@contextmanager
def serve_logging(project: str, *, startup_timeout_s: float = 10.0) -> Iterator[LoggingSandbox]:
    store, faults = LogStore(project), FaultInjector()
    app = Starlette(
        routes=[*logging_routes(store, faults), *fault_routes(faults)],
        exception_handlers={ApiError: api_error_handler},
    )
    seen: list[str] = []

    async def recording_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(f"{scope['method']} {scope['path']}")
        await app(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(recording_app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the logging test server did not start")
            time.sleep(0.01)
        yield LoggingSandbox(store, faults, f"http://127.0.0.1:{port}", seen)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
