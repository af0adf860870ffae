"""Session fixtures for tests that talk to a running sandbox through the real Google clients.

`sandbox` starts one sandbox server per test session (free ports, a temporary state dir) with
`localenv.control.start` and stops it — and removes its containers — at the end, also on failure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.api_core.future import polling
from google.auth.transport.requests import Request as AuthRequest
from google.cloud import run_v2
from google.oauth2 import service_account

from localenv.control import SandboxError, SandboxInfo, start, stop

__all__ = ["FAST_POLL", "RunClients", "clients_for", "deploy", "fidelity", "id_token", "logging_client_for", "new_service", "run_clients", "sandbox",
           "unique_name"]

# Operation polling for tests: every 10-50 ms instead of the client's 1 s x1.5 backoff.
FAST_POLL = polling.DEFAULT_POLLING.with_delay(initial=0.01, maximum=0.05, multiplier=1.0)
SESSION_STARTUP_TIMEOUT_S = 30.0  # a revision that never listens fails after this (tests use probes to be faster)


@dataclass
class RunClients:
    services: run_v2.ServicesClient
    revisions: run_v2.RevisionsClient
    parent: str
    admin_url: str
    lb_url: str
    credentials_file: str = ""

    def invoke_headers(self, audience: str) -> dict[str, str]:
        """An Authorization header with a Google ID token of the sandbox's deployer for `audience`
        (the service URL): what every request to a private service needs."""
        return {"Authorization": f"Bearer {id_token(self.credentials_file, audience)}"}

    def service_name(self, service_id: str) -> str:
        return f"{self.parent}/services/{service_id}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = httpx.request(method, f"{self.admin_url}{path}", json=body, timeout=10, trust_env=False)
        resp.raise_for_status()
        return resp.json()


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def sandbox(docker_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxInfo]:
    state_dir = tmp_path_factory.mktemp("sandbox-state")
    try:
        info = start(state_dir, port=0, lb_port=0, docker_host=docker_env.docker_host, registry=docker_env.registry,
                     startup_timeout_s=SESSION_STARTUP_TIMEOUT_S, cold_start_hold_s=10.0, ready_timeout=30.0)
    except SandboxError as exc:
        stop(state_dir)
        pytest.fail(f"sandbox did not start: {exc}", pytrace=False)
    try:
        yield info
    finally:
        stop(state_dir)


_ID_TOKENS: dict[tuple[str, str], str] = {}


def id_token(credentials_file: str, audience: str) -> str:
    """A Google ID token minted by google-auth's ordinary code from the key file (cached per audience)."""
    key = (credentials_file, audience)
    if key not in _ID_TOKENS:
        creds = service_account.IDTokenCredentials.from_service_account_file(credentials_file,
                                                                              target_audience=audience)
        creds.refresh(AuthRequest())
        _ID_TOKENS[key] = str(creds.token)
    return _ID_TOKENS[key]


def clients_for(info: SandboxInfo) -> RunClients:
    """run_v2 REST clients with the sandbox's service-account key, as a deployer would use them."""
    credentials = service_account.Credentials.from_service_account_file(info.credentials_file)
    options = {"api_endpoint": info.run_api}
    return RunClients(
        services=run_v2.ServicesClient(transport="rest", credentials=credentials, client_options=options),
        revisions=run_v2.RevisionsClient(transport="rest", credentials=credentials, client_options=options),
        parent=info.parent,
        admin_url=info.admin_url,
        lb_url=info.lb_url,
        credentials_file=info.credentials_file,
    )


def logging_client_for(info: SandboxInfo) -> Any:
    """google-cloud-logging's HTTP client with the sandbox's service-account key (the Logging API wants it)."""
    from google.cloud import logging as gcl

    credentials = service_account.Credentials.from_service_account_file(info.credentials_file)
    return gcl.Client(project=info.project, credentials=credentials, _use_grpc=False,
                      client_options={"api_endpoint": info.logging_api})


@pytest.fixture(scope="session")
def run_clients(sandbox: SandboxInfo) -> RunClients:
    return clients_for(sandbox)


@pytest.fixture
def fidelity(run_clients: RunClients) -> Iterator[Callable[..., dict[str, str]]]:
    """Set the sandbox's unsure rules (sandbox/fidelity.py) for one test: `fidelity(etag_mismatch="...")`;
    every switch is back at its default after the test."""
    def set_switches(**switches: str) -> dict[str, str]:
        return dict(run_clients.admin("PUT", "/sandbox/v1/fidelity", switches))

    yield set_switches
    run_clients.admin("PUT", "/sandbox/v1/fidelity", {})


def deploy(
    clients: RunClients,
    service_id: str,
    image: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    **template: Any,
) -> run_v2.Service:
    """Create a service with one container and wait for the operation."""
    container = run_v2.Container(image=image, env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()])
    service = run_v2.Service(template=run_v2.RevisionTemplate(containers=[container], **template))
    op = clients.services.create_service(parent=clients.parent, service_id=service_id, service=service)
    result: run_v2.Service = op.result(polling=FAST_POLL, timeout=timeout)
    return result


@dataclass
class _Created:
    clients: RunClients
    names: list[str] = field(default_factory=list)

    def __call__(self, prefix: str = "t") -> str:
        name = unique_name(prefix)
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            try:
                self.clients.services.delete_service(name=self.clients.service_name(name)).result(
                    polling=FAST_POLL, timeout=30)
            except gexc.NotFound:
                pass


@pytest.fixture
def new_service(run_clients: RunClients) -> Iterator[Callable[[str], str]]:
    """A unique service id per call; every service created under it is deleted after the test."""
    created = _Created(run_clients)
    yield created
    created.cleanup()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
