"""Fixtures for tests on a real `prefect server start` (not the test harness): a server on a free
port with its SQLite under a temporary state dir, the deployments registered the way `stagecheck
serve` registers them, a real process worker, a local webhook receiver, and a throwaway git
repository with the sample service. Everything started is stopped by pid at the end, also when a
test fails (the worker gets SIGTERM, then SIGINT).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deployments.definitions import Definition, Environment, Target, recovery_entry
from deployments.serve import Layout, api_url, down, start_server, start_worker

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "examples" / "sample-service"
POOL = "stagecheck"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    url: str
    layout: Layout


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    layout = Layout(tmp_path_factory.mktemp("prefect-state"))
    port = free_port()
    try:
        start_server(layout, port)
        yield LocalServer(url=api_url(port), layout=layout)
    finally:
        down(layout)  # worker (SIGTERM, SIGINT) and server, by recorded pid and start time


@dataclass
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """A local stand-in for a Slack incoming webhook (nothing else can receive here)."""

    url: str
    token: str
    received: list[Received] = field(default_factory=list)


@contextmanager
def serve_posts(on_post: Callable[[str, Any], None]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 that hands each POST's path and JSON body to `on_post` and answers 200 `ok`
    (a local stand-in for a webhook: nothing else can receive here); yields its port, stopped on exit."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            on_post(self.path, json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    received: list[Received] = []
    token = secrets.token_hex(16)
    with serve_posts(lambda path, body: received.append(Received(path=path, body=body))) as port:
        yield WebhookReceiver(url=f"http://127.0.0.1:{port}/services/T0/B0/{token}", token=token, received=received)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Project:
    """A throwaway repository with the sample service and a stagecheck.toml of five services:
    `a` (passes; validated twice), `b` (fails its smoke test), `m` (validated on merge events),
    `nolimit` (its concurrency limit is removed after the setup), `r` (a canary killed mid-release)."""

    root: Path
    config: Path
    sha: str
    services: dict[str, str]
    state_dir: str
    repo_name: str
    release: Path  # `a` holds its slot until this file exists (the test creates it)

    def request(self, service: str, **extra: Any) -> dict[str, Any]:
        return {"config": str(self.config), "services": [self.services[service]], "sandbox": True,
                "state_dir": self.state_dir, **extra}


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, sandbox: Any, sample_image: Any) -> Project:
    # sample_image makes sure the sample Dockerfile's base image is in the engine
    root = tmp_path_factory.mktemp("project") / "repo"
    shutil.copytree(SAMPLE, root / "svc", ignore=shutil.ignore_patterns("README.md", "bin"))
    suffix = uuid.uuid4().hex[:6]
    services = {key: f"sc-{key}-{suffix}" for key in ("a", "b", "m", "nolimit", "r")}
    lines = [
        'report_dir = "reports"',
        "[probes]", "deadline_s = 20", "consecutive_successes = 2", "initial_backoff_s = 0.1",
        "max_backoff_s = 0.5", "success_interval_s = 0.05",
        "[traffic]", "steps = [100]", "bake_s = 1",  # a short bake keeps these runs quick
        "[logs]", "settle_s = 5",
    ]
    # `a` and `b` meet in their smoke stage (each marks its arrival, then waits for the other's):
    # both can only finish if their service work runs at the same time. `a` then holds its slot
    # until the test releases it, which it does once both `a` runs are Running (so the second one
    # really waits for the slot, however slowly the worker starts its process); `b` fails its smoke
    # gate on purpose.
    rendezvous = root.parent / "rendezvous"
    rendezvous.mkdir()
    wait_for = "for i in $(seq 1200); do [ -e {f} ] && break; sleep 0.1; done && [ -e {f} ]"
    meet = "touch {rdv}/{me} && " + wait_for.format(f="{rdv}/{other}")
    smoke = {"a": meet.format(rdv=rendezvous, me="a", other="b") + " && " + wait_for.format(f=rendezvous / "release"),
             "b": meet.format(rdv=rendezvous, me="b", other="a") + " && echo b fails on purpose && exit 1"}
    for key, name in services.items():
        lines += ["[[services]]", f'name = "{name}"', 'source_dir = "svc"']
        if key in smoke:
            lines += ["[[services.smoke]]", 'name = "rendezvous"', f"command = '{smoke[key]}'", "timeout_s = 150"]
    config = root / "stagecheck.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("\n".join(lines) + "\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    _git(root, "config", "user.email", "ci@example.com")
    _git(root, "config", "user.name", "ci")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "sample")
    return Project(root=root, config=config, sha=_git(root, "rev-parse", "HEAD"), services=services,
                   state_dir=sandbox.state_dir, repo_name=f"shop-{suffix}", release=rendezvous / "release")


@dataclass
class Deployed:
    server: LocalServer
    project: Project
    webhook: WebhookReceiver
    targets: dict[str, Target]
    ids: dict[str, Any]


def targets_for(project: Project) -> dict[str, Target]:
    """The deployments under test, as a targets file would declare them."""
    from flows.params import ValidationRequest

    base = ValidationRequest(config=str(project.config), sandbox=True, state_dir=project.state_dir)
    return {
        "manual": Target(name="manual", request=base, cron=None, merge_trigger=False),
        "nightly": Target(name="nightly", request=base.model_copy(update={"dry_run": True}), cron="0 6 * * *",
                          timezone="Europe/Berlin", merge_trigger=False),
        "production": Target(name="production", environment=Environment.PRODUCTION, request=base,
                             cron="0 6 * * *", timezone="Europe/Berlin"),
        "on-merge": Target(name="on-merge", request=base.model_copy(update={
            "services": [project.services["m"]], "dry_run": True}), cron=None, merge_repo=project.repo_name,
            merge_branch="main"),
    }


@pytest.fixture(scope="session")
def deployed(prefect_server: LocalServer, project: Project, webhook: WebhookReceiver) -> Deployed:
    """Setup as `stagecheck serve` does it (pool, limits, deployments), the webhook in a Secret
    block, one limit removed again, then a worker polling every second."""
    import asyncio

    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.serve import setup
    from stagecheck.concurrency import limit_name
    from tasks.notify import WEBHOOK_SECRET_BLOCK

    targets = targets_for(project)

    async def prepare() -> list[Any]:
        from prefect import get_client

        definitions = [*(t.definition() for t in targets.values()), Definition.model_validate(recovery_entry())]
        done = await setup(definitions, pool=POOL, repo_root=REPO_ROOT)
        assert not done.without_services, done.without_services
        await Secret(value=webhook.url).asave(WEBHOOK_SECRET_BLOCK, overwrite=True)
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(limit_name(project.services["nolimit"]))
        return done.deployment_ids[:len(targets)]

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        ids = asyncio.run(prepare())
    start_worker(prefect_server.layout, prefect_server.url, POOL, query_seconds=1)
    return Deployed(server=prefect_server, project=project, webhook=webhook, targets=targets,
                    ids=dict(zip(targets, ids, strict=True)))

