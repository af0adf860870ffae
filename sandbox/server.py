"""The sandbox server: one asyncio loop serving the Run API + Logging API + admin app, the load
balancer, and a proxy listener per service and per traffic tag."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.errors import ApiError, api_error_handler, google_error
from sandbox.faults import FaultInjector, fault_routes
from sandbox.fidelity import Fidelity
from sandbox.iam import ApiAuthMiddleware, Iam, iam_routes
from sandbox.listeners import ListenerPool
from sandbox.logapi import EmptyPages, ListQuota, logging_routes
from sandbox.logstore import LogStore
from sandbox.orchestrator import Behavior, Orchestrator, SandboxConfig
from sandbox.proxy import LbConfig, ProxyHub
from sandbox.registry_gate import GOOGLE_USER, registry_gate
from sandbox.runapi import run_routes
from sandbox.runlog import RunLog
from sandbox.runtime import DockerRuntime
from sandbox.statefiles import SERVER_FILE


@dataclass(frozen=True)
class ServeOptions:
    state_dir: Path
    port: int = 8780
    lb_port: int = 8781
    project: str = "stagecheck-sandbox"
    region: str = "europe-west1"
    registry: str = "127.0.0.1:5000"
    docker_host: str = "unix:///var/run/docker.sock"
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    startup_timeout_s: float = 240.0
    cold_start_hold_s: float = 10.0
    log_list_per_minute: int = 60  # Cloud Logging's entries.list quota per project (cannot be raised)


class BehaviorBody(BaseModel):
    cold_start_hold_s: float | None = None
    scale_to_zero_after_s: float | None = None
    reconcile_delay_s: float | None = None
    warm_instances: int | None = Field(None, ge=1)
    queue_timeout_s: float | None = None
    vpc_clients: bool | None = None

    @field_validator("cold_start_hold_s", "scale_to_zero_after_s", "reconcile_delay_s", "queue_timeout_s")
    @classmethod
    def _non_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError("must be >= 0")
        return value


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid JSON payload received: {exc.msg}.") from None


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    fld = ".".join(str(p) for p in first["loc"]) or "body"
    return ApiError(400, f"{fld}: {first['msg']}", field=fld)


class SandboxServer:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.config = SandboxConfig(
            project=options.project, region=options.region, instance_id=options.instance_id,
            startup_timeout_s=options.startup_timeout_s, cold_start_hold_s=options.cold_start_hold_s,
        )
        self.store = LogStore(options.project)
        self.faults = FaultInjector()
        self.log = RunLog(self.store, options.project, options.region)
        self.runtime = DockerRuntime(options.docker_host, options.instance_id)
        self.pool = ListenerPool()
        self.list_quota = ListQuota(options.log_list_per_minute)
        self.empty_pages = EmptyPages()
        self.hub = ProxyHub(self.faults, self.log, self.pool)
        self.orch = Orchestrator(self.config, self.runtime, self.log, self.hub)
        self.hub.attach(self.orch)
        self.iam = Iam(options.project)
        self.registry_gates: dict[str, list[str]] = {}  # host -> members of its authenticated requests
        self.runtime.registry_auth = lambda host: (
            {"username": GOOGLE_USER, "password": self.iam.service_agent_token()} if host in self.registry_gates
            else None)
        self.hub.invoker = self.iam.invoke_gate
        self.key_files: dict[str, str] = {}
        self.stopping = asyncio.Event()
        self.api_url = ""
        self.lb_url = ""

    # ------------------------------------------------------------ admin

    def admin_routes(self) -> list[BaseRoute]:
        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok", "instance_id": self.options.instance_id})

        async def status(request: Request) -> Response:
            containers = [asdict(c) for c in await self.runtime.containers()]
            return JSONResponse({
                "instance_id": self.options.instance_id, "pid": os.getpid(), "project": self.options.project,
                "region": self.options.region, "run_api": self.api_url, "lb_url": self.lb_url,
                "listeners": self.pool.ports, "proxy": self.hub.describe(), **self.orch.describe(),
                "containers": containers,
                "logging": {"list_quota_per_minute": self.list_quota.per_minute,
                            "list_rejected": self.list_quota.rejected,
                            "empty_page_every": self.empty_pages.every,
                            "empty_pages_answered": self.empty_pages.answered},
            })

        async def shutdown(request: Request) -> Response:
            self.stopping.set()
            return JSONResponse({"status": "stopping"}, status_code=202)

        async def get_lb(request: Request) -> Response:
            return JSONResponse(self.hub.lb.model_dump())

        async def put_lb(request: Request) -> Response:
            body = await _json(request)
            try:
                self.hub.lb = LbConfig.model_validate({"routes": body} if isinstance(body, list) else body)
            except ValidationError as exc:
                raise _validation_error(exc) from None
            return JSONResponse(self.hub.lb.model_dump())

        async def put_logging(request: Request) -> Response:
            """{"empty_page_every": N}: every N-th entries.list answers an empty page with a token (0: never)."""
            body = await _json(request)
            every = body.get("empty_page_every") if isinstance(body, dict) else None
            if isinstance(every, bool) or not isinstance(every, int) or every < 0:
                raise ApiError(400, "empty_page_every must be an integer >= 0", field="empty_page_every")
            self.empty_pages.every, self.empty_pages.calls = every, 0
            return JSONResponse({"empty_page_every": every})

        async def scale_in(request: Request) -> Response:
            """{"instances": N, "revision": optional}: stop N idle instances as Cloud Run's scale-in does."""
            body = await _json(request)
            body = body if isinstance(body, dict) else {}
            count, revision = body.get("instances", 1), body.get("revision")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ApiError(400, "instances must be an integer >= 1", field="instances")
            if revision is not None and not isinstance(revision, str):
                raise ApiError(400, "revision must be a string", field="revision")
            stopped = await self.orch.scale_in(request.path_params["service"], revision, count)
            return JSONResponse({"stopped": stopped})

        async def get_behavior(request: Request) -> Response:
            return JSONResponse(asdict(self.orch.behavior(request.path_params["service"])))

        async def put_behavior(request: Request) -> Response:
            try:
                body = BehaviorBody.model_validate(await _json(request))
            except ValidationError as exc:
                raise _validation_error(exc) from None
            current = self.orch.behavior(request.path_params["service"])
            updated = Behavior(
                cold_start_hold_s=current.cold_start_hold_s if body.cold_start_hold_s is None else body.cold_start_hold_s,
                scale_to_zero_after_s=body.scale_to_zero_after_s if "scale_to_zero_after_s" in body.model_fields_set
                else current.scale_to_zero_after_s,
                reconcile_delay_s=current.reconcile_delay_s if body.reconcile_delay_s is None
                else body.reconcile_delay_s,
                warm_instances=current.warm_instances if body.warm_instances is None else body.warm_instances,
                queue_timeout_s=current.queue_timeout_s if body.queue_timeout_s is None else body.queue_timeout_s,
                vpc_clients=current.vpc_clients if body.vpc_clients is None else body.vpc_clients,
            )
            self.orch.behaviors[request.path_params["service"]] = updated
            return JSONResponse(asdict(updated))

        async def add_registry_gate(request: Request) -> Response:
            """A registry that wants Google credentials, in front of the plain registry `upstream` (tests)."""
            upstream = str((await _json(request)).get("upstream", ""))
            if not upstream.startswith("http://127.0.0.1:"):
                raise ApiError(400, "upstream must be a registry on http://127.0.0.1:PORT", field="upstream")
            seen: list[str] = []
            port = await self.pool.open(registry_gate(upstream, self.iam.access_member, seen), 0, proxy=True)
            self.registry_gates[f"127.0.0.1:{port}"] = seen
            return JSONResponse({"registry": f"127.0.0.1:{port}"})

        async def get_registry_gates(request: Request) -> Response:
            return JSONResponse({host: {"callers": sorted(set(seen)), "requests": len(seen)}
                                 for host, seen in self.registry_gates.items()})

        async def get_fidelity(request: Request) -> Response:
            return JSONResponse(self.orch.fidelity.model_dump())

        async def put_fidelity(request: Request) -> Response:
            """Set unsure rules (sandbox/fidelity.py); `{}` resets every one to its default."""
            body = await _json(request)
            if not isinstance(body, dict):
                raise ApiError(400, "body: a JSON object of switches is expected", field="body")
            try:
                self.orch.fidelity = self.orch.fidelity.update(body) if body else Fidelity()
            except ValidationError as exc:
                raise _validation_error(exc) from None
            self.iam.fidelity = self.orch.fidelity
            return JSONResponse(self.orch.fidelity.model_dump())

        return [
            Route("/sandbox/v1/registry-gates", add_registry_gate, methods=["POST"]),
            Route("/sandbox/v1/registry-gates", get_registry_gates, methods=["GET"]),
            Route("/sandbox/v1/fidelity", get_fidelity, methods=["GET"]),
            Route("/sandbox/v1/fidelity", put_fidelity, methods=["PUT"]),
            Route("/sandbox/v1/health", health, methods=["GET"]),
            Route("/sandbox/v1/status", status, methods=["GET"]),
            Route("/sandbox/v1/shutdown", shutdown, methods=["POST"]),
            Route("/sandbox/v1/lb", get_lb, methods=["GET"]),
            Route("/sandbox/v1/lb", put_lb, methods=["PUT"]),
            Route("/sandbox/v1/logging", put_logging, methods=["PUT"]),
            Route("/sandbox/v1/services/{service}/scale-in", scale_in, methods=["POST"]),
            Route("/sandbox/v1/services/{service}/behavior", get_behavior, methods=["GET"]),
            Route("/sandbox/v1/services/{service}/behavior", put_behavior, methods=["PUT"]),
        ]

    def app(self) -> Starlette:
        async def internal_error(request: Request, exc: Exception) -> Response:
            return google_error(500, f"Internal sandbox error: {type(exc).__name__}: {exc}")

        routes = [
            *iam_routes(self.iam, self.orch.service, self.faults.apply),  # before run_routes: ":getIamPolicy"
            *run_routes(self.orch, self.faults),
            *logging_routes(self.store, self.faults, self.list_quota, self.empty_pages),
            *fault_routes(self.faults),
            *self.admin_routes(),
        ]
        app = Starlette(routes=routes, exception_handlers={ApiError: api_error_handler, Exception: internal_error})
        app.add_middleware(ApiAuthMiddleware, iam=self.iam)
        return app

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        if not await self._docker_answers():
            raise SystemExit(f"sandbox: no Docker Engine at {self.options.docker_host}: run `make up`")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        reaper = asyncio.create_task(self.orch.run_reaper())
        try:
            api_port = await self.pool.open(self.app(), self.options.port)
            self.api_url = f"http://127.0.0.1:{api_port}"
            self.lb_url = await self.hub.open_lb(self.options.lb_port)
            self.key_files = self.iam.write_key_files(self.options.state_dir, f"{self.api_url}/token")
            self._write_server_file()
            self.log.system("sandbox", None, "INFO", f"Sandbox {self.options.instance_id} serving on {self.api_url}.")
            await self.stopping.wait()
        finally:
            reaper.cancel()
            with contextlib.suppress(Exception):
                await self.orch.shutdown()
            await self.pool.close_all()
            await self.hub.aclose()
            self.runtime.close()
            with contextlib.suppress(FileNotFoundError):
                (self.options.state_dir / SERVER_FILE).unlink()

    async def _docker_answers(self) -> bool:
        try:
            return await asyncio.wait_for(self.runtime.ping(), 10)
        except Exception:
            return False

    def _write_server_file(self) -> None:
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"pid": os.getpid(), "instance_id": self.options.instance_id, "run_api": self.api_url,
                "lb_url": self.lb_url, **self.key_files}
        tmp = self.options.state_dir / (SERVER_FILE + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.options.state_dir / SERVER_FILE)


def serve(options: ServeOptions) -> None:
    asyncio.run(SandboxServer(options).run())
