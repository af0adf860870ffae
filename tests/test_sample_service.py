"""The sample service image (examples/sample-service): built and pushed with the Docker SDK, run
on the real engine with host networking, probed over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import httpx
import pytest
from docker.models.containers import Container

from localenv.infra import InfraInfo
from localenv.processes import wait_until
from sandbox.sample_image import SampleImage

pytestmark = pytest.mark.docker

TEST_LABEL = "dev.stagecheck.test"
RUN_ID = uuid.uuid4().hex[:12]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=3.0)


def first_response(url: str, timeout_s: float) -> tuple[httpx.Response, float]:
    """Poll `url` until it answers; returns the response and when (monotonic) it came."""
    deadline = time.monotonic() + timeout_s
    with http_client() as client:
        while True:
            try:
                return client.get(url), time.monotonic()
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def stdout_lines(container: Container) -> list[dict[str, Any]]:
    raw = container.logs(stdout=True, stderr=False).decode()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def stderr_text(container: Container) -> str:
    return container.logs(stdout=False, stderr=True).decode()


RunService = Callable[..., tuple[Container, int]]


@pytest.fixture
def run_service(docker_client: docker.DockerClient, sample_image: SampleImage) -> Iterator[RunService]:
    """Start the sample image on a free port (host network); every container is removed after."""

    def run(**env: str) -> tuple[Container, int]:
        port = int(env.pop("PORT", free_port()))
        container = docker_client.containers.run(
            sample_image.ref,
            detach=True,
            network_mode="host",
            environment={"PORT": str(port), "K_REVISION": "sample-00001-abc", **env},
            labels={TEST_LABEL: RUN_ID},
        )
        return container, port

    yield run
    for container in docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"}):
        container.remove(force=True)


def test_image_is_pushed_with_the_reported_digest(sample_image: SampleImage, docker_env: InfraInfo) -> None:
    repository, tag = sample_image.ref.split("/", 1)[1].split(":")
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    with http_client() as client:
        response = client.get(
            f"http://{docker_env.registry}/v2/{repository}/manifests/{tag}", headers={"Accept": accept}
        )
    assert response.status_code == 200
    assert response.headers["docker-content-digest"] == sample_image.digest
    assert sample_image.digest_ref == f"{docker_env.registry}/{repository}@{sample_image.digest}"
    assert 1_000_000 < sample_image.size < 5_000_000  # a static busybox and three scripts


def test_health_endpoints_answer_json_and_requests_are_logged(run_service: RunService) -> None:
    container, port = run_service(K_SERVICE="checkout")
    base = f"http://127.0.0.1:{port}"
    health, _ = first_response(f"{base}/health", timeout_s=5)

    with http_client() as client:
        api_health = client.get(f"{base}/api/health")
        root = client.get(f"{base}/")
        missing = client.get(f"{base}/nope?x=1")

    for response in (health, api_health):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["status"] == "healthy"
        assert body["service"] == "checkout"
        assert body["revision"] == "sample-00001-abc"
        assert isinstance(body["uptime_s"], float) and 0 <= body["uptime_s"] < 30
    assert root.status_code == 200
    assert missing.status_code == 404

    def request_lines() -> list[dict[str, Any]]:
        return [line for line in stdout_lines(container) if "httpRequest" in line]

    assert wait_until(lambda: len(request_lines()) >= 4, 5)
    lines = stdout_lines(container)
    assert lines[0]["severity"] == "INFO" and lines[0]["message"].startswith("starting checkout")
    messages = [line["message"] for line in request_lines()]
    assert "GET /health 200" in messages and "GET /api/health 200" in messages
    assert "GET /nope?x=1 404" in messages
    not_found = next(line for line in request_lines() if line["httpRequest"]["status"] == 404)
    assert not_found["severity"] == "WARNING"
    assert not_found["httpRequest"]["requestUrl"] == "/nope?x=1"
    assert all(line["revision"] == "sample-00001-abc" for line in lines)


def test_degraded_status_and_forced_http_status(run_service: RunService) -> None:
    _, degraded_port = run_service(HEALTH_STATUS="degraded")
    failing, failing_port = run_service(HEALTH_HTTP_STATUS="500")

    degraded, _ = first_response(f"http://127.0.0.1:{degraded_port}/health", timeout_s=5)
    broken, _ = first_response(f"http://127.0.0.1:{failing_port}/api/health", timeout_s=5)

    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    assert broken.status_code == 500 and broken.json()["status"] == "healthy"
    assert wait_until(
        lambda: any(
            line.get("severity") == "ERROR" and "500" in line["message"] for line in stdout_lines(failing)
        ),
        5,
    )


async def test_answers_concurrent_requests(run_service: RunService) -> None:
    _, port = run_service()
    url = f"http://127.0.0.1:{port}/health"
    first_response(url, timeout_s=5)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(trust_env=False, timeout=5.0, limits=limits) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get(url) for _ in range(30)))
        elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 30
    # A listen backlog too small for the burst shows up as 1 s SYN retransmits (or read timeouts).
    assert elapsed < 2.5, f"30 concurrent requests took {elapsed:.2f} s"


def test_starts_fast_and_startup_delay_postpones_the_first_answer(run_service: RunService) -> None:
    started = time.monotonic()
    _, port = run_service()
    _, answered = first_response(f"http://127.0.0.1:{port}/health", timeout_s=5)
    quick = answered - started

    started = time.monotonic()
    _, port = run_service(STARTUP_DELAY_S="1.5")
    _, answered = first_response(f"http://127.0.0.1:{port}/health", timeout_s=10)
    delayed = answered - started

    assert quick < 2.0, f"first 200 took {quick:.2f} s"
    assert delayed >= 1.5, f"answered after {delayed:.2f} s despite STARTUP_DELAY_S=1.5"


def test_crash_after_exits_nonzero_with_a_crash_signature(run_service: RunService) -> None:
    container, port = run_service(CRASH_AFTER_S="1")
    first_response(f"http://127.0.0.1:{port}/health", timeout_s=5)  # it serves until it crashes

    result = container.wait(timeout=15)

    assert result["StatusCode"] != 0
    assert stdout_lines(container)[-1]["severity"] == "CRITICAL"
    assert "RuntimeError: connection pool exhausted" in stderr_text(container)


def test_crash_on_start_prints_a_python_traceback(run_service: RunService) -> None:
    container, _ = run_service(CRASH_ON_START="1")
    result = container.wait(timeout=15)
    assert result["StatusCode"] != 0
    err = stderr_text(container)
    assert err.startswith("Traceback (most recent call last):")
    assert "ModuleNotFoundError: No module named" in err


def test_openapi_document_is_the_selected_variant_or_404(run_service: RunService) -> None:
    from pathlib import Path

    variants = Path(__file__).resolve().parents[1] / "examples" / "sample-service" / "app" / "openapi"
    _, with_doc = run_service(OPENAPI_VARIANT="removed-operation")
    _, without = run_service()
    served, _ = first_response(f"http://127.0.0.1:{with_doc}/openapi.json", timeout_s=5)
    missing, _ = first_response(f"http://127.0.0.1:{without}/openapi.json", timeout_s=5)
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == json.loads((variants / "removed-operation.json").read_text())
    assert missing.status_code == 404
    for bad in ("../etc/passwd", "no-such-variant"):
        container, _ = run_service(OPENAPI_VARIANT=bad)
        assert container.wait(timeout=15)["StatusCode"] != 0
        assert "OPENAPI_VARIANT" in stdout_lines(container)[-1]["message"]


def test_invalid_configuration_is_logged_and_exits(run_service: RunService) -> None:
    container, _ = run_service(HEALTH_STATUS="sideways")
    assert container.wait(timeout=15)["StatusCode"] != 0
    (line,) = stdout_lines(container)
    assert line["severity"] == "ERROR" and "HEALTH_STATUS" in line["message"]


def test_error_rate_emits_error_lines_with_varying_numbers(run_service: RunService) -> None:
    container, _ = run_service(ERROR_RATE="20")

    def errors() -> list[str]:
        return [line["message"] for line in stdout_lines(container) if line["severity"] == "ERROR"]

    assert wait_until(lambda: len(errors()) >= 6, 5)
    messages = errors()
    assert len(set(messages)) > 1, "numbers and ids should vary per line"
    shapes = {re.sub(r"[0-9a-f]{6}\)", "<id>)", re.sub(r"\d{4} ms", "<n> ms", m)) for m in messages}
    assert shapes == {"payment backend timeout after <n> ms (request id <id>)"}


def test_custom_error_message_placeholders(run_service: RunService) -> None:
    container, _ = run_service(ERROR_RATE="20", ERROR_MESSAGE='db "orders" failed: {n} retries, trace {id}')

    def errors() -> list[str]:
        return [line["message"] for line in stdout_lines(container) if line["severity"] == "ERROR"]

    assert wait_until(lambda: len(errors()) >= 2, 5)
    assert all(re.fullmatch(r'db "orders" failed: \d+ retries, trace [0-9a-f]{6}', m) for m in errors())


def test_error_after_delays_the_error_lines(run_service: RunService) -> None:
    container, port = run_service(ERROR_RATE="20", ERROR_AFTER_S="1.5")
    first_response(f"http://127.0.0.1:{port}/health", timeout_s=5)
    started = time.monotonic()

    def errors() -> list[str]:
        return [line["message"] for line in stdout_lines(container) if line["severity"] == "ERROR"]

    assert not errors()
    assert wait_until(lambda: len(errors()) >= 2, 10)
    assert time.monotonic() - started >= 0.5  # nothing at first, ERROR lines later


def test_traceback_every_prints_a_python_traceback_and_keeps_serving(run_service: RunService) -> None:
    container, port = run_service(TRACEBACK_EVERY_S="0.3")
    assert wait_until(lambda: stderr_text(container).count("KeyError: 'discount_code'") >= 2, 10)
    err = stderr_text(container)
    assert err.startswith("Traceback (most recent call last):")
    assert '  File "/app/pricing.py", line 21, in price_of' in err
    assert first_response(f"http://127.0.0.1:{port}/health", timeout_s=5)[0].status_code == 200
