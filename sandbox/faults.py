"""Fault injection: make the next N calls of an API method (or proxied route) fail and/or slow down.

Keys are API methods (``Services.GetService`` ..., a short name such as ``GetService`` is accepted and
stored in full) or proxy routes (``proxy.service.<service>``, ``proxy.tag.<service>.<tag>``,
``proxy.lb.<service>``). API methods fail with a Google JSON error; proxy routes with a plain-text page,
as Google Front End answers. Faults for one key are consumed in the order they were added.
``undone: true`` (``Operations.GetOperation`` only) answers the operation as still running
(``done: false``) however far it got: an operation that never completes.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.errors import ApiError

API_METHODS: tuple[str, ...] = (
    "Services.CreateService",
    "Services.GetService",
    "Services.ListServices",
    "Services.UpdateService",
    "Services.DeleteService",
    "Revisions.GetRevision",
    "Revisions.ListRevisions",
    "Revisions.DeleteRevision",
    "Operations.GetOperation",
    "LoggingServiceV2.ListLogEntries",
)
_SHORT_NAMES = {method.split(".", 1)[1]: method for method in API_METHODS}
_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_PROXY_KEY = re.compile(rf"^proxy\.(service\.{_NAME}|tag\.{_NAME}\.{_NAME}|lb\.{_NAME})$")
_FIELDS = ("method", "count", "status", "latency_s", "message", "undone")
UNDONE_METHOD = "Operations.GetOperation"
MAX_LATENCY_S = 600.0


def canonical_method(method: str) -> str:
    """The full key for ``method``; raises ValueError for a key no caller ever asks about."""
    if method in API_METHODS or _PROXY_KEY.match(method):
        return method
    if method in _SHORT_NAMES:
        return _SHORT_NAMES[method]
    raise ValueError(
        f"unknown method {method!r}: expected one of {', '.join(API_METHODS)} (or the part after the dot), "
        "or proxy.service.<service>, proxy.tag.<service>.<tag>, proxy.lb.<service>"
    )


def is_proxy_key(method: str) -> bool:
    return method.startswith("proxy.")


@dataclass
class Fault:
    method: str
    count: int  # uses left; -1 = until cleared
    status: int | None
    latency_s: float
    message: str | None
    undone: bool = False  # GetOperation answers done=false


def fault_json(fault: Fault) -> dict[str, Any]:
    """A fault as the admin API shows it (`undone` only when set)."""
    out = asdict(fault)
    if not fault.undone:
        del out["undone"]
    return out


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_fault(method: Any, count: Any, status: Any, latency_s: Any, message: Any,
                   undone: Any = False) -> Fault:
    """A Fault from loosely typed input, or FieldError naming the first bad field."""
    if not isinstance(method, str) or not method:
        raise FieldError("method", "method must be a non-empty string")
    try:
        full = canonical_method(method)
    except ValueError as exc:
        raise FieldError("method", str(exc)) from None
    if isinstance(count, bool) or not isinstance(count, int) or not (count == -1 or count >= 1):
        raise FieldError("count", "count must be an integer >= 1, or -1 for 'until cleared'")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599
    ):
        raise FieldError("status", "status must be an integer HTTP status between 400 and 599")
    if (
        isinstance(latency_s, bool)
        or not isinstance(latency_s, int | float)
        or not 0 <= latency_s <= MAX_LATENCY_S
    ):
        raise FieldError(
            "latency_s", f"latency_s must be a number of seconds between 0 and {MAX_LATENCY_S:g}"
        )
    if message is not None and not isinstance(message, str):
        raise FieldError("message", "message must be a string")
    if not isinstance(undone, bool):
        raise FieldError("undone", "undone must be true or false")
    if undone and full != UNDONE_METHOD:
        raise FieldError("undone", f"undone applies only to {UNDONE_METHOD}")
    if undone and status is not None:
        raise FieldError("undone", "undone answers the operation as running: it takes no status")
    if status is None and latency_s == 0 and not undone:
        raise FieldError("status", "a fault needs a status, a latency_s, undone, or a combination")
    return Fault(full, count, status, float(latency_s), message, undone)


def fault_response(fault: Fault) -> Response:
    """The error a faulted call answers with (fault.status is set)."""
    assert fault.status is not None
    reason = HTTPStatus(fault.status).phrase if fault.status in HTTPStatus._value2member_map_ else "Error"
    message = fault.message or f"Injected fault: {reason}"
    if is_proxy_key(fault.method):
        body = f"Error: {reason}\n{message}\n" if fault.message else f"Error: {reason}\n"
        return PlainTextResponse(body, status_code=fault.status)
    return ApiError(fault.status, message).response()


class FaultInjector:
    """Thread-safe registry of pending faults, consumed by the APIs and the proxy."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        method: str,
        *,
        count: int = 1,
        status: int | None = None,
        latency_s: float = 0.0,
        message: str | None = None,
        undone: bool = False,
    ) -> None:
        """Register a fault; raises ValueError (a FieldError naming the field) for bad input."""
        fault = validate_fault(method, count, status, latency_s, message, undone)
        with self._lock:
            self._faults.append(fault)

    def clear(self, method: str | None = None) -> int:
        """Drop all faults, or those of one key (short names accepted); returns how many were dropped."""
        key = None if method is None else canonical_method(method)
        with self._lock:
            kept = [fault for fault in self._faults if key is not None and fault.method != key]
            dropped = len(self._faults) - len(kept)
            self._faults = kept
        return dropped

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault_json(fault) for fault in self._faults]

    def take(self, method: str) -> Fault | None:
        """Consume one use of the first fault registered for ``method`` (full or short key)."""
        try:
            key = canonical_method(method)
        except ValueError:
            key = method
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.method != key:
                    continue
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                return Fault(fault.method, fault.count, fault.status, fault.latency_s, fault.message,
                             fault.undone)
        return None

    async def apply_noted(self, method: str) -> tuple[Response | None, str | None]:
        """As `apply` for a proxy route, with the fault's message (the request entry's textPayload: the
        front end's own words, e.g. "The request was aborted because there was no available instance.")."""
        fault = self.take(method)
        if fault is None:
            return None, None
        if fault.latency_s > 0:
            await asyncio.sleep(fault.latency_s)  # the injected delay itself, not a wait for a condition
        return (fault_response(fault) if fault.status is not None else None), fault.message

    async def apply(self, method: str, undone: Callable[[], Response] | None = None) -> Response | None:
        """Consume one use, await the injected latency; an error Response (or, for an `undone` fault,
        what `undone()` answers), or None to proceed."""
        fault = self.take(method)
        if fault is None:
            return None
        if fault.latency_s > 0:
            await asyncio.sleep(fault.latency_s)  # the injected delay itself, not a wait for a condition
        if fault.undone and undone is not None:
            return undone()
        return fault_response(fault) if fault.status is not None else None


# ---------------------------------------------------------------------------------------------------
# Admin API: POST/GET/DELETE /sandbox/v1/faults


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Invalid JSON payload received: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received: expected an object")
    return body


def fault_routes(faults: FaultInjector) -> list[BaseRoute]:
    async def add_fault(request: Request) -> Response:
        body = await _json_object(request)
        unknown = sorted(set(body) - set(_FIELDS))
        if unknown:
            raise ApiError(
                400, f"Unknown field {unknown[0]!r}; expected {', '.join(_FIELDS)}", field=unknown[0]
            )
        try:
            fault = validate_fault(
                body.get("method"),
                body.get("count", 1),
                body.get("status"),
                body.get("latency_s", 0.0),
                body.get("message"),
                body.get("undone", False),
            )
        except FieldError as exc:
            raise ApiError(400, str(exc), field=exc.field) from None
        faults.add(
            fault.method,
            count=fault.count,
            status=fault.status,
            latency_s=fault.latency_s,
            message=fault.message,
            undone=fault.undone,
        )
        return JSONResponse(fault_json(fault), status_code=201)

    async def list_faults(request: Request) -> Response:
        return JSONResponse({"faults": faults.snapshot()})

    async def clear_faults(request: Request) -> Response:
        method = request.query_params.get("method")
        try:
            cleared = faults.clear(method)
        except ValueError as exc:
            raise ApiError(400, str(exc), field="method") from None
        return JSONResponse({"cleared": cleared})

    return [
        Route("/sandbox/v1/faults", add_fault, methods=["POST"]),
        Route("/sandbox/v1/faults", list_faults, methods=["GET"]),
        Route("/sandbox/v1/faults", clear_faults, methods=["DELETE"]),
    ]
