"""Cloud Logging API v2 over HTTP/JSON: ``POST /v2/entries:list`` (what google-cloud-logging calls)."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.errors import ApiError
from sandbox.faults import FaultInjector
from sandbox.logstore import DEFAULT_PAGE_SIZE, LogStore

LIST_METHOD = "LoggingServiceV2.ListLogEntries"
_FIELDS = {"resourceNames", "projectIds", "filter", "orderBy", "pageSize", "pageToken"}
_SNAKE = {
    "resource_names": "resourceNames",
    "project_ids": "projectIds",
    "order_by": "orderBy",
    "page_size": "pageSize",
    "page_token": "pageToken",
}


def _string_list(body: dict[str, Any], key: str, field: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"{field} must be a list of strings", field=field)
    return value


def _string(body: dict[str, Any], key: str, field: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise ApiError(400, f"{field} must be a string", field=field)
    return value


def _page_size(body: dict[str, Any]) -> int:
    value = body.get("pageSize", DEFAULT_PAGE_SIZE)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # int32 may arrive as a JSON string
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "page_size must be an integer", field="page_size")
    return value


def list_request(body: Any) -> dict[str, Any]:
    """The keyword arguments of LogStore.list_entries for an entries:list body (proto JSON, either case)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received: expected an object")
    body = {_SNAKE.get(key, key): value for key, value in body.items()}
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(400, f'Invalid JSON payload received. Unknown name "{unknown[0]}"', field=unknown[0])
    names = _string_list(body, "resourceNames", "resource_names")
    names += [f"projects/{project}" for project in _string_list(body, "projectIds", "project_ids")]
    return {
        "resource_names": names,
        "filter_": _string(body, "filter", "filter"),
        "order_by": _string(body, "orderBy", "order_by") or "timestamp asc",
        "page_size": _page_size(body),
        "page_token": _string(body, "pageToken", "page_token") or None,
    }


def logging_routes(store: LogStore, faults: FaultInjector) -> list[BaseRoute]:
    async def list_entries(request: Request) -> Response:
        injected = await faults.apply(LIST_METHOD)
        if injected is not None:
            return injected
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON payload received: {exc}") from None
        arguments = list_request(body)
        # a filter over many entries is CPU work: keep the event loop (and the proxy) responsive
        entries, token = await run_in_threadpool(lambda: store.list_entries(**arguments))
        answer: dict[str, Any] = {"entries": entries} if entries else {}
        if token:
            answer["nextPageToken"] = token
        return JSONResponse(answer)

    return [Route("/v2/entries:list", list_entries, methods=["POST"])]
