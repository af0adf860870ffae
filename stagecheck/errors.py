"""Errors with messages written for the person running the pipeline (never a bare traceback)."""

from __future__ import annotations

from enum import StrEnum


class StageError(Exception):
    """A stage could not do its job; `str(exc)` says what happened and, where known, what to do."""

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.transient = transient  # a transient API answer (429, 5xx, no connection): see stagecheck.retry_policy

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# ---------------------------------------------------------------------------------------------------
# What to do about an API error: one table, keyed by the API that answered and the class of error.
# A 403 names the role missing FOR THAT API (a Logging 403 is never answered with roles/run.admin).


class Api(StrEnum):
    RUN = "Cloud Run API"
    LOGGING = "Cloud Logging API"
    REGISTRY = "container registry"


class ErrorClass(StrEnum):
    INVALID = "invalid"  # 400 / INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    UNAUTHENTICATED = "unauthenticated"  # 401 / UNAUTHENTICATED
    FORBIDDEN = "forbidden"  # 403 / PERMISSION_DENIED
    NOT_FOUND = "not found"  # 404 / NOT_FOUND
    RATE_LIMITED = "rate limited"  # 429 / RESOURCE_EXHAUSTED
    UNAVAILABLE = "unavailable"  # 503 / UNAVAILABLE
    TIMEOUT = "timeout"  # 504 / DEADLINE_EXCEEDED, or our own bound
    UNREACHABLE = "unreachable"  # no connection


# The HTTP status of an answer -> its class. The google.api_core exceptions carry it as `code` (the
# gRPC-named ones inherit their HTTP parent's: PermissionDenied is a Forbidden, 403), so one table
# serves the REST clients (Cloud Run, Logging) and plain HTTP (the registry).
BY_HTTP_STATUS: dict[int, ErrorClass] = {
    400: ErrorClass.INVALID,
    401: ErrorClass.UNAUTHENTICATED,
    403: ErrorClass.FORBIDDEN,
    404: ErrorClass.NOT_FOUND,
    429: ErrorClass.RATE_LIMITED,
    503: ErrorClass.UNAVAILABLE,
    504: ErrorClass.TIMEOUT,
}

# What happened, in words ("{api}" is the API that answered); the message is "<what>: <this> (<detail>)".
SENTENCES: dict[ErrorClass, str] = {
    ErrorClass.INVALID: "rejected as invalid",
    ErrorClass.UNAUTHENTICATED: "not authenticated",
    ErrorClass.FORBIDDEN: "permission denied by the {api}",
    ErrorClass.NOT_FOUND: "not found",
    ErrorClass.RATE_LIMITED: "{api} quota or rate limit hit",
    ErrorClass.UNAVAILABLE: "{api} unavailable",
    ErrorClass.TIMEOUT: "timed out",
    ErrorClass.UNREACHABLE: "{api} unreachable",
}


_LOGIN = "run `gcloud auth application-default login` (or give the worker a service account)"
_RETRIED = "retried with backoff until the bound; try again later or check the quota page of the project"

HINTS: dict[tuple[Api, ErrorClass], str] = {
    (Api.RUN, ErrorClass.FORBIDDEN):
        "the identity needs roles/run.admin, and roles/iam.serviceAccountUser on the runtime service account",
    (Api.LOGGING, ErrorClass.FORBIDDEN): "the identity needs roles/logging.viewer on the project",
    (Api.REGISTRY, ErrorClass.FORBIDDEN): "the identity needs roles/artifactregistry.writer on the repository",
    (Api.RUN, ErrorClass.UNAUTHENTICATED): _LOGIN,
    (Api.LOGGING, ErrorClass.UNAUTHENTICATED): _LOGIN,
    (Api.REGISTRY, ErrorClass.UNAUTHENTICATED): f"{_LOGIN}; for Artifact Registry also `gcloud auth configure-docker`",
    (Api.RUN, ErrorClass.RATE_LIMITED): _RETRIED,
    (Api.LOGGING, ErrorClass.RATE_LIMITED): f"{_RETRIED} (Logging API read requests are limited per minute)",
    (Api.RUN, ErrorClass.UNAVAILABLE): _RETRIED,
    (Api.LOGGING, ErrorClass.UNAVAILABLE): _RETRIED,
    (Api.RUN, ErrorClass.UNREACHABLE): "is the endpoint right / the sandbox up?",
    (Api.LOGGING, ErrorClass.UNREACHABLE): "is the endpoint right / the sandbox up?",
    (Api.REGISTRY, ErrorClass.UNREACHABLE): "is the registry running and the name in `registry` right?",
}


def hint_for(api: Api, error: ErrorClass) -> str | None:
    """What to do about `error` from `api`, or None when there is nothing specific to say."""
    return HINTS.get((api, error))


def error_class(http_status: int | None) -> ErrorClass | None:
    """The class of an HTTP status (None: none of ours, e.g. 409 or 500)."""
    return BY_HTTP_STATUS.get(int(http_status)) if http_status is not None else None


def api_error(api: Api, error: ErrorClass, what: str, detail: str | None = None) -> StageError:
    """The StageError for `error` from `api` while doing `what`: the sentence and the hint of the table."""
    sentence = SENTENCES[error].format(api=api)
    return StageError(f"{what}: {sentence}" + (f" ({detail})" if detail else ""), hint=hint_for(api, error))
