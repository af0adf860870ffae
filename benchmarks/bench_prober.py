"""How much the prober itself costs: N URLs probed concurrently against a local health app.

    .venv/bin/python benchmarks/bench_prober.py [N_URLS] [K]

Serves `{"status": "healthy"}` from starlette on uvicorn (127.0.0.1, a free port, in a thread), probes
N URLs with K consecutive successes each (no pause between successes) and prints the wall time, the
per-request latency percentiles and the requests per second.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from stagecheck.prober import ProbeTarget, probe_many
from stagecheck.settings import ProbePolicy, UrlKind


async def _health(_request: object) -> JSONResponse:
    return JSONResponse({"status": "healthy"})


def _serve() -> tuple[uvicorn.Server, threading.Thread, socket.socket, str]:
    # IPPROTO_TCP explicitly: with proto 0 asyncio does not set TCP_NODELAY on accepted
    # connections, and every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/{path:path}", _health)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("benchmark server did not start")
        time.sleep(0.01)
    return server, thread, sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _run(base: str, n_urls: int, k: int) -> None:
    policy = ProbePolicy(consecutive_successes=k, success_interval_s=0.0, deadline_s=60)
    targets = [ProbeTarget(f"{base}/health/{i}", UrlKind.SERVICE) for i in range(n_urls)]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n_urls)) as client:
        started = time.perf_counter()
        results = await probe_many(client, targets, policy)
        wall = time.perf_counter() - started
        # baseline: the same requests with plain httpx, K rounds of N concurrent GETs
        started = time.perf_counter()
        for _ in range(k):
            await asyncio.gather(*(client.get(t.url) for t in targets))
        baseline = time.perf_counter() - started
    latencies = sorted(a.latency_s * 1000 for r in results for a in r.attempts)
    failed = [r for r in results if r.status != "PASS"]
    print(
        f"{n_urls} URLs x {k} answers = {len(latencies)} requests in {wall:.2f} s "
        f"({len(latencies) / wall:.0f} req/s); plain httpx, same requests: {baseline:.2f} s"
    )
    print(
        f"latency p50 {statistics.median(latencies):.1f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms, "
        f"max {latencies[-1]:.1f} ms; failed probes: {len(failed)}"
    )


def main(argv: list[str]) -> None:
    n_urls = int(argv[0]) if argv else 50
    k = int(argv[1]) if len(argv) > 1 else 3
    server, thread, sock, base = _serve()
    try:
        asyncio.run(_run(base, n_urls, k))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
