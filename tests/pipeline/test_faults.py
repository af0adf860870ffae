"""API faults, injected with the sandbox's fault injection (POST /sandbox/v1/faults), met by the
pipeline's own clients: bursts of 429/503 are ridden out on idempotent calls, a 403 fails at once
naming the role missing for the API that refused, an operation that never completes hits its bound."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from stagecheck.clients.cloudlogging import LogReader
from stagecheck.clients.cloudrun import CloudRun, describe_api_error
from stagecheck.errors import Api, ErrorClass, StageError, hint_for
from stagecheck.model import TrafficTarget
from stagecheck.settings import Settings, load_settings
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, unique_name

# ------------------------------------------------------------------ the hint table (pure)


@pytest.mark.parametrize(("api", "role", "not_role"), [
    (Api.RUN, "roles/run.admin", "roles/logging.viewer"),
    (Api.LOGGING, "roles/logging.viewer", "roles/run.admin"),
])
def test_a_403_names_the_role_missing_for_the_api_that_refused(api: Api, role: str, not_role: str) -> None:
    err = describe_api_error(gexc.Forbidden("GET https://x/v2/y: The caller does not have permission"), "do it", api)
    assert err.hint is not None and role in err.hint and not_role not in str(err)
    assert f"permission denied by the {api}" in err.message


def test_the_registry_403_hint_names_the_writer_role() -> None:
    from stagecheck.clients.images import _describe_push_error

    assert "roles/artifactregistry.writer" in _describe_push_error("denied: requested access to the resource is denied")
    assert hint_for(Api.REGISTRY, ErrorClass.FORBIDDEN) == "the identity needs roles/artifactregistry.writer on the repository"


def test_every_api_has_a_hint_for_403_401_and_unreachable() -> None:
    for api in Api:
        for error in (ErrorClass.FORBIDDEN, ErrorClass.UNAUTHENTICATED, ErrorClass.UNREACHABLE):
            assert hint_for(api, error), (api, error)


# ------------------------------------------------------------------ against the sandbox



@pytest.fixture
def settings(sandbox: Any, run_clients: RunClients) -> Settings:
    return load_settings(None, environ={}, sandbox_json=Path(sandbox.state_dir) / "sandbox.json",
                         overrides={"services": [{"name": "unused"}]})


@pytest.fixture
def faults(run_clients: RunClients) -> Iterator[Any]:
    def add(method: str, **fault: Any) -> None:
        run_clients.admin("POST", "/sandbox/v1/faults", {"method": method, **fault})

    yield add
    run_clients.admin("DELETE", "/sandbox/v1/faults")


@pytest.fixture
def served(run_clients: RunClients, sample_image: Any) -> Iterator[str]:
    name = unique_name("flt")
    deploy(run_clients, name, sample_image.ref)
    yield name
    try:
        run_clients.services.delete_service(name=run_clients.service_name(name)).result(polling=FAST_POLL, timeout=60)
    except gexc.NotFound:
        pass


def pending(run_clients: RunClients) -> list[dict[str, Any]]:
    return list(run_clients.admin("GET", "/sandbox/v1/faults")["faults"])


@pytest.mark.docker
@pytest.mark.sandbox
async def test_cloud_run_read_and_operation_paths_ride_out_429_and_503_bursts(
        settings: Settings, run_clients: RunClients, faults: Any, served: str) -> None:
    cloudrun = CloudRun(settings)
    faults("Services.GetService", count=2, status=503)
    faults("Services.GetService", count=2, status=429)
    faults("Revisions.GetRevision", count=3, status=503)
    svc = await cloudrun.get_service(served)
    assert svc is not None and svc.name.endswith(f"/services/{served}")
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    assert (await cloudrun.get_revision(served, rev)).name.endswith(rev)
    faults("Operations.GetOperation", count=3, status=503)
    faults("Operations.GetOperation", count=1, status=429)
    done = await cloudrun.set_traffic(served, [TrafficTarget(revision=rev, percent=100)], timeout_s=60)
    assert [t.revision for t in done.traffic] == [rev]
    assert pending(run_clients) == []  # every injected answer was met, and survived


@pytest.mark.docker
@pytest.mark.sandbox
async def test_logging_reads_ride_out_429_and_503_bursts(settings: Settings, run_clients: RunClients, faults: Any,
                                                         served: str) -> None:
    reader = LogReader(settings)
    svc = run_clients.services.get_service(name=run_clients.service_name(served))
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    faults("LoggingServiceV2.ListLogEntries", count=2, status=429, message="Quota exceeded for quota metric 'Read requests'")
    faults("LoggingServiceV2.ListLogEntries", count=1, status=503)
    entries = await reader.revision_entries(service=served, revision=rev, start=datetime.now(UTC) - timedelta(minutes=5))
    assert pending(run_clients) == []
    assert entries and all(e["resource"]["labels"]["revision_name"] == rev for e in entries)


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_logging_403_fails_at_once_naming_roles_logging_viewer(
        settings: Settings, run_clients: RunClients, faults: Any, served: str) -> None:
    faults("LoggingServiceV2.ListLogEntries", count=3, status=403,
           message="Permission 'logging.logEntries.list' denied on resource (or it may not exist).")
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        await LogReader(settings).revision_entries(service=served, revision="r", start=datetime.now(UTC))
    assert time.monotonic() - started < 5  # no backoff spent on a 403
    assert [f["count"] for f in pending(run_clients)] == [2]  # exactly one call: not retried
    text = str(info.value)
    assert "permission denied by the Cloud Logging API" in text and "logging.logEntries.list" in text
    assert "roles/logging.viewer" in text and "roles/run.admin" not in text


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_cloud_run_403_fails_at_once_naming_roles_run_admin(
        settings: Settings, run_clients: RunClients, faults: Any, served: str) -> None:
    faults("Services.GetService", count=2, status=403, message="Permission 'run.services.get' denied")
    with pytest.raises(StageError) as info:
        await CloudRun(settings).get_service(served)
    assert [f["count"] for f in pending(run_clients)] == [1]
    assert "roles/run.admin" in str(info.value) and "roles/logging.viewer" not in str(info.value)


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_burst_longer_than_the_retry_bound_fails_naming_the_api_and_the_bound(
        settings: Settings, run_clients: RunClients, faults: Any, served: str) -> None:
    bounded = settings.model_copy(update={"logs": settings.logs.model_copy(update={"read_retries": 2})})
    faults("LoggingServiceV2.ListLogEntries", count=-1, status=503)
    with pytest.raises(StageError) as info:
        await LogReader(bounded).revision_entries(service=served, revision="r", start=datetime.now(UTC))
    text = str(info.value)
    assert "read logs of r" in text and "(still 503 after 2 retries)" in text
    assert "Cloud Logging API unavailable" in text


@pytest.mark.docker
@pytest.mark.sandbox
async def test_an_operation_that_never_completes_hits_its_deadline_and_says_what_it_waited_for(
        settings: Settings, run_clients: RunClients, faults: Any, served: str) -> None:
    cloudrun = CloudRun(settings)
    svc = await cloudrun.get_service(served)
    assert svc is not None
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    faults("Operations.GetOperation", count=-1, undone=True)
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        await cloudrun.set_traffic(served, [TrafficTarget(revision=rev, percent=100, tag="x")], timeout_s=2)
    elapsed = time.monotonic() - started
    assert elapsed < 10  # the poller stops at the deadline (or one poll interval before it)
    assert str(info.value).startswith(f"set traffic of {served}: operation ")
    assert "still not done at its 2 s deadline (the Cloud Run API kept answering done=false)" in str(info.value)


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_logging_403_mid_release_fails_the_logs_gate_naming_the_viewer_role_and_rolls_back(
        prefect_api: None, scenario: Any, run_clients: RunClients, sample_image: Any, faults: Any) -> None:
    from tests.pipeline.test_e2e import baseline, run_flow, serving

    service = unique_name("lg403")
    try:
        before = baseline(run_clients, service, sample_image.digest_ref)
        scenario.add_service("svc")
        # no bake: the first Cloud Logging read is the logs gate's (a bake would read first and fail the same way)
        config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]", bake_s=0)
        scenario.commit()
        faults("LoggingServiceV2.ListLogEntries", count=-1, status=403,
               message="Permission 'logging.logEntries.list' denied on resource (or it may not exist).")
        run = await run_flow(scenario, config)
        report = run.report(service)
        assert report["verdict"] == "fail" and report["decided_by"] == "logs"
        logs = run.stage(service, "logs")
        assert "permission denied by the Cloud Logging API" in logs["summary"]
        assert "roles/logging.viewer" in logs["summary"] and "roles/run.admin" not in json.dumps(report)
        assert report["rollback"]["performed"] is True and report["rollback"]["ok"] is True
        assert serving(run_clients, service) == {before: 100}
    finally:
        try:
            run_clients.services.delete_service(name=run_clients.service_name(service)).result(timeout=60)
        except gexc.NotFound:
            pass


@pytest.mark.docker
@pytest.mark.sandbox
async def test_operation_polls_failing_past_the_retry_bound_are_not_reported_as_a_running_operation(
        settings: Settings, run_clients: RunClients, faults: Any, served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import stagecheck.clients.cloudrun as cloudrun_module

    monkeypatch.setattr(cloudrun_module, "_READ_RETRY", cloudrun_module._READ_RETRY.with_timeout(1.0))
    cloudrun = CloudRun(settings)
    svc = await cloudrun.get_service(served)
    assert svc is not None
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    faults("Operations.GetOperation", count=-1, status=503)
    with pytest.raises(StageError) as info:
        await cloudrun.set_traffic(served, [TrafficTarget(revision=rev, percent=100, tag="y")], timeout_s=30)
    text = str(info.value)
    assert text.startswith(f"set traffic of {served} (polling the operation) (gave up retrying: Timeout of 1.0s")
    assert "Cloud Run API unavailable" in text and "still not done" not in text


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_release_rides_out_bursts_of_429_and_503_from_both_apis(
        prefect_api: None, scenario: Any, run_clients: RunClients, sample_image: Any, faults: Any) -> None:
    from tests.pipeline.test_e2e import baseline, run_flow, serving

    service = unique_name("burst")
    try:
        baseline(run_clients, service, sample_image.digest_ref)
        scenario.add_service("svc")
        config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
        scenario.commit()
        faults("Services.GetService", count=2, status=503)
        faults("Services.GetService", count=1, status=429)
        faults("Revisions.GetRevision", count=2, status=503)
        faults("Operations.GetOperation", count=2, status=429)
        faults("LoggingServiceV2.ListLogEntries", count=2, status=503)
        faults("LoggingServiceV2.ListLogEntries", count=1, status=429)
        run = await run_flow(scenario, config)
        report = run.report(service)
        assert report["verdict"] == "pass", report["reasons"]
        assert pending(run_clients) == []  # every injected error was met, and survived
        assert serving(run_clients, service) == {report["revision"]["name"]: 100}
    finally:
        try:
            run_clients.services.delete_service(name=run_clients.service_name(service)).result(timeout=60)
        except gexc.NotFound:
            pass
