"""Google client and transport exceptions -> StageError, through the one table of `stagecheck.errors`.

Every client wrapper (Cloud Run, Cloud Logging) turns what the Google libraries raise into a readable
StageError here: the HTTP status an answer carried picks the error class (`errors.BY_HTTP_STATUS`),
the API that answered picks the hint (`errors.HINTS`: a Logging 403 names roles/logging.viewer, a
Cloud Run 403 roles/run.admin). Loaded where a client is first used (it imports google.api_core)."""

from __future__ import annotations

import re

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from stagecheck.errors import Api, ErrorClass, StageError, api_error, error_class

_REQUEST_PREFIX = re.compile(r"^(GET|POST|PATCH|PUT|DELETE) \S+: ")

# what the Google clients and their transport raise; describe_api_error turns each into a StageError
API_ERRORS = (gexc.GoogleAPIError, auth_exc.GoogleAuthError, requests.exceptions.RequestException, TimeoutError)


def api_message(exc: gexc.GoogleAPICallError) -> str:
    """The server's message without the REST transport's "GET https://...: " prefix."""
    return _REQUEST_PREFIX.sub("", str(exc.message or "")).strip() or type(exc).__name__


def describe_api_error(exc: BaseException, what: str, api: Api = Api.RUN) -> StageError:
    """Turn a Google client / transport exception into a readable StageError, with the hint for the API
    that answered. The error says whether the answer was transient (stagecheck.retry_policy: Prefect
    retries an idempotent stage after it)."""
    from stagecheck.retry_policy import is_transient

    error = _describe(exc, what, api)
    error.transient = is_transient(exc)
    return error


def _describe(exc: BaseException, what: str, api: Api) -> StageError:
    """HTTP classes (Forbidden, Unauthorized, BadRequest...) are the parents of the
    gRPC-named ones (PermissionDenied, Unauthenticated, InvalidArgument...): both carry the HTTP `code`."""
    if isinstance(exc, gexc.GoogleAPICallError):
        kind = error_class(exc.code)
        if kind is None:
            return StageError(f"{what}: {type(exc).__name__} ({api_message(exc)})")
        return api_error(api, kind, what, api_message(exc))
    if isinstance(exc, gexc.RetryError) and isinstance(exc.cause, BaseException):
        return _describe(exc.cause, f"{what} (gave up retrying: {exc.message})", api)
    if isinstance(exc, TimeoutError | gexc.RetryError):
        return StageError(f"{what}: timed out ({exc})")
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return StageError(f"{what}: no Google credentials found",
                          hint="run `gcloud auth application-default login` or use --sandbox")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return StageError(f"{what}: authentication failed ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return api_error(api, ErrorClass.UNREACHABLE, what)
    if isinstance(exc, requests.exceptions.RequestException):
        return StageError(f"{what}: transport error ({type(exc).__name__})")
    return StageError(f"{what}: {type(exc).__name__}: {exc}")
