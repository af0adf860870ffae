"""One retry policy for transient API answers, applied as Prefect task retries.

A stage task that only reads, or that sets a whole state (a full traffic split, a revision template
under a name fixed for the task run), can be run again after a transient answer without changing the
outcome; Prefect retries it (`AwaitingRetry` -> `Retrying` in the run graph) when the failure was
transient: the API answered 429 (RESOURCE_EXHAUSTED), 500, 502, 503 (UNAVAILABLE), 504 /
DEADLINE_EXCEEDED, did not answer in time (a read timeout), or dropped the connection mid-request (reset,
closed without an answer: a front end recycling its connections). The set follows prefect-gcp's Cloud Run
v2 worker (`_TRANSIENT_HTTP_STATUSES`: 429, 500, 503; AIP-194: retry UNAVAILABLE, back off on
RESOURCE_EXHAUSTED) plus the gateway answers. Anything else fails at once: 400, 401, 403, 404, a 409 etag
or name conflict (running again gets the same answer), and a connection that is refused or cannot be
opened at all (the API is down or the endpoint wrong: the stage says so at once, naming the call that
could not reach it, and the rollback that follows says where traffic is).

What this is NOT: the probe policy (K healthy answers before a deadline: the waiting IS the check), the
etag rebuild of an update (a 409 means "read again and rebuild", handled where the update is built), the
budgeted Logging reads (their retries are counted in the evidence and share the project's quota), and
the polls inside a wait (a failed poll is retried by the client within the wait's own bound).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State

TRANSIENT_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
MAX_DELAY_S = 600.0

TaskT = TypeVar("TaskT", bound="Task[Any, Any]")


class ApiRetries(BaseModel):
    """`[api_retries]`: Prefect task retries of idempotent API stages after a transient answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(3, ge=0, le=10, description="retries of an idempotent API stage after a transient "
                                                     "answer (429, 500, 502, 503, 504, a read timeout)")
    delay_s: tuple[float, ...] = Field((2.0, 5.0, 10.0), min_length=1,
                                       description="pause before each retry (the last repeats)")
    jitter: float = Field(0.2, ge=0, le=1, description="randomised part of each pause (Prefect retry_jitter_factor)")

    @field_validator("delay_s")
    @classmethod
    def _delays(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(d < 0 or d > MAX_DELAY_S for d in v):
            raise ValueError(f"each pause is between 0 and {MAX_DELAY_S:g} seconds")
        return v

    def task_options(self) -> dict[str, Any]:
        """Keyword arguments for `Task.with_options`."""
        return {"retries": self.retries, "retry_delay_seconds": list(self.delay_s),
                "retry_jitter_factor": self.jitter or None, "retry_condition_fn": retry_on_transient_api_answer}


def is_transient(error: object) -> bool:
    """Pure: whether an error (a Google client / transport exception, or a StageError made from one) is a
    transient API answer that an idempotent call may be retried after."""
    flag = getattr(error, "transient", None)
    if isinstance(flag, bool):  # StageError, FailedGate: classified where the exception was described
        return flag
    code = getattr(error, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and code in TRANSIENT_STATUSES:
        return True
    import requests
    from google.api_core import exceptions as gexc

    if isinstance(error, gexc.RetryError):
        return error.cause is not None and is_transient(error.cause)
    if isinstance(error, gexc.DeadlineExceeded | gexc.GatewayTimeout | gexc.ServiceUnavailable
                  | gexc.TooManyRequests | gexc.InternalServerError | gexc.BadGateway):
        return True
    if isinstance(error, requests.exceptions.ConnectTimeout):  # a ConnectionError too: nothing answered
        return False
    if isinstance(error, requests.exceptions.ConnectionError):
        return dropped_connection(error)
    return isinstance(error, requests.exceptions.Timeout | TimeoutError)


def dropped_connection(error: BaseException) -> bool:
    """Pure: whether a transport error is a connection that was open and then dropped (reset, or closed
    without an answer: urllib3's "Connection aborted."), not one that could not be opened (refused, no
    such host: urllib3's NewConnectionError), looking through the exception's arguments and causes."""
    import http.client

    from urllib3.exceptions import NewConnectionError, ProtocolError

    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        item = todo.pop()
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError | ConnectionRefusedError):
            return False
        if isinstance(item, ProtocolError | http.client.RemoteDisconnected | ConnectionResetError
                      | ConnectionAbortedError):
            return True
        todo.extend([*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)])
    return False


def retry_on_transient_api_answer(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only a failure caused by a transient API answer. The state
    carries either the exception the task raised or, for a failed gate, its `FailedGate` (which says
    whether the error that failed it was transient)."""
    return is_transient(state.data)


def with_api_retries(task: TaskT, policy: ApiRetries) -> TaskT:
    """The task with the configured retry counts and pauses and the transient-answer condition."""
    return task.with_options(**policy.task_options())  # type: ignore[return-value]


RetryCondition = Callable[["Task[Any, Any]", "TaskRun", "State[Any]"], bool]
