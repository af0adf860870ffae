"""The prober against real local servers on 127.0.0.1: a scripted HTTP app (starlette on uvicorn, in a
thread) and a WebSocket echo server. Policy-heavy tests inject a clock whose `sleep` jumps forward
(backoffs cost no wall time; request latency is still real); others run in real time with short
deadlines and generous margins."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve

from stagecheck.model import Status
from stagecheck.probe_policy import backoff_delay
from stagecheck.prober import (
    ProbeResult,
    ProbeTarget,
    describe_error,
    probe_many,
    probe_url,
    probe_websocket,
    safe_url,
    websocket_url,
)
from stagecheck.settings import DegradedPolicy, ProbeAuth, ProbeMode, ProbePolicy, UrlKind

HEALTHY = b'{"status": "healthy"}'
FAST = ProbePolicy(
    deadline_s=60,
    consecutive_successes=3,
    request_timeout_s=2,
    initial_backoff_s=0.2,
    max_backoff_s=3,
    jitter=0.3,
    success_interval_s=0.2,
)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = HEALTHY
    content_type: str = "application/json"
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """Each `script(...)` gets its own path; its replies are served in order, the last one repeating."""

    def __init__(self) -> None:
        self.base = ""
        self._scripts: dict[str, list[Reply]] = {}
        self._hits: Counter[str] = Counter()
        self._headers: dict[str, list[dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._endpoint)])

    def script(self, *replies: Reply) -> str:
        path = f"/health/{uuid.uuid4().hex}"
        with self._lock:
            self._scripts[path] = list(replies)
        return self.base + path

    def hits(self, url: str) -> int:
        with self._lock:
            return self._hits[url.removeprefix(self.base)]

    def headers_seen(self, url: str) -> list[dict[str, str]]:
        with self._lock:
            return self._headers.get(url.removeprefix(self.base), [])

    async def _endpoint(self, request: Request) -> Response:
        path = request.url.path
        with self._lock:
            script = self._scripts.get(path)
            if script is None:
                return Response(b"no script", status_code=404)
            self._hits[path] += 1
            self._headers.setdefault(path, []).append(dict(request.headers))
            reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return Response(
            reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers
        )


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    # IPPROTO_TCP explicitly: with proto 0 asyncio does not set TCP_NODELAY on accepted
    # connections, and every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    scripted.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        scripted.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test HTTP server did not start")
        time.sleep(0.01)
    try:
        yield scripted
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


class JumpingClock:
    """Real monotonic time plus an offset that `sleep` advances: backoffs without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# --- HTTP probes ------------------------------------------------------------------------------------


async def test_cold_start_503s_are_retried_with_backoff_then_pass(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(503, b"starting"), Reply(503), Reply(503), Reply())
    clock = JumpingClock()
    result = await probe_url(
        client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=FAST,
        clock=clock, sleep=clock.sleep, rand=lambda: 0.5,
    )  # fmt: skip
    assert result.status is Status.PASS, result.reason
    assert result.cold_start_retries == 3
    assert server.hits(url) == 6
    assert [a.status for a in result.attempts] == [503, 503, 503, 200, 200, 200]
    expected_sleeps = [backoff_delay(i, FAST, 0.5) for i in range(3)] + [FAST.success_interval_s] * 2
    assert clock.sleeps == pytest.approx(expected_sleeps)
    assert result.first_success_s is not None and result.first_success_s >= sum(expected_sleeps[:3])
    summary = result.evidence().summary
    assert summary.startswith(f"GET {url}: 3x 503 (cold start) then 3x 200 healthy; p50 ")
    assert "max" in summary


async def test_real_time_cold_start_passes(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(503), Reply(429), Reply())
    policy = FAST.model_copy(update={"initial_backoff_s": 0.05, "success_interval_s": 0.05, "deadline_s": 10})
    started = time.monotonic()
    result = await probe_url(client, url, kind=UrlKind.SERVICE, mode=ProbeMode.REQUIRED, policy=policy)
    assert result.status is Status.PASS
    assert result.cold_start_retries == 2
    assert 0.1 < result.duration_s < 5
    assert time.monotonic() - started < 5


async def test_500_fails_at_once_without_retry(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(500, b"Traceback: KeyError 'DATABASE_URL'", "text/plain"), Reply())
    result = await probe_url(client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=FAST)
    assert result.status is Status.FAIL
    assert server.hits(url) == 1
    assert "500 Internal Server Error" in result.reason and "not retried" in result.reason
    assert "KeyError 'DATABASE_URL'" in result.reason  # the body excerpt explains the failure
    assert result.attempts[0].body == "Traceback: KeyError 'DATABASE_URL'"


async def test_always_503_fails_at_a_real_deadline(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(503))
    policy = FAST.model_copy(update={"deadline_s": 1.0, "initial_backoff_s": 0.05, "max_backoff_s": 0.2})
    started = time.monotonic()
    result = await probe_url(client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=policy)
    elapsed = time.monotonic() - started
    assert result.status is Status.FAIL
    assert result.reason.startswith(f"deadline 1s reached after {len(result.attempts)} attempts; last: 503")
    assert len(result.attempts) >= 3 and server.hits(url) == len(result.attempts)
    assert result.cold_start_retries == len(result.attempts)
    assert result.first_success_s is None
    assert elapsed < 1.0 + 1.0  # never runs (much) past the deadline


async def test_always_503_with_a_long_deadline_stops_at_the_deadline(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(503))
    clock = JumpingClock()
    result = await probe_url(
        client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=FAST,
        clock=clock, sleep=clock.sleep, rand=lambda: 0.0,
    )  # fmt: skip
    assert result.status is Status.FAIL and "deadline 60s reached" in result.reason
    assert sum(clock.sleeps) <= 60
    assert max(clock.sleeps) == pytest.approx(3.0 * 0.7)  # capped backoff, jitter at its floor
    assert result.attempts[-1].at_s < 60
    assert len(result.attempts) > 20


@pytest.mark.parametrize(
    ("policy_value", "status"), [(DegradedPolicy.WARN, Status.WARN), (DegradedPolicy.FAIL, Status.FAIL)]
)
async def test_degraded_is_warn_or_fail_by_policy(
    server: ScriptedServer, client: httpx.AsyncClient, policy_value: DegradedPolicy, status: Status
) -> None:
    url = server.script(Reply(body=b'{"status": "degraded", "checks": {"cache": "down"}}'))
    policy = FAST.model_copy(update={"degraded": policy_value, "success_interval_s": 0.0})
    result = await probe_url(client, url, kind=UrlKind.SERVICE, mode=ProbeMode.REQUIRED, policy=policy)
    assert result.status is status
    assert "degraded" in result.reason
    assert "3x 200 degraded" in result.evidence().summary


async def test_malformed_health_json_fails_without_retry(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(body=b'{"status": "healthy"'))
    result = await probe_url(client, url, kind=UrlKind.LB, mode=ProbeMode.REQUIRED, policy=FAST)
    assert result.status is Status.FAIL
    assert "malformed" in result.reason
    assert server.hits(url) == 1
    assert result.attempts[0].body == '{"status": "healthy"'


async def test_an_html_page_from_a_load_balancer_is_not_healthy(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(body=b"<html><body>Welcome</body></html>", content_type="text/html"))
    result = await probe_url(client, url, kind=UrlKind.LB, mode=ProbeMode.REQUIRED, policy=FAST)
    assert result.status is Status.FAIL
    assert "content-type text/html" in result.reason


async def test_timeout_after_a_healthy_answer_fails(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(), Reply(delay_s=3.0))
    policy = FAST.model_copy(update={"request_timeout_s": 0.3})
    result = await probe_url(client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=policy)
    assert result.status is Status.FAIL
    assert result.reason == "attempt 2: timeout after 0.3 s after the revision had answered healthy"
    assert result.duration_s < 2.0


async def test_timeout_and_429_before_the_first_healthy_answer_are_a_cold_start(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(delay_s=3.0), Reply(429, b"The request was aborted because there was no available "
                                                        b"instance."), Reply(), Reply(), Reply())
    policy = FAST.model_copy(update={"request_timeout_s": 0.3, "initial_backoff_s": 0.05})
    result = await probe_url(client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=policy)
    assert result.status is Status.PASS and result.cold_start_retries == 2
    assert "timeout after 0.3 s (cold start) then 1x 429 (cold start) then 3x 200 healthy" in result.summary()
    outcomes = [a["outcome"] for a in result.evidence().data["attempts"]]
    assert outcomes == ["cold_start", "cold_start", "success", "success", "success"]


async def test_the_deadline_cuts_a_slow_request_and_says_so(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(503), Reply(delay_s=3.0))
    policy = FAST.model_copy(update={"deadline_s": 0.6, "request_timeout_s": 5, "initial_backoff_s": 0.05})
    result = await probe_url(client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=policy)
    assert result.status is Status.FAIL
    assert result.reason.startswith("deadline 0.6s reached after 2 attempts; last: 503")
    assert result.attempts[-1].cut_by_deadline
    assert result.duration_s < 0.6 + 1.0


async def test_connection_refused_fails(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/health"
    result = await probe_url(client, url, kind=UrlKind.SERVICE, mode=ProbeMode.REQUIRED, policy=FAST)
    assert result.status is Status.FAIL
    assert result.reason == f"attempt 1: connection refused: 127.0.0.1:{url.split(':')[2].split('/')[0]}"
    assert len(result.attempts) == 1


async def test_redirect_fails_and_names_the_target(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(302, b"", headers={"location": "https://accounts.example/login"}))
    result = await probe_url(client, url, kind=UrlKind.LB, mode=ProbeMode.REQUIRED, policy=FAST)
    assert result.status is Status.FAIL
    assert "302 Found" in result.reason and "redirect to https://accounts.example/login" in result.reason
    assert server.hits(url) == 1


async def test_a_large_failing_body_is_cut_to_an_excerpt(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(502, b"x" * 500_000, "text/plain"))
    result = await probe_url(client, url, kind=UrlKind.LB, mode=ProbeMode.REQUIRED, policy=FAST)
    assert result.status is Status.FAIL
    body = result.attempts[0].body
    assert body is not None and len(body) <= 203 and body.endswith("...")


async def test_advisory_failure_is_a_warning(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(403, b"Forbidden by ingress", "text/plain"))
    result = await probe_url(client, url, kind=UrlKind.SERVICE, mode=ProbeMode.ADVISORY, policy=FAST)
    assert result.status is Status.WARN
    assert result.reason.startswith("advisory, not gating: attempt 1: 403 Forbidden")
    assert not result.gating


async def test_off_sends_no_request(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply())
    result = await probe_url(client, url, kind=UrlKind.LB, mode=ProbeMode.OFF, policy=FAST)
    assert result.status is Status.SKIP
    assert result.attempts == ()
    assert server.hits(url) == 0
    assert result.evidence().summary == f"GET {url}: not probed (mode off)"


async def test_headers_are_sent_but_never_recorded(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(500, b"nope", "text/plain"))
    token = "Bearer eyJ-secret-identity-token"
    result = await probe_url(
        client,
        url,
        kind=UrlKind.TAGGED,
        mode=ProbeMode.REQUIRED,
        policy=FAST,
        headers={"Authorization": token},
    )
    assert server.headers_seen(url)[0]["authorization"] == token
    recorded = (
        json.dumps(result.evidence().model_dump())
        + repr(result)
        + result.criterion("probe").model_dump_json()
    )
    assert "eyJ-secret" not in recorded
    assert "eyJ-secret" not in repr(ProbeTarget(url, UrlKind.TAGGED, headers={"Authorization": token}))


async def test_user_info_is_removed_from_the_reported_url(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply())
    with_user = url.replace("http://", "http://user:pw@")
    result = await probe_url(
        client,
        with_user,
        kind=UrlKind.LB,
        mode=ProbeMode.REQUIRED,
        policy=FAST.model_copy(update={"success_interval_s": 0}),
    )
    assert result.status is Status.PASS
    assert result.url == url and "pw" not in result.evidence().summary


async def test_evidence_and_criterion(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(503), Reply())
    policy = FAST.model_copy(update={"initial_backoff_s": 0.01, "success_interval_s": 0.0})
    result = await probe_url(client, url, kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED, policy=policy)
    evidence = result.evidence()
    assert evidence.kind == "http"
    assert evidence.data["cold_start_retries"] == 1
    assert [a["status"] for a in evidence.data["attempts"]] == [503, 200, 200, 200]
    assert all(a.get("health") == "healthy" for a in evidence.data["attempts"][1:])
    criterion = result.criterion("traffic")
    assert criterion.name == "tagged revision URL healthy"
    assert criterion.stage == "traffic" and criterion.status is Status.PASS
    assert criterion.expected == "3 consecutive healthy answers within 60 s (required)"
    assert criterion.observed == "3 consecutive healthy answers after 1 cold-start retries"
    assert criterion.evidence == [evidence.summary]


async def test_probe_many_runs_concurrently(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    policy = FAST.model_copy(update={"consecutive_successes": 2, "success_interval_s": 0.0})
    delay = 0.4
    targets = [
        ProbeTarget(server.script(Reply(delay_s=delay)), UrlKind.TAGGED),
        ProbeTarget(server.script(Reply(delay_s=delay)), UrlKind.SERVICE),
        ProbeTarget(server.script(Reply(500, delay_s=delay)), UrlKind.LB, ProbeMode.ADVISORY),
        ProbeTarget(server.script(Reply()), UrlKind.LB, ProbeMode.OFF),
    ]
    started = time.monotonic()
    results = await probe_many(client, targets, policy)
    elapsed = time.monotonic() - started
    assert [r.url for r in results] == [t.url for t in targets]
    assert [r.status for r in results] == [Status.PASS, Status.PASS, Status.WARN, Status.SKIP]
    sequential = sum(r.duration_s for r in results)
    assert sequential >= 2 * delay * 2 + delay
    assert elapsed < 0.8 * sequential


# --- transport error wording (exceptions built here: no DNS or TLS peer may be contacted) -------------


def test_describe_error_names_dns_and_tls_failures() -> None:
    dns = httpx.ConnectError("[Errno -2] Name or service not known")
    dns.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert describe_error(dns, "https://svc.example.run.app/health") == (
        "DNS lookup failed for svc.example.run.app: Name or service not known"
    )
    tls = httpx.ConnectError("certificate verify failed")
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    tls.__cause__ = cert
    assert (
        describe_error(tls, "https://lb.example/")
        == "TLS certificate rejected for lb.example: self-signed certificate"
    )


async def test_invalid_url_is_a_failure_not_a_crash(client: httpx.AsyncClient) -> None:
    result = await probe_url(
        client, "ftp://127.0.0.1/health", kind=UrlKind.LB, mode=ProbeMode.REQUIRED, policy=FAST
    )
    assert result.status is Status.FAIL and "invalid URL" in result.reason


def test_url_helpers() -> None:
    assert safe_url("https://u:p@h.example:8443/x?y=1") == "https://h.example:8443/x?y=1"
    assert safe_url("http://h/health") == "http://h/health"
    assert websocket_url("https://h/ws") == "wss://h/ws"
    assert websocket_url("http://h/ws") == "ws://h/ws"
    assert websocket_url("ws://h/ws") == "ws://h/ws"


# --- WebSocket --------------------------------------------------------------------------------------


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _silent(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def test_websocket_echo_passes() -> None:
    async with serve(_echo, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        result = await probe_websocket(f"http://127.0.0.1:{port}/ws", timeout_s=5)
    assert result.status is Status.PASS, result.reason
    assert result.method == "WS" and result.url == f"ws://127.0.0.1:{port}/ws"
    assert "echo" in result.reason
    assert result.first_success_s is not None
    assert result.criterion("probe").name == "WebSocket exchange healthy"


async def test_websocket_without_a_reply_times_out() -> None:
    async with serve(_silent, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        started = time.monotonic()
        result = await probe_websocket(f"ws://127.0.0.1:{port}/ws", timeout_s=0.5)
    assert result.status is Status.FAIL and "timeout after 0.5 s" in result.reason
    assert time.monotonic() - started < 3


async def test_websocket_closed_port_fails() -> None:
    result = await probe_websocket(f"ws://127.0.0.1:{closed_port()}/ws", timeout_s=2)
    assert result.status is Status.FAIL
    assert "connection refused" in result.reason


async def test_websocket_rejected_handshake_fails(server: ScriptedServer) -> None:
    # the scripted app has HTTP routes only: uvicorn refuses the upgrade with 403
    url = server.script(Reply())
    result = await probe_websocket(url, timeout_s=2, mode=ProbeMode.ADVISORY)
    assert result.status is Status.WARN
    assert result.reason == "advisory, not gating: handshake rejected with 403"
    assert result.attempts[0].status == 403


async def test_websocket_off_is_skipped() -> None:
    result = await probe_websocket(f"ws://127.0.0.1:{closed_port()}/ws", timeout_s=2, mode=ProbeMode.OFF)
    assert result.status is Status.SKIP and result.attempts == ()


# --- ID tokens and invoker answers (probes.auth) ------------------------------------------------------


def _fake_jwt(exp: float) -> str:
    """A JWT-shaped token with an `exp` (the prober reads expiry without verifying: only the issuer can)."""
    import base64

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'exp': int(exp), 'aud': 'x'})}.c2lnbmF0dXJl"


class _Minter:
    def __init__(self, lifetime_s: float = 3600) -> None:
        self.audiences: list[str] = []
        self.lifetime_s = lifetime_s

    def __call__(self, audience: str) -> str:
        self.audiences.append(audience)
        return _fake_jwt(time.time() + self.lifetime_s)


async def _probe_with_auth(client: httpx.AsyncClient, url: str, policy: ProbePolicy, minter: _Minter
                           ) -> tuple[list[ProbeResult], str]:
    from stagecheck.clients.identity import IdTokens
    from tasks.probe import with_credentials

    tokens = IdTokens("/nonexistent-key.json", mint=minter)
    tokens.identity = "serviceAccount:ci@p.iam.gserviceaccount.com"
    targets = await with_credentials([ProbeTarget(url, UrlKind.SERVICE, audience="https://svc.a.run.app")],
                                     policy, tokens, "checkout")
    results = await probe_many(client, targets, policy)
    return list(results), (await tokens.token("https://svc.a.run.app"))


async def test_403_with_a_token_fails_at_once_naming_the_invoker_permission(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(403, b"<html><title>403 Forbidden</title></html>", "text/html"))
    minter = _Minter()
    results, token = await _probe_with_auth(client, url, FAST, minter)
    result = results[0]
    assert result.status is Status.FAIL and len(result.attempts) == 1  # not a cold start: never retried
    assert "serviceAccount:ci@p.iam.gserviceaccount.com lacks run.routes.invoke" in result.reason
    assert "roles/run.invoker" in result.reason and 'probes.auth = "none"' in result.reason
    assert server.headers_seen(url)[0]["authorization"] == f"Bearer {token}"
    recorded = json.dumps(result.evidence().model_dump()) + repr(result) + result.criterion("p").model_dump_json()
    assert token not in recorded and token.split(".")[1] not in recorded
    assert minter.audiences == ["https://svc.a.run.app"]  # minted once, reused by the second call


async def test_401_fails_naming_the_audience(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    url = server.script(Reply(401, b"<html><title>401 Unauthorized</title></html>", "text/html"))
    results, _ = await _probe_with_auth(client, url, FAST, _Minter())
    result = results[0]
    assert result.status is Status.FAIL and len(result.attempts) == 1
    assert "401 Unauthorized" in result.reason and "audience https://svc.a.run.app was refused" in result.reason
    assert "custom_audiences" in result.reason


async def test_auth_none_sends_no_token_and_a_403_names_the_public_invoker_binding(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    url = server.script(Reply(403, b"forbidden", "text/html"))
    minter = _Minter()
    results, _ = await _probe_with_auth(client, url, FAST.model_copy(update={"auth": ProbeAuth.NONE}), minter)
    result = results[0]
    assert "authorization" not in server.headers_seen(url)[0]
    assert result.status is Status.FAIL
    assert 'probes.auth = "none"' in result.reason and "roles/run.invoker" in result.reason
    assert "allUsers" in result.reason


async def test_id_tokens_are_minted_once_per_audience_and_renewed_near_expiry() -> None:
    from stagecheck.clients.identity import REFRESH_MARGIN_S, IdTokens

    now = [1_000_000.0]
    minted: list[str] = []

    def mint(audience: str) -> str:
        minted.append(audience)
        return _fake_jwt(now[0] + 3600)

    tokens = IdTokens(None, clock=lambda: now[0], mint=mint)
    first = await asyncio.gather(*(tokens.token("https://a") for _ in range(5)))  # concurrent: one mint
    assert len(set(first)) == 1 and minted == ["https://a"]
    await tokens.token("https://b")
    assert minted == ["https://a", "https://b"]
    now[0] += 3600 - REFRESH_MARGIN_S - 1  # still outside the margin: reused
    await tokens.token("https://a")
    assert minted.count("https://a") == 1
    now[0] += 2  # inside the margin: a new one
    await tokens.token("https://a")
    assert minted.count("https://a") == 2


async def test_a_token_that_cannot_be_minted_is_a_stage_error_with_the_fix() -> None:
    from google.auth import exceptions as auth_exc

    from stagecheck.clients.identity import IdTokens
    from stagecheck.errors import StageError

    def refuse(audience: str) -> str:
        raise auth_exc.RefreshError("invalid_grant: Invalid JWT Signature.")

    tokens = IdTokens(None, mint=refuse)
    with pytest.raises(StageError, match="could not get an ID token for audience https://a") as err:
        await tokens.token("https://a")
    assert 'probes.auth = "none"' in (err.value.hint or "")


async def test_a_body_echoing_the_id_token_is_redacted_in_the_evidence(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    token = _fake_jwt(time.time() + 3600)
    url = server.script(Reply(500, f"debug: authorization: Bearer {token}".encode(), "text/plain"))
    result = await probe_url(client, url, kind=UrlKind.SERVICE, mode=ProbeMode.REQUIRED, policy=FAST,
                             headers={"Authorization": f"Bearer {token}"})
    assert result.status is Status.FAIL and result.attempts[0].body
    recorded = json.dumps(result.evidence().model_dump()) + result.reason + result.summary()
    assert token not in recorded and token.split(".")[1] not in recorded
    assert "[REDACTED]" in recorded
