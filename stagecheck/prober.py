"""Health probes over the network: the I/O edge of `stagecheck.probe_policy`.

`probe_url` sends GET requests and records each answer as a `ProbeAttempt`; every decision (is this a
cold start, how long to back off, is the probe done, pass or fail) comes from `probe_policy`.
Request headers (they may carry an identity token) are sent but never stored, logged or reported:
the evidence holds method, URL (without user info), status codes, timings, health values and at most
~200 bytes of a failing body.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from stagecheck import probe_policy as pp
from stagecheck.evidence import ProbeAttemptData, ProbeData
from stagecheck.model import Criterion, Evidence, Status
from stagecheck.probe_policy import AttemptOutcome, ProbeAttempt, ProbeVerdict
from stagecheck.redact import redact
from stagecheck.settings import ProbeMode, ProbePolicy, UrlKind

MAX_BODY_BYTES = 64 * 1024  # health answers are small; never buffer more than this
BODY_EXCERPT_BYTES = 200

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Rand = Callable[[], float]

KIND_NAMES = {
    UrlKind.TAGGED: "tagged revision URL",
    UrlKind.SERVICE: "service URL",
    UrlKind.LB: "load balancer URL",
}


@dataclass(frozen=True)
class ProbeTarget:
    url: str
    kind: UrlKind
    mode: ProbeMode = ProbeMode.REQUIRED
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # never printed
    audience: str | None = None  # the ID-token audience for this URL (None: no token)
    auth_errors: Mapping[int, str] | None = None  # what a 401/403 means here (stagecheck.probe_auth)


@dataclass(frozen=True)
class ProbeResult:
    url: str  # user info removed
    kind: UrlKind
    mode: ProbeMode
    status: Status  # after the mode: advisory failures are WARN, off is SKIP
    reason: str
    attempts: tuple[ProbeAttempt, ...]
    duration_s: float
    first_success_s: float | None  # when the first good answer arrived: the cold-start duration
    cold_start_retries: int
    policy: ProbePolicy = field(default_factory=ProbePolicy, repr=False)
    method: str = "GET"  # "WS" for the WebSocket probe

    @property
    def gating(self) -> bool:
        return self.mode == ProbeMode.REQUIRED

    def summary(self) -> str:
        """`GET http://h/health: 3x 503 (cold start) then 3x 200 healthy; p50 12 ms, max 40 ms; 2.1 s`."""
        head = f"{self.method} {self.url}"
        if self.mode == ProbeMode.OFF:
            return f"{head}: not probed (mode off)"
        if self.method == "WS":
            return f"{head}: {self.reason}; {self.duration_s:.1f} s"
        if not self.attempts:
            return f"{head}: no request sent; {self.reason}"
        classified = pp.outcomes(self.attempts, self.policy)
        labels = [self._label(a, o) for a, o in zip(self.attempts, classified, strict=True)]
        groups = " then ".join(f"{n}x {label}" for label, n in _runs(labels))
        latencies = [a.latency_s for a in self.attempts if a.status is not None]
        timing = f"p50 {_ms(statistics.median(latencies))}, max {_ms(max(latencies))}; " if latencies else ""
        return f"{head}: {groups}; {timing}{self.duration_s:.1f} s"

    def _label(self, attempt: ProbeAttempt, outcome: AttemptOutcome | None = None) -> str:
        if outcome is AttemptOutcome.COLD_START:
            return f"{attempt.status or attempt.error or 'no answer'} (cold start)"
        if attempt.status is None:
            return attempt.error or "no answer"
        if attempt.error is not None:
            return f"{attempt.status} {attempt.error}"
        return f"{attempt.status} {attempt.health}" if attempt.health else str(attempt.status)

    def evidence(self) -> Evidence:
        return Evidence(
            kind="http",
            summary=self.summary(),
            data=ProbeData(
                method=self.method,
                url=self.url,
                url_kind=str(self.kind),
                mode=str(self.mode),
                status=str(self.status),
                reason=self.reason,
                duration_s=round(self.duration_s, 3),
                first_success_s=None if self.first_success_s is None else round(self.first_success_s, 3),
                cold_start_retries=self.cold_start_retries,
                attempts=[_attempt_data(a, o) for a, o in
                          zip(self.attempts, pp.outcomes(self.attempts, self.policy), strict=True)],
            ).to_data(),
        )

    def criterion(self, stage: str) -> Criterion:
        what = "WebSocket exchange" if self.method == "WS" else KIND_NAMES.get(self.kind, str(self.kind))
        if self.method == "WS":
            expected = "connects and answers a message"
        else:
            expected = (
                f"{self.policy.consecutive_successes} consecutive healthy answers "
                f"within {self.policy.deadline_s:g} s"
            )
        return Criterion(
            name=f"{what} healthy",
            stage=stage,
            status=self.status,
            expected=f"{expected} ({self.mode})",
            observed=self.reason,
            evidence=[self.summary()],
        )


def _attempt_data(a: ProbeAttempt, outcome: AttemptOutcome | None = None) -> ProbeAttemptData:
    return ProbeAttemptData(at_s=round(a.at_s, 3), status=a.status, latency_ms=round(a.latency_s * 1000, 1),
                            outcome=None if outcome is None else str(outcome), error=a.error, health=a.health,
                            body=a.body, cut_by_deadline=a.cut_by_deadline)


def _runs(labels: Iterator[str] | Sequence[str]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for label in labels:
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1] + 1)
        else:
            runs.append((label, 1))
    return runs


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def safe_url(url: str) -> str:
    """The URL without user info (`https://user:pw@host/` -> `https://host/`), for evidence."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("@")[-1]
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _excerpt(body: bytes) -> str | None:
    """At most ~200 bytes of a failing body, redacted (a server may echo the request's ID token)."""
    text = " ".join(body[:BODY_EXCERPT_BYTES].decode("utf-8", errors="replace").split())
    if not text:
        return None
    return redact(text) + ("..." if len(body) > BODY_EXCERPT_BYTES else "")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_error(exc: BaseException, url: str) -> str:
    """A one-line reason for a transport failure: refused, DNS, TLS, protocol, invalid URL."""
    host = urlsplit(url).netloc.rsplit("@", 1)[-1] if "://" in url else url
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate rejected for {host}: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error with {host}: {cause.reason or cause}"
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed for {host}: {cause.strerror or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused: {host}"
        if isinstance(cause, ConnectionResetError):
            return f"connection reset by {host}"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | InvalidURI):
        return f"invalid URL: {exc}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"protocol error: {exc}"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed to {host}: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _timeout_error(timeout_s: float, policy: ProbePolicy) -> tuple[str, bool]:
    if timeout_s < policy.request_timeout_s:
        return f"no answer within the {timeout_s:.2f} s left before the deadline", True
    return f"timeout after {timeout_s:g} s", False


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    """At most MAX_BODY_BYTES of the body, and whether there was more (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES], size > MAX_BODY_BYTES


async def _attempt(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str] | None,
    policy: ProbePolicy,
    at_s: float,
    timeout_s: float,
    clock: Clock,
    auth_errors: Mapping[int, str] | None = None,
) -> ProbeAttempt:
    started = clock()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "GET", url, headers=dict(headers or {}), timeout=timeout_s, follow_redirects=False
            ) as response:
                body, oversized = await _read_capped(response)
    except (TimeoutError, httpx.TimeoutException):
        timeout_error, cut = _timeout_error(timeout_s, policy)
        return ProbeAttempt(at_s, None, clock() - started, error=timeout_error, cut_by_deadline=cut, timed_out=True)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return ProbeAttempt(at_s, None, clock() - started, error=describe_error(exc, url))
    latency = clock() - started
    status = response.status_code
    if status in policy.retry_statuses:
        return ProbeAttempt(at_s, status, latency)
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        redirect = f"redirect to {safe_url(location)} (redirects are not followed: probe the final URL)"
        return ProbeAttempt(at_s, status, latency, error=redirect)
    if auth_errors and status in auth_errors:  # an invoker/token problem, never a cold start
        return ProbeAttempt(at_s, status, latency, error=auth_errors[status])
    if 200 <= status < 300 and oversized:
        too_big = f"body larger than {MAX_BODY_BYTES // 1024} KiB: not a health answer (read stopped there)"
        return ProbeAttempt(at_s, status, latency, error=too_big, body=_excerpt(body))
    if 200 <= status < 300:
        health, error = pp.parse_health_body(body, response.headers.get("content-type"))
        return ProbeAttempt(
            at_s, status, latency, error=error, health=health, body=_excerpt(body) if error else None
        )
    return ProbeAttempt(at_s, status, latency, body=_excerpt(body))


def _result(
    url: str,
    kind: UrlKind,
    mode: ProbeMode,
    policy: ProbePolicy,
    verdict: ProbeVerdict,
    attempts: Sequence[ProbeAttempt],
    duration_s: float,
    method: str = "GET",
) -> ProbeResult:
    status = pp.apply_mode(verdict.status or Status.FAIL, mode)
    reason = verdict.reason
    if mode == ProbeMode.ADVISORY and verdict.status == Status.FAIL:
        reason = f"advisory, not gating: {reason}"
    return ProbeResult(
        url=safe_url(url),
        kind=kind,
        mode=mode,
        status=status,
        reason=reason,
        attempts=tuple(attempts),
        duration_s=duration_s,
        first_success_s=pp.first_success_s(attempts, policy),
        cold_start_retries=pp.cold_start_retries(attempts, policy),
        policy=policy,
        method=method,
    )


def _skipped(url: str, kind: UrlKind, policy: ProbePolicy, method: str = "GET") -> ProbeResult:
    return ProbeResult(
        url=safe_url(url),
        kind=kind,
        mode=ProbeMode.OFF,
        status=Status.SKIP,
        reason="probe turned off",
        attempts=(),
        duration_s=0.0,
        first_success_s=None,
        cold_start_retries=0,
        policy=policy,
        method=method,
    )


async def probe_url(
    client: httpx.AsyncClient,
    url: str,
    *,
    kind: UrlKind,
    mode: ProbeMode,
    policy: ProbePolicy,
    headers: Mapping[str, str] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rand: Rand = random.random,
    auth_errors: Mapping[int, str] | None = None,
) -> ProbeResult:
    """Probe `url` until the policy decides: K healthy answers in a row, a failure, or the deadline."""
    if mode == ProbeMode.OFF:
        return _skipped(url, kind, policy)
    if policy.headers:  # the config's probe headers (secret values, never recorded), the caller's win
        headers = {**policy.headers, **(headers or {})}
    start = clock()
    attempts: list[ProbeAttempt] = []
    while True:
        step = pp.plan_next(attempts, policy, clock() - start, rand())
        if isinstance(step, ProbeVerdict):
            return _result(url, kind, mode, policy, step, attempts, clock() - start)
        if step.wait_s > 0:
            await sleep(step.wait_s)
        at_s = clock() - start
        timeout_s = pp.attempt_timeout(policy, at_s)
        if timeout_s is None:
            continue  # the wait overran the deadline: the next plan_next says so
        attempts.append(await _attempt(client, url, headers, policy, at_s, timeout_s, clock, auth_errors))


async def probe_many(
    client: httpx.AsyncClient,
    targets: Sequence[ProbeTarget],
    policy: ProbePolicy,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rand: Rand = random.random,
) -> list[ProbeResult]:
    """Probe all targets concurrently; results in the order of `targets`."""
    return list(
        await asyncio.gather(
            *(
                probe_url(
                    client,
                    t.url,
                    kind=t.kind,
                    mode=t.mode,
                    policy=policy,
                    headers=t.headers,
                    clock=clock,
                    sleep=sleep,
                    rand=rand,
                    auth_errors=t.auth_errors,
                )
                for t in targets
            )
        )
    )


def websocket_url(url: str) -> str:
    """http(s):// -> ws(s)://; ws(s):// unchanged."""
    scheme, sep, rest = url.partition("://")
    mapped = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    return f"{mapped}{sep}{rest}"


async def probe_websocket(
    url: str,
    *,
    message: str = "stagecheck-ping",
    timeout_s: float,
    kind: UrlKind = UrlKind.SERVICE,
    mode: ProbeMode = ProbeMode.REQUIRED,
    headers: Mapping[str, str] | None = None,
    clock: Clock = time.monotonic,
) -> ProbeResult:
    """Open a WebSocket, send `message`, expect any reply within `timeout_s` (one attempt, no retry:
    run it after the HTTP probes have warmed the revision up)."""
    policy = ProbePolicy(deadline_s=timeout_s, request_timeout_s=timeout_s, consecutive_successes=1)
    ws_url = websocket_url(url)
    if mode == ProbeMode.OFF:
        return _skipped(ws_url, kind, policy, method="WS")
    start = clock()
    try:
        async with asyncio.timeout(timeout_s):
            async with ws_connect(
                ws_url, additional_headers=dict(headers or {}), open_timeout=timeout_s, close_timeout=1
            ) as ws:
                connected_s = clock() - start
                await ws.send(message)
                reply = await ws.recv()
        latency = clock() - start
    except TimeoutError:
        attempt = ProbeAttempt(0.0, None, clock() - start, error=f"timeout after {timeout_s:g} s")
        verdict = ProbeVerdict(True, Status.FAIL, f"no reply: {attempt.error}")
    except InvalidStatus as exc:
        code = exc.response.status_code
        attempt = ProbeAttempt(
            0.0,
            code,
            clock() - start,
            error="handshake rejected",
            body=_excerpt(bytes(exc.response.body or b"")),
        )
        verdict = ProbeVerdict(True, Status.FAIL, f"handshake rejected with {code}")
    except ConnectionClosed as exc:
        attempt = ProbeAttempt(0.0, 101, clock() - start, error=f"connection closed before a reply ({exc})")
        verdict = ProbeVerdict(True, Status.FAIL, attempt.error or "closed")
    except (InvalidHandshake, InvalidURI, OSError) as exc:
        error = describe_error(exc, ws_url)
        attempt = ProbeAttempt(0.0, None, clock() - start, error=error)
        verdict = ProbeVerdict(True, Status.FAIL, error)
    else:
        text = reply if isinstance(reply, str) else bytes(reply).decode("utf-8", errors="replace")
        echo = "echo" if text == message else f"reply {_excerpt(text.encode()) or '(empty)'!r}"
        attempt = ProbeAttempt(0.0, 101, latency, health="echo" if text == message else "reply")
        verdict = ProbeVerdict(
            True, Status.PASS, f"connected in {_ms(connected_s)}, {echo} in {_ms(latency)}"
        )
    result = _result(ws_url, kind, mode, policy, verdict, [attempt], clock() - start, method="WS")
    first = attempt.latency_s if verdict.status == Status.PASS else None
    return replace(result, first_success_s=first, cold_start_retries=0)


async def probe_once(
    client: httpx.AsyncClient,
    target: ProbeTarget,
    policy: ProbePolicy,
    *,
    at_s: float = 0.0,
    clock: Clock = time.monotonic,
) -> ProbeAttempt:
    """One GET of `target` with the policy's request timeout, as the bake window sends them."""
    return await _attempt(client, target.url, target.headers, policy, at_s, policy.request_timeout_s, clock,
                          target.auth_errors)
