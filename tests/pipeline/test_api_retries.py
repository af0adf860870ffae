"""Transient API answers are retried by Prefect (task retries with a retry condition), others are not.

A burst of 503s injected into the sandbox's Cloud Run API (POST /sandbox/v1/faults) on the deploy's
UpdateService: the deploy task run goes AwaitingRetry -> Retrying (read back through the Prefect API)
and the release passes; a 403 fails the deploy at once (a retry would have passed: no fault is left)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
import requests
from google.api_core import exceptions as gexc

from stagecheck.errors import StageError
from stagecheck.model import StageResult, Status
from stagecheck.retry_policy import ApiRetries, is_transient, retry_on_transient_api_answer
from tasks.common import FailedGate, guarded
from tests.pipeline.test_e2e import baseline, created, run_flow, serving  # noqa: F401  (created: a fixture)

FAST_RETRIES = "[api_retries]\nretries = 3\ndelay_s = [0.2]"


# ------------------------------------------------------------------ the policy (pure)


@pytest.mark.parametrize(("error", "transient"), [
    (gexc.ServiceUnavailable("down"), True),
    (gexc.TooManyRequests("slow down"), True),
    (gexc.InternalServerError("oops"), True),
    (gexc.GatewayTimeout("late"), True),
    (gexc.DeadlineExceeded("late"), True),
    (requests.exceptions.ReadTimeout("no answer"), True),
    (TimeoutError("no answer"), True),
    (requests.exceptions.ConnectionError("refused"), False),  # the API is down or the endpoint wrong
    (requests.exceptions.ConnectTimeout("nothing answered"), False),
    (gexc.RetryError("gave up", cause=gexc.ServiceUnavailable("down")), True),
    (gexc.BadRequest("invalid"), False),
    (gexc.Forbidden("denied"), False),
    (gexc.Unauthorized("who"), False),
    (gexc.NotFound("gone"), False),
    (gexc.Conflict("etag"), False),
    (gexc.RetryError("gave up", cause=gexc.Forbidden("denied")), False),
    (ValueError("a bug"), False),
])
def test_transient_answers_are_429_5xx_and_timeouts_not_refused_connections(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_described_api_error_keeps_whether_it_was_transient() -> None:
    from stagecheck.clients.cloudrun import describe_api_error

    assert describe_api_error(gexc.ServiceUnavailable("GET x: down"), "get service s").transient is True
    assert describe_api_error(gexc.Forbidden("GET x: denied"), "get service s").transient is False


async def test_the_retry_condition_reads_the_failed_gate_and_raised_exceptions() -> None:
    from prefect.states import Failed, State

    async def unavailable() -> tuple[StageResult, None]:
        raise StageError("update service s: Cloud Run API unavailable", transient=True)

    async def forbidden() -> tuple[StageResult, None]:
        raise StageError("update service s: permission denied", transient=False)

    for body, expected in ((unavailable, True), (forbidden, False)):
        result, _ = await guarded("deploy", body, None)
        assert result.status is Status.FAIL
        state: State[Any] = Failed(data=FailedGate(result=result, value=(result, None)))
        assert retry_on_transient_api_answer(None, None, state) is expected  # type: ignore[arg-type]
    assert retry_on_transient_api_answer(None, None, Failed(data=gexc.ServiceUnavailable("x"))) is True  # type: ignore[arg-type]
    assert retry_on_transient_api_answer(None, None, Failed(data=gexc.BadRequest("x"))) is False  # type: ignore[arg-type]


def test_retry_settings_have_defaults_and_bounds() -> None:
    from pydantic import ValidationError

    policy = ApiRetries()
    assert policy.retries == 3 and policy.delay_s == (2.0, 5.0, 10.0)
    options = policy.task_options()
    assert options["retries"] == 3 and options["retry_condition_fn"] is retry_on_transient_api_answer
    with pytest.raises(ValidationError, match="each pause is between 0 and 600 seconds"):
        ApiRetries(delay_s=(1.0, 601.0))
    with pytest.raises(ValidationError):
        ApiRetries(retries=-1)


# ------------------------------------------------------------------ against the sandbox and a Prefect server


async def _task_run_states(flow_run_id: Any, name: str) -> list[str]:
    """The state names a task run of the flow run went through, oldest first (read through the API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        matching = [r for r in runs if r.name == name]
        assert len(matching) == 1, sorted(r.name for r in runs)
        states = await client.read_task_run_states(UUID(str(matching[0].id)))
    return [s.name or "" for s in sorted(states, key=lambda s: s.timestamp)]


def _pending(run_clients: Any) -> list[dict[str, Any]]:
    return list(run_clients.admin("GET", "/sandbox/v1/faults")["faults"])



async def _release_meeting_update_faults(scenario: Any, run_clients: Any, sample_image: Any, service: str, *,
                                        count: int, status: int, message: str) -> tuple[str, Any, list[dict[str, Any]]]:
    """A straight release of a service already serving, whose first `count` UpdateService calls are answered
    `status`: (the revision serving before, the run, the faults still pending when it ended)."""
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]", extra=FAST_RETRIES)
    scenario.commit()
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": "Services.UpdateService", "count": count,
                                                     "status": status, "message": message})
    try:
        run = await run_flow(scenario, config)
        return before, run, _pending(run_clients)
    finally:
        run_clients.admin("DELETE", "/sandbox/v1/faults?method=Services.UpdateService")


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_burst_of_503s_from_the_cloud_run_api_is_retried_by_prefect_and_the_release_passes(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("rt503")
    # the deploy's PATCH (the first UpdateService of the run) meets two 503s in a row
    before, run, pending = await _release_meeting_update_faults(
        scenario, run_clients, sample_image, service, count=2, status=503,
        message="The service is currently unavailable.")
    assert pending == []  # both 503s were met
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    candidate = report["revision"]["name"]
    assert candidate != before
    assert serving(run_clients, service) == {candidate: 100}
    # one revision for the candidate: the retries sent the same name and template, nothing twice
    revisions = {r.name.rsplit("/", 1)[-1] for r in run_clients.revisions.list_revisions(
        parent=run_clients.service_name(service))}
    assert revisions == {before, candidate}

    states = await _task_run_states(run.state.state_details.flow_run_id, f"deploy · {service}")
    assert states.count("AwaitingRetry") == 2 and states.count("Retrying") == 2, states
    assert states[-1] == "Completed", states


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_403_from_the_cloud_run_api_is_not_retried(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("rt403")
    # one 403 only: a retry would have passed
    before, run, _ = await _release_meeting_update_faults(
        scenario, run_clients, sample_image, service, count=1, status=403,
        message="Permission 'run.services.update' denied")
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "deploy"
    assert "permission denied by the Cloud Run API" in run.stage(service, "deploy")["summary"]
    assert serving(run_clients, service) == {before: 100}
    states = await _task_run_states(run.state.state_details.flow_run_id, f"deploy · {service}")
    assert "AwaitingRetry" not in states and "Retrying" not in states, states
    assert states[-1] == "Failed", states


def _transport_error(*, answer_then_drop: bool) -> BaseException:
    """What the Cloud Run REST transport (requests) raises against a real local socket that accepts the
    request and closes without an answer, or against a port nobody listens on."""
    import socket
    import threading

    import requests

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if answer_then_drop:
        server.listen()

        def drop() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.close()

        threading.Thread(target=drop, daemon=True).start()
    else:
        server.close()
    try:
        requests.get(f"http://127.0.0.1:{port}/v2/projects/p/locations/r/services/s", timeout=10)
    except requests.exceptions.RequestException as exc:
        return exc
    finally:
        server.close()
    raise AssertionError("the request was answered")


def test_a_dropped_connection_is_retried_and_a_refused_one_is_not() -> None:
    from prefect.states import Failed

    from stagecheck.clients.cloudrun import describe_api_error

    dropped, refused = _transport_error(answer_then_drop=True), _transport_error(answer_then_drop=False)
    assert is_transient(dropped) is True and is_transient(refused) is False
    for exc, expected in ((dropped, True), (refused, False)):
        error = describe_api_error(exc, "update service s")
        assert error.transient is expected and "unreachable" in error.message
        assert retry_on_transient_api_answer(None, None, Failed(data=exc)) is expected  # type: ignore[arg-type]
