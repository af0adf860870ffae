"""Serve the sandbox's logging + fault routes on a real uvicorn server on 127.0.0.1 (a free port)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from google.auth.transport.requests import Request as AuthRequest
from google.oauth2 import service_account
from starlette.applications import Starlette

from sandbox.errors import ApiError, api_error_handler
from sandbox.faults import FaultInjector, fault_routes
from sandbox.iam import ApiAuthMiddleware, Iam, iam_routes
from sandbox.logapi import EmptyPages, ListQuota, logging_routes
from sandbox.logstore import LogStore


@dataclass
class LoggingSandbox:
    store: LogStore
    faults: FaultInjector
    endpoint: str
    requests: list[str] = field(default_factory=list)  # "METHOD /path" of every request served
    credentials_file: str = ""  # a service-account key whose token_uri is this server's /token
    pages: EmptyPages = field(default_factory=EmptyPages)  # the empty-page switch of entries.list

    def credentials(self) -> service_account.Credentials:
        return service_account.Credentials.from_service_account_file(self.credentials_file)

    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Bearer <access token>` from the OAuth grant, for raw API requests."""
        creds = self.credentials().with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(AuthRequest())
        return {"Authorization": f"Bearer {creds.token}"}

    def logging_client(self) -> object:
        """The real google-cloud-logging HTTP client pointed at this server, with the key's credentials."""
        import google.cloud.logging

        os.environ.pop("GOOGLE_API_USE_MTLS_ENDPOINT", None)
        return google.cloud.logging.Client(
            project=self.store.project,
            credentials=self.credentials(),
            _use_grpc=False,
            client_options={"api_endpoint": self.endpoint},
        )


def _no_services(project: str, location: str, service_id: str) -> Any:
    raise ApiError(404, f"Resource 'projects/{project}/locations/{location}/services/{service_id}' was not found")


@contextmanager
def serve_logging(project: str, *, startup_timeout_s: float = 10.0,
                  quota: ListQuota | None = None) -> Iterator[LoggingSandbox]:
    """`quota`: the entries.list quota (default: Cloud Logging's 60 per minute per project)."""
    store, faults, iam, pages = LogStore(project), FaultInjector(), Iam(project), EmptyPages()
    app = Starlette(
        routes=[*logging_routes(store, faults, quota, pages), *fault_routes(faults),
                *iam_routes(iam, _no_services, faults.apply)],
        exception_handlers={ApiError: api_error_handler},
    )
    app.add_middleware(ApiAuthMiddleware, iam=iam)  # the Logging API wants credentials, as Google's does
    keys = Path(tempfile.mkdtemp(prefix="logging-sandbox-"))
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
        endpoint = f"http://127.0.0.1:{port}"
        key_file = iam.write_key_files(keys, f"{endpoint}/token")["credentials_file"]
        yield LoggingSandbox(store, faults, endpoint, seen, key_file, pages)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        shutil.rmtree(keys, ignore_errors=True)
