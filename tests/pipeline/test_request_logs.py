"""Issue 18: the logs gate and the bake judge what Cloud Run logged — each request entry by itself, slow
failures written late, shutdown lines of a scale-in — through the real tasks, the real google-cloud-logging
client (`LogReader`), real ID tokens and the sandbox's Cloud Run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.cloud import run_v2
from google.protobuf import duration_pb2

from sandbox.instances import NO_INSTANCE_MESSAGE
from stagecheck.clients.cloudlogging import LogReader
from stagecheck.clients.identity import IdTokens
from stagecheck.log_analysis.requests import ADVISORY_USER_AGENT, PROBE_USER_AGENT
from stagecheck.model import Status
from stagecheck.prober import ProbeTarget
from stagecheck.settings import Endpoints, LogRules, ProbePolicy, ServiceConfig, Settings, UrlKind
from tasks.bake import watch_release
from tasks.logs import analyse_logs
from tests.fixtures_sandbox import FAST_POLL
from tests.pipeline.test_e2e import created  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

PROBES = ProbePolicy(request_timeout_s=10.0)


def _reader(sandbox: Any, **logs: Any) -> LogReader:
    settings = Settings(project=sandbox.project, region=sandbox.region, registry=f"{sandbox.registry}/x",
                        services=(ServiceConfig(name="x"),), logs=LogRules(**logs),
                        endpoints=Endpoints(logging_api=sandbox.logging_api, credentials_file=sandbox.credentials_file))
    return LogReader(settings)


def _create(run_clients: Any, name: str, env: dict[str, str], **template: Any) -> tuple[str, str]:
    """A service serving one revision: (its URL, the revision)."""
    container = run_v2.Container(image=template.pop("image"), env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
                                 **template.pop("container", {}))
    op = run_clients.services.create_service(parent=run_clients.parent, service_id=name, service=run_v2.Service(
        template=run_v2.RevisionTemplate(containers=[container], **template)))
    svc = op.result(polling=FAST_POLL, timeout=60)
    return str(svc.uri), str(svc.latest_ready_revision.rsplit("/", 1)[-1])


async def _send(client: httpx.AsyncClient, run_clients: Any, url: str, path: str, agent: str) -> int:
    answer = await client.get(f"{url}{path}", headers={**run_clients.invoke_headers(url), "User-Agent": agent})
    return answer.status_code


def _rate(result: Any) -> Any:
    return next(c for c in result.criteria if c.name.startswith("5xx rate"))


async def test_the_logs_gate_judges_each_request_entry_and_counts_probes_apart(
        sandbox: Any, run_clients: Any, sample_image: Any, created: Any) -> None:  # noqa: F811
    """Two releases. `app503`: the app's own 503 answers, each followed by 200s (today's code excused them
    as a cold start): the rate counts them. `refused`: Cloud Run's front end refused one request ("no
    available instance", 0 s, no instance: firebase/firebase-functions#965) and everything else was served
    (today's code failed the gate at 0 %): excused and listed."""
    app503, refused = created("app503"), created("refused")
    urls = {name: _create(run_clients, name, {"HEALTH_HTTP_STATUS": "503"} if name == app503 else {},
                          image=sample_image.ref) for name in (app503, refused)}
    start = datetime.now(UTC) - timedelta(seconds=5)
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": f"proxy.service.{refused}", "status": 500,
                                                      "message": NO_INSTANCE_MESSAGE})
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        url = urls[app503][0]
        sent = [await _send(client, run_clients, url, "/health", PROBE_USER_AGENT)]  # the app's 503
        sent += [await _send(client, run_clients, url, "/", PROBE_USER_AGENT) for _ in range(4)]
        sent += [await _send(client, run_clients, url, "/", "curl/8.5.0") for _ in range(2)]
        sent += [await _send(client, run_clients, url, "/health", ADVISORY_USER_AGENT)]  # an advisory URL's probe
        assert sent == [503, 200, 200, 200, 200, 200, 200, 503]
        url = urls[refused][0]
        refused_sent = [await _send(client, run_clients, url, "/health", PROBE_USER_AGENT) for _ in range(4)]
        assert refused_sent == [500, 200, 200, 200]
    last_probe_at = datetime.now(UTC) - timedelta(seconds=1)
    reader = _reader(sandbox, settle_s=15)

    results = {name: await analyse_logs.fn(reader, service=name, revision=revision, previous_revision=None,
                                           start=start, last_probe_at=last_probe_at, rules=LogRules(settle_s=15),
                                           probes=PROBES)
               for name, (_, revision) in urls.items()}

    bad = results[app503]
    assert bad.status is Status.FAIL and bad.summary.startswith("5xx rate "), bad.summary
    data = bad.data
    assert (data["server_errors"], data["counted_requests"], data["platform_refusals"]) == (1, 7, 0)
    assert data["by_origin"] == {"advisory": [1, 1], "other": [2, 0], "probe": [5, 1]}
    assert data["server_error_urls"] == {"503 /health": 1}  # the advisory probe's 503 is shown, not gated
    assert "stagecheck's probes 5 (1 failed)" in _rate(bad).observed
    assert "other traffic 2 (0 failed)" in _rate(bad).observed

    good = results[refused]
    assert good.status is Status.PASS, good.summary
    assert (good.data["platform_refusals"], good.data["server_errors"]) == (1, 0)
    assert any(e.startswith("platform refusal ") for e in _rate(good).evidence)  # its insertId, for the record


async def test_the_bake_sees_a_504_written_after_later_entries_were_read(
        sandbox: Any, run_clients: Any, sample_image: Any, created: Any) -> None:  # noqa: F811
    """A request entry is stamped when the request arrived and written when it is answered: a 504 at a 6 s
    request timeout lands behind ~6 s of probe entries the bake has already read. Each pass re-reads the
    revision's timeout back (de-duplicated on insertId), so the bake sees it and stops."""
    name = created("late504")
    url, revision = _create(run_clients, name, {"SLOW_RESPONSE_S": "20"}, image=sample_image.ref,
                            timeout=duration_pb2.Duration(seconds=6))
    target = ProbeTarget(url=f"{url}/health", kind=UrlKind.SERVICE, audience=url)
    tokens = IdTokens(sandbox.credentials_file)

    async def slow_request(client: httpx.AsyncClient) -> int:
        await asyncio.sleep(1.0)  # the bake is under way (a pause of the scenario, not a wait for a condition)
        return await _send(client, run_clients, url, "/slow", "curl/8.5.0")

    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        slow = asyncio.create_task(slow_request(client))
        result = await watch_release.fn(client, _reader(sandbox), label="bake after 100 %", service=name,
                                        revision=revision, previous_revision=None,
                                        since=datetime.now(UTC) - timedelta(seconds=2), targets=[target],
                                        duration_s=30.0, interval_s=0.5, probes=PROBES, rules=LogRules(),
                                        tokens=tokens, overlap_s=6.0)
        assert await slow == 504
    assert result.status is Status.FAIL, result.summary
    assert result.data["detected_by"] == "logs"
    assert result.data["reason"].startswith("5xx rate "), result.data["reason"]
    assert result.data["time_to_detect_s"] < 25


async def test_a_scale_in_during_the_bake_is_not_blamed_on_the_release_but_a_liveness_restart_is(
        sandbox: Any, run_clients: Any, sample_image: Any, created: Any) -> None:  # noqa: F811
    """`npm`: an instance stopped by scale-in prints npm's SIGTERM lines and Cloud Run logs
    "Container called exit(143)." (at ERROR in the sandbox): no crash, the bake passes. `liveness`: a
    liveness probe that fails restarts the container: its ERROR line is a new signature, the bake fails."""
    npm, liveness = created("npm"), created("liveness")
    npm_url, npm_rev = _create(run_clients, npm, {"SHUTDOWN_STYLE": "npm"}, image=sample_image.ref)
    failing = run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/missing"), period_seconds=1, failure_threshold=2)
    live_url, live_rev = _create(run_clients, liveness, {}, image=sample_image.ref,
                                 container={"liveness_probe": failing})
    tokens = IdTokens(sandbox.credentials_file)

    async def scale_in() -> None:
        await asyncio.sleep(2.0)  # during the bake (a pause of the scenario, not a wait for a condition)
        await asyncio.to_thread(run_clients.admin, "POST", f"/sandbox/v1/services/{npm}/scale-in", {"instances": 1})

    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        stopping = asyncio.create_task(scale_in())
        npm_result, live_result = await asyncio.gather(*(
            watch_release.fn(client, _reader(sandbox), label="bake after 100 %", service=service, revision=rev,
                             previous_revision=None, since=datetime.now(UTC) - timedelta(seconds=2),
                             targets=[ProbeTarget(url=f"{url}/health", kind=UrlKind.SERVICE, audience=url)],
                             duration_s=15.0, interval_s=0.5, probes=PROBES, rules=LogRules(), tokens=tokens,
                             overlap_s=300.0)
            for service, rev, url in ((npm, npm_rev, npm_url), (liveness, live_rev, live_url))))
        await stopping

    assert npm_result.status is Status.PASS, npm_result.summary
    assert npm_result.data["log_entries"] > 0
    logged = [str(e.payload) for e in _entries(sandbox, npm)]
    assert "Container called exit(143)." in logged and "npm error signal SIGTERM" in logged  # it was seen

    assert live_result.status is Status.FAIL, live_result.summary
    assert live_result.data["detected_by"] == "logs"
    assert "LIVENESS HTTP probe failed" in live_result.data["reason"]


def _entries(sandbox: Any, service: str) -> list[Any]:
    from tests.fixtures_sandbox import logging_client_for

    client = logging_client_for(sandbox)
    return list(client.list_entries(filter_=f'resource.labels.service_name="{service}"', page_size=1000))
