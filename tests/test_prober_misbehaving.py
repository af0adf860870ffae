"""Misbehaving health endpoints: each fails the probe with evidence, within a bounded time, reading a
bounded amount of body. The endpoints are a raw HTTP/1.1 server on 127.0.0.1 written with asyncio
streams (so a test controls every byte and every pause), plus the same server behind TLS with a
self-signed certificate generated for the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stagecheck.model import Status
from stagecheck.prober import MAX_BODY_BYTES, ProbeResult, probe_url
from stagecheck.settings import ProbeMode, ProbePolicy, UrlKind

POLICY = ProbePolicy(deadline_s=5, consecutive_successes=1, request_timeout_s=1.0, initial_backoff_s=0.1,
                     max_backoff_s=0.2, success_interval_s=0.05)
FIFTY_MB = 50 * 1024 * 1024
CHUNK = b"x" * 65536

Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def head(status: str, content_type: str, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}\r\n".encode()


@dataclass
class RawServer:
    """Answers each path with a coroutine that writes raw bytes; counts body bytes sent per path."""

    routes: dict[str, Writer] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)  # the last request head per path
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head_text = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head_text.split("\r\n", 1)[0].split(" ")[1]
            self.heads[path] = head_text
            self.hits[path] = self.hits.get(path, 0) + 1
            await self.routes[path](writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the prober hung up: exactly what a bounded read does
        finally:
            writer.close()

    async def body(self, path: str, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent[path] = self.sent.get(path, 0) + len(data)


async def _routes(srv: RawServer) -> None:
    async def html(w: asyncio.StreamWriter) -> None:
        page = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
        w.write(head("200 OK", "text/html", f"Content-Length: {len(page)}\r\n") + page)

    async def invalid(w: asyncio.StreamWriter) -> None:
        doc = b'{"status": healthy}'
        w.write(head("200 OK", "application/json", f"Content-Length: {len(doc)}\r\n") + doc)

    async def huge(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", "application/json", f"Content-Length: {FIFTY_MB}\r\n"))
        await srv.body("/huge", w, b'{"status": "healthy", "pad": "')
        for _ in range(FIFTY_MB // len(CHUNK)):
            await srv.body("/huge", w, CHUNK)

    async def endless(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", "application/json", "Transfer-Encoding: chunked\r\n"))
        while True:
            await srv.body("/endless", w, b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))

    async def trickle(w: asyncio.StreamWriter) -> None:
        w.write(head("200 OK", "application/json", "Transfer-Encoding: chunked\r\n"))
        while not srv.stop.is_set():  # one byte every 0.1 s: no single read ever times out
            await srv.body("/trickle", w, b"1\r\n \r\n")
            await asyncio.sleep(0.1)  # the pace of the misbehaving server itself

    async def loop(w: asyncio.StreamWriter) -> None:
        w.write(head("302 Found", "text/plain", "Location: /loop\r\nContent-Length: 0\r\n"))

    async def slow_first_byte(w: asyncio.StreamWriter) -> None:
        await srv.stop.wait()  # never answers while the test runs

    srv.routes.update({"/html": html, "/invalid": invalid, "/huge": huge, "/endless": endless,
                       "/trickle": trickle, "/loop": loop, "/slow": slow_first_byte})


async def _serve(tls: ssl.SSLContext | None = None) -> AsyncIterator[RawServer]:
    srv = RawServer()
    await _routes(srv)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=tls)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        srv.stop.set()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    async for srv in _serve():
        yield srv


def _self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def _probe(url: str, policy: ProbePolicy = POLICY) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:  # as tasks/common.py builds it
        result = await probe_url(client, url, kind=UrlKind.SERVICE, mode=ProbeMode.REQUIRED, policy=policy)
    return result, time.monotonic() - started


def _failed_with_evidence(result: ProbeResult, words: str) -> dict[str, object]:
    assert result.status is Status.FAIL, result.summary()
    assert words in result.reason
    evidence = result.evidence()
    assert evidence.data["status"] == "FAIL" and words in evidence.summary
    attempts = evidence.data["attempts"]
    assert isinstance(attempts, list) and len(attempts) == 1  # not retried: none of these is a cold start
    return dict(attempts[0])


def _timed_out_until_the_deadline(result: ProbeResult, elapsed: float) -> list[dict[str, object]]:
    """A URL that never answers within the request timeout: before any healthy answer a timeout is a cold
    start (issue 8), so it is retried — each attempt bounded by request_timeout_s — until the deadline FAILs it."""
    assert result.status is Status.FAIL, result.summary()
    attempts = [dict(a) for a in result.evidence().data["attempts"]]
    assert len(attempts) >= 2 and all(a["status"] is None for a in attempts)
    assert {a["outcome"] for a in attempts[:-1]} == {"cold_start"} and attempts[-1]["outcome"] == "failure"
    assert "timeout after 1 s" in str(attempts[0]["error"])
    assert all(float(str(a["latency_ms"])) <= POLICY.request_timeout_s * 1000 + 500 for a in attempts)
    assert elapsed < POLICY.deadline_s + POLICY.request_timeout_s + 2  # bounded: never hangs
    return attempts


async def test_html_instead_of_json_fails(raw: RawServer) -> None:
    result, _ = await _probe(f"http://127.0.0.1:{raw.port}/html")
    attempt = _failed_with_evidence(result, "content-type text/html")
    assert attempt["status"] == 200 and "Welcome to nginx!" in str(attempt["body"])


async def test_invalid_json_fails(raw: RawServer) -> None:
    result, _ = await _probe(f"http://127.0.0.1:{raw.port}/invalid")
    attempt = _failed_with_evidence(result, "malformed health JSON: Expecting value at line 1 column 12")
    assert attempt["body"] == '{"status": healthy}'


async def test_a_50_mb_body_is_cut_at_the_cap_without_growing_memory(raw: RawServer) -> None:
    tracemalloc.start()
    try:
        result, _ = await _probe(f"http://127.0.0.1:{raw.port}/huge")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    attempt = _failed_with_evidence(result, f"body larger than {MAX_BODY_BYTES // 1024} KiB")
    assert attempt["status"] == 200 and str(attempt["body"]).endswith("...")
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while probing a 50 MB body"
    assert raw.sent["/huge"] < FIFTY_MB // 2  # the prober hung up long before the end


async def test_a_body_that_never_ends_is_cut_at_the_cap(raw: RawServer) -> None:
    tracemalloc.start()
    try:
        result, elapsed = await _probe(f"http://127.0.0.1:{raw.port}/endless")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _failed_with_evidence(result, f"body larger than {MAX_BODY_BYTES // 1024} KiB")
    assert peak < 8 * 1024 * 1024
    assert elapsed < POLICY.request_timeout_s + 2


async def test_a_trickling_body_is_cut_by_the_total_request_time_not_per_read(raw: RawServer) -> None:
    result, elapsed = await _probe(f"http://127.0.0.1:{raw.port}/trickle")
    _timed_out_until_the_deadline(result, elapsed)
    assert raw.sent["/trickle"] >= 3  # bytes kept arriving: only the total bound could stop it


async def test_a_redirect_loop_is_not_followed(raw: RawServer) -> None:
    result, _ = await _probe(f"http://127.0.0.1:{raw.port}/loop")
    attempt = _failed_with_evidence(result, "redirect to /loop (redirects are not followed")
    assert attempt["status"] == 302
    assert raw.hits["/loop"] == 1


async def test_a_very_slow_first_byte_times_out(raw: RawServer) -> None:
    result, elapsed = await _probe(f"http://127.0.0.1:{raw.port}/slow")
    attempts = _timed_out_until_the_deadline(result, elapsed)
    assert raw.hits["/slow"] == len(attempts)


async def test_a_self_signed_certificate_fails_with_verification_on_by_default(tmp_path: Path) -> None:
    async for srv in _serve(_self_signed(tmp_path)):
        result, _ = await _probe(f"https://127.0.0.1:{srv.port}/html")
        attempt = _failed_with_evidence(result, f"TLS certificate rejected for 127.0.0.1:{srv.port}")
        assert "self-signed certificate" in str(attempt["error"])
        assert "/html" not in srv.hits  # no request was sent over the unverified connection


async def test_the_configured_probe_headers_are_sent_and_never_recorded(raw: RawServer) -> None:
    policy = POLICY.model_copy(update={"headers": {"X-Api-Key": "canary-probe-header"}})
    result, _ = await _probe(f"http://127.0.0.1:{raw.port}/html", policy)
    assert "x-api-key: canary-probe-header" in raw.heads["/html"].lower()
    assert "canary-probe-header" not in repr(result) + str(result.evidence()) + repr(policy)
