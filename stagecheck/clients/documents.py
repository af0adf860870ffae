"""GET a document (the OpenAPI description a revision serves) over HTTP: bounded in size and time,
retried while the revision answers as a cold start does (the probes' retry statuses, a refused
connection) until its deadline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int | None  # None: no HTTP answer (`error` says why)
    body: bytes = b""
    elapsed_ms: float = 0.0
    attempts: int = 1
    error: str | None = None

    def describe(self) -> str:
        answer = f"HTTP {self.status}, {len(self.body)} bytes" if self.status is not None else f"no answer: {self.error}"
        return f"GET {self.url} -> {answer} in {self.elapsed_ms:.0f} ms ({self.attempts} attempt(s))"


async def _once(http: httpx.AsyncClient, url: str, headers: dict[str, str], timeout_s: float,
                max_bytes: int) -> tuple[int, bytes]:
    async with http.stream("GET", url, headers={"Accept": "application/json", **headers},
                           timeout=timeout_s) as response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"the document is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)


async def fetch(http: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None,
                request_timeout_s: float = 10.0, deadline_s: float = 30.0, retry_statuses: tuple[int, ...] = (),
                max_bytes: int = MAX_BYTES) -> Fetched:
    """The answer to `GET url`; a status in `retry_statuses` or a transport error is retried (backing off
    from 0.2 s) until `deadline_s`, then returned as it was."""
    started = time.monotonic()
    attempts, pause = 0, 0.2
    while True:
        attempts += 1
        status: int | None = None
        body, error = b"", None
        try:
            status, body = await _once(http, url, headers or {}, request_timeout_s, max_bytes)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except ValueError as exc:  # too large: not retried
            return Fetched(url, None, b"", (time.monotonic() - started) * 1000, attempts, str(exc))
        left = deadline_s - (time.monotonic() - started)
        if (status is not None and status not in retry_statuses) or left <= pause:
            return Fetched(url, status, body, (time.monotonic() - started) * 1000, attempts, error)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)
