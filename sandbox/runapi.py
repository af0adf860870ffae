"""Cloud Run Admin API v2 over REST/JSON, as google.cloud.run_v2's REST transport sends it."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.errors import ApiError
from sandbox.faults import FaultInjector
from sandbox.model import Operation
from sandbox.orchestrator import Orchestrator

Handler = Callable[[Request], Awaitable[Response]]
BASE = "/v2/projects/{project}/locations/{location}"
MAX_PAGE = 500


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid JSON payload received: {exc.msg} at position {exc.pos}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received: expected an object.")
    return body


def _page(items: list[Any], request: Request) -> tuple[list[Any], str]:
    """Offset paging with opaque tokens: (items of this page, nextPageToken or '')."""
    size_raw = request.query_params.get("pageSize", "0")
    try:
        size = int(size_raw)
    except ValueError:
        raise ApiError(400, f"Invalid pageSize {size_raw!r}.", field="page_size") from None
    if size < 0:
        raise ApiError(400, "pageSize must not be negative.", field="page_size")
    size = min(size or 100, MAX_PAGE)
    token = request.query_params.get("pageToken", "")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("o:"))
        except ValueError:
            raise ApiError(400, f"Invalid pageToken {token!r}.", field="page_token") from None
    end = start + size
    next_token = base64.urlsafe_b64encode(f"o:{end}".encode()).decode() if end < len(items) else ""
    return items[start:end], next_token


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in {"true", "1"}


def run_routes(orch: Orchestrator, faults: FaultInjector) -> list[BaseRoute]:
    def handler(method: str, fn: Callable[[Request], Awaitable[Any]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            injected = await faults.apply(method, undone=lambda: _undone(request))
            if injected is not None:
                return injected
            result = await fn(request)
            if isinstance(result, Operation):
                result = result.to_json()
            return JSONResponse(result)

        return endpoint

    def ids(request: Request) -> tuple[str, str]:
        return request.path_params["project"], request.path_params["location"]

    def _undone(request: Request) -> Response:
        """The operation as if still running (fault `undone`): name and metadata, done=false."""
        op = orch.operation(*ids(request), request.path_params["operation"])
        return JSONResponse({k: v for k, v in op.to_json().items() if k not in ("response", "error")} | {"done": False})

    async def create_service(request: Request) -> Operation:
        project, location = ids(request)
        service_id = request.query_params.get("serviceId", "")
        return await orch.create_service(project, location, service_id, await _json_body(request))

    async def get_service(request: Request) -> dict[str, Any]:
        svc = orch.service(*ids(request), request.path_params["service"])
        return orch.service_json(svc)

    async def list_services(request: Request) -> dict[str, Any]:
        page, token = _page(orch.list_services(*ids(request)), request)
        out: dict[str, Any] = {"services": [orch.service_json(s) for s in page]}
        if token:
            out["nextPageToken"] = token
        return out

    async def update_service(request: Request) -> Operation:
        project, location = ids(request)
        return await orch.update_service(
            project, location, request.path_params["service"], await _json_body(request),
            request.query_params.get("updateMask"), _flag(request, "allowMissing"),
        )

    async def delete_service(request: Request) -> Operation:
        return await orch.delete_service(*ids(request), request.path_params["service"])

    async def get_revision(request: Request) -> dict[str, Any]:
        project, location = ids(request)
        service_id = request.path_params["service"]
        rev = orch.revision(project, location, service_id, request.path_params["revision"])
        return orch.revision_json(orch.services[service_id], rev)

    async def list_revisions(request: Request) -> dict[str, Any]:
        project, location = ids(request)
        service_id = request.path_params["service"]
        page, token = _page(orch.list_revisions(project, location, service_id), request)
        svc = orch.services[service_id]
        out: dict[str, Any] = {"revisions": [orch.revision_json(svc, r) for r in page]}
        if token:
            out["nextPageToken"] = token
        return out

    async def delete_revision(request: Request) -> Operation:
        return await orch.delete_revision(*ids(request), request.path_params["service"],
                                          request.path_params["revision"])

    async def get_operation(request: Request) -> Operation:
        return orch.operation(*ids(request), request.path_params["operation"])

    svc_path = BASE + "/services/{service}"
    return [
        Route(BASE + "/services", handler("Services.CreateService", create_service), methods=["POST"]),
        Route(BASE + "/services", handler("Services.ListServices", list_services), methods=["GET"]),
        Route(svc_path, handler("Services.GetService", get_service), methods=["GET"]),
        Route(svc_path, handler("Services.UpdateService", update_service), methods=["PATCH"]),
        Route(svc_path, handler("Services.DeleteService", delete_service), methods=["DELETE"]),
        Route(svc_path + "/revisions", handler("Revisions.ListRevisions", list_revisions), methods=["GET"]),
        Route(svc_path + "/revisions/{revision}", handler("Revisions.GetRevision", get_revision), methods=["GET"]),
        Route(svc_path + "/revisions/{revision}", handler("Revisions.DeleteRevision", delete_revision),
              methods=["DELETE"]),
        Route(BASE + "/operations/{operation}", handler("Operations.GetOperation", get_operation), methods=["GET"]),
    ]
