"""Issue 18, sandbox side: request entries stamped at arrival and written at completion, the front end's
own answers shaped as Cloud Run's (refusals, 504 past `template.timeout`), instances stopped with SIGTERM
and 10 s of grace, `livenessProbe` restarts — through the real run_v2 and google-cloud-logging clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from google.cloud import run_v2
from google.protobuf import duration_pb2

from sandbox.instances import NO_INSTANCE_MESSAGE
from sandbox.proxy import TIMEOUT_MESSAGE
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, logging_client_for, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def _entries(sandbox: Any, service: str, log: str, extra: str = "") -> list[Any]:
    client = logging_client_for(sandbox)
    query = (f'resource.labels.service_name="{service}" AND logName:"{log}"' + (f" AND {extra}" if extra else ""))
    return list(client.list_entries(filter_=query, order_by="timestamp asc", page_size=1000))


def _get(clients: RunClients, url: str, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers={**clients.invoke_headers(url), **headers}, timeout=30,
                     trust_env=False)


def _create(clients: RunClients, name: str, template: run_v2.RevisionTemplate) -> run_v2.Service:
    op = clients.services.create_service(parent=clients.parent, service_id=name,
                                         service=run_v2.Service(template=template))
    service: run_v2.Service = op.result(polling=FAST_POLL, timeout=60)
    return service


def test_a_slow_request_is_stamped_at_arrival_and_past_the_timeout_answered_504(
        sandbox: Any, run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]) -> None:
    name = new_service("slow")
    container = run_v2.Container(image=sample_image.ref, env=[run_v2.EnvVar(name="SLOW_RESPONSE_S", value="4")])
    svc = _create(run_clients, name, run_v2.RevisionTemplate(containers=[container],
                                                             timeout=duration_pb2.Duration(seconds=2)))
    started = time.monotonic()
    answer = _get(run_clients, svc.uri, "/slow")
    took = time.monotonic() - started
    # template.timeout: no answer within 2 s is a 504 from the front end, in Cloud Run's words
    assert answer.status_code == 504 and 1.8 <= took < 3.9, took
    (entry,) = _entries(sandbox, name, "requests", "httpRequest.status=504")
    api = entry.to_api_repr()
    assert api["textPayload"] == TIMEOUT_MESSAGE
    assert api["labels"]["instanceId"]  # an instance had the request
    assert float(api["httpRequest"]["latency"].rstrip("s")) >= 1.8
    # stamped when it arrived, written when it was answered: receiveTimestamp is the later by the latency
    assert (entry.received_timestamp - entry.timestamp).total_seconds() >= 1.8


def test_a_front_end_refusal_has_no_instance_about_no_latency_and_cloud_runs_words(
        sandbox: Any, run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]) -> None:
    name = new_service("refuse")
    svc = deploy(run_clients, name, sample_image.ref)
    run_clients.admin("POST", "/sandbox/v1/faults", {"method": f"proxy.service.{name}", "status": 500,
                                                      "message": NO_INSTANCE_MESSAGE})
    assert _get(run_clients, svc.uri, "/health").status_code == 500
    (entry,) = _entries(sandbox, name, "requests", "httpRequest.status=500")
    api = entry.to_api_repr()
    assert api["textPayload"] == NO_INSTANCE_MESSAGE and "instanceId" not in api.get("labels", {})
    assert float(api["httpRequest"]["latency"].rstrip("s")) < 0.5  # firebase/firebase-functions#965: 0 ms


def test_scale_in_stops_an_instance_with_sigterm_and_its_shutdown_lines_are_logged(
        sandbox: Any, run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]) -> None:
    name = new_service("sigterm")
    deploy(run_clients, name, sample_image.ref, env={"SHUTDOWN_STYLE": "npm"})
    assert run_clients.admin("POST", f"/sandbox/v1/services/{name}/scale-in", {"instances": 1}) == {"stopped": 1}

    def shutdown_lines() -> list[str]:
        return [str(e.payload) for e in _entries(sandbox, name, "stderr") + _entries(sandbox, name, "varlog")]

    lines = wait_for(lambda: (found := shutdown_lines()) and "Container called exit(143)." in found and found,
                     timeout=20)
    # the app saw SIGTERM (not SIGKILL): it printed npm's lines and exited 143 itself
    assert "npm error signal SIGTERM" in lines
    assert "Container called exit(137)." not in lines


def test_a_failing_liveness_probe_restarts_the_container(
        sandbox: Any, run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]) -> None:
    name = new_service("live")
    probe = run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/health"), period_seconds=1, failure_threshold=2,
                         timeout_seconds=1)
    container = run_v2.Container(image=sample_image.ref, env=[run_v2.EnvVar(name="HEALTH_HTTP_STATUS", value="503")],
                                 liveness_probe=probe)
    _create(run_clients, name, run_v2.RevisionTemplate(containers=[container]))

    def restarted() -> list[str]:
        system = [str(e.payload) for e in _entries(sandbox, name, "varlog")]
        starts = [line for line in system if line.startswith("Starting new instance")]
        failed = [line for line in system if line.startswith("LIVENESS HTTP probe failed 2 times")]
        return system if failed and len(starts) >= 3 else []  # two warm instances, then a restart

    system = wait_for(restarted, timeout=30)
    assert any(line.startswith("Container called exit(") for line in system)


def test_requests_in_flight_while_others_finish_are_written_out_of_timestamp_order(
        sandbox: Any, run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]) -> None:
    """A reader that only asks for `timestamp >= newest seen` misses the slow entry: it is written last."""
    name = new_service("order")
    svc = deploy(run_clients, name, sample_image.ref, env={"SLOW_RESPONSE_S": "2"})
    slow = threading.Thread(target=_get, args=(run_clients, svc.uri, "/slow"))
    slow.start()
    time.sleep(0.3)  # the slow request has arrived (a pause of the test itself, not a wait for a condition)
    assert _get(run_clients, svc.uri, "/health").status_code == 200
    fast = _entries(sandbox, name, "requests")
    assert [e.http_request["requestUrl"].rsplit("/", 1)[-1] for e in fast] == ["health"]
    slow.join()
    both = _entries(sandbox, name, "requests")
    assert [e.http_request["requestUrl"].rsplit("/", 1)[-1] for e in both] == ["slow", "health"]
    assert both[0].timestamp < fast[0].timestamp  # stamped before an entry a reader had already seen
