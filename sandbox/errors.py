"""Google-style JSON errors (google.rpc.Status over HTTP), shared by every sandbox API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

# HTTP status -> canonical google.rpc.Code name and number.
_STATUS: dict[int, tuple[str, int]] = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    409: ("ALREADY_EXISTS", 6),
    412: ("FAILED_PRECONDITION", 9),
    429: ("RESOURCE_EXHAUSTED", 8),
    499: ("CANCELLED", 1),
    500: ("INTERNAL", 13),
    501: ("UNIMPLEMENTED", 12),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}

GRPC_CODES: dict[str, int] = {name: num for name, num in _STATUS.values()}
GRPC_CODES.update({"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNKNOWN": 2})


class ApiError(Exception):
    """Raise anywhere in a handler; the app turns it into a Google JSON error."""

    def __init__(
        self,
        http_status: int,
        message: str,
        *,
        status: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.status = status or _STATUS.get(http_status, ("UNKNOWN", 2))[0]
        self.field = field

    @property
    def grpc_code(self) -> int:
        return GRPC_CODES.get(self.status, 2)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "status": self.status,
        }
        if self.field:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": self.field, "description": self.message}],
                }
            ]
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.http_status)


def google_error(http_status: int, message: str, *, status: str | None = None, field: str | None = None) -> JSONResponse:
    return ApiError(http_status, message, status=status, field=field).response()


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()
