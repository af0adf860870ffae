"""Cloud Logging API v2 over HTTP/JSON: ``POST /v2/entries:list`` (what google-cloud-logging calls)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
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


LIST_QUOTA_PER_MINUTE = 60  # "Number of entries.list requests: 60 per minute, per Google Cloud project"


class ListQuota:
    """Cloud Logging's entries.list quota: at most `per_minute` requests in any 60 s, per project; past it
    a 429 RESOURCE_EXHAUSTED Google error (the limit cannot be raised on a real project)."""

    def __init__(self, per_minute: int = LIST_QUOTA_PER_MINUTE, *, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.window_s, self._clock = per_minute, window_s, clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self.rejected = 0

    def take(self, project: str) -> None:
        """Count one request of `project`; ApiError 429 when the last minute already holds the limit."""
        now = self._clock()
        with self._lock:
            calls = self._calls.setdefault(project, deque())
            while calls and calls[0] <= now - self.window_s:
                calls.popleft()
            if len(calls) >= self.per_minute:
                self.rejected += 1
                raise ApiError(
                    429,
                    "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of "
                    f"service 'logging.googleapis.com' for consumer 'project:{project}'.",
                    status="RESOURCE_EXHAUSTED",
                )
            calls.append(now)


class EmptyPages:
    """A switch: the 1st, (1 + every)-th, (1 + 2 every)-th ... entries.list call after it is set (every 0:
    none) answers an empty page with a nextPageToken that resumes where it would have started, as the API
    may; deterministic, so tests can count on it."""

    def __init__(self, every: int = 0) -> None:
        self.every = every
        self.calls = 0  # since `every` was last set
        self.answered = 0
        self._lock = threading.Lock()

    def next_is_empty(self) -> bool:
        with self._lock:
            empty = self.every > 0 and self.calls % self.every == 0
            self.calls += 1
            self.answered += empty
            return empty


def _projects(resource_names: list[str]) -> list[str]:
    return sorted({name.split("/")[1] for name in resource_names if name.count("/") >= 1}) or ["?"]


def logging_routes(store: LogStore, faults: FaultInjector, quota: ListQuota | None = None,
                   pages: EmptyPages | None = None) -> list[BaseRoute]:
    quota = quota or ListQuota()
    pages = pages or EmptyPages()

    async def list_entries(request: Request) -> Response:
        injected = await faults.apply(LIST_METHOD)
        if injected is not None:
            return injected
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON payload received: {exc}") from None
        arguments = list_request(body)
        for project in _projects(arguments["resource_names"]):
            quota.take(project)
        # a filter over many entries is CPU work: keep the event loop (and the proxy) responsive
        empty = pages.next_is_empty()
        entries, token = await run_in_threadpool(lambda: store.list_entries(**arguments, empty_page=empty))
        answer: dict[str, Any] = {"entries": entries} if entries else {}
        if token:
            answer["nextPageToken"] = token
        return JSONResponse(answer)

    return [Route("/v2/entries:list", list_entries, methods=["POST"])]
