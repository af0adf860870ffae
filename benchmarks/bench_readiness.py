"""Benchmark: how soon stagecheck sees a new revision serve. Prints figures; not a test.

    STAGECHECK_STATE_DIR=/work/main/.stagecheck .venv/bin/python benchmarks/bench_readiness.py [--deploys 20]

Starts its own sandbox (localenv.control.start, free ports, a temp state dir) on the running Docker
Engine and registry of $STAGECHECK_STATE_DIR, builds the sample image, then deploys the sample service
N times concurrently, each with a random STARTUP_DELAY_S in [0, 10) s, through the pipeline's own code
path: `CloudRun.create_service`, `wait_revision_ready`, `finish`, then `probe_url` (stagecheck's
prober, the config's probe policy) on the service URL.

"Serving" is measured independently of stagecheck: as soon as the sandbox reports the instance's
port, the script polls the container directly (GET /health every 10 ms, bypassing the sandbox proxy)
and records its first answer ("direct"); on a busy machine that watcher can be starved, so the
revision's Ready lastTransitionTime (the sandbox's own clock, when the container first accepted a
connection) also counts, and serving is the earlier of the two. Reported: first healthy probe answer minus serving (median, p95, max), and the number
of requests stagecheck sent (revision GETs + probes). The baseline is the "sleep 10 s, then check
every 10 s" loop of hand-written deploy scripts, computed from the same observed serving times.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from google.cloud import run_v2  # noqa: E402

from benchmarks._infra import running_infra  # noqa: E402
from localenv.control import SandboxInfo, start, stop  # noqa: E402
from stagecheck.clients.cloudrun import CloudRun  # noqa: E402
from stagecheck.clients.identity import IdTokens  # noqa: E402
from stagecheck.model import TrafficTarget  # noqa: E402
from stagecheck.prober import probe_url  # noqa: E402
from stagecheck.settings import Endpoints, ProbeMode, ProbePolicy, Settings, UrlKind  # noqa: E402

DIRECT_POLL_S = 0.01


@dataclass
class Observation:
    delay_s: float
    serving_s: float  # since the deploy call: the earlier of the two below
    direct_s: float  # since the deploy call, first direct answer of the container to this script
    transition_s: float  # since the deploy call, the revision's Ready lastTransitionTime (sandbox clock)
    url_s: float  # since the deploy call, first 200 of the service URL to this script's own watcher
    healthy_s: float  # since the deploy call, first healthy answer to stagecheck's prober
    ready_s: float  # since the deploy call, when wait_revision_ready saw Ready
    finished_s: float  # since the deploy call, when the operation was done (the probe starts)
    revision_gets: int
    probe_requests: int
    probe_status: str


class CountingCloudRun(CloudRun):
    """The pipeline's client, counting the revision reads `wait_revision_ready` makes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.revision_gets: dict[str, int] = {}

    async def get_revision(self, service: str, revision: str) -> run_v2.Revision:
        self.revision_gets[revision] = self.revision_gets.get(revision, 0) + 1
        return await super().get_revision(service, revision)


class PortBook:
    """One poller of the sandbox's status for every deploy: revision -> its container's port."""

    def __init__(self, admin: httpx.AsyncClient) -> None:
        self.admin = admin
        self.ports: dict[str, int] = {}
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                status = (await self.admin.get("/sandbox/v1/status")).json()
                for revision in status.get("instances", []):  # per revision: its instances (scale-out)
                    for instance in revision.get("instances", []):
                        if instance.get("port") and instance["revision"] not in self.ports:
                            self.ports[instance["revision"]] = instance["port"]  # the first one started
                            self.changed.set()
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.05)

    async def port(self, revision: str) -> int:
        while revision not in self.ports:
            self.changed.clear()
            await self.changed.wait()
        return self.ports[revision]


async def watch_serving(book: PortBook, revision: str, started: float) -> float:
    """Seconds since `started` when the revision's container first answered, polled directly."""
    port = await book.port(revision)
    async with httpx.AsyncClient(trust_env=False, timeout=0.5) as direct:
        while True:
            try:
                response = await direct.get(f"http://127.0.0.1:{port}/health")
                if response.status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(DIRECT_POLL_S)


async def watch_url(url: str, headers: dict[str, str], started: float) -> float:
    """Seconds since `started` when the service URL first answered 200 (the revision serving where the
    probe looks: after Cloud Run, here the sandbox, has reconciled the traffic), polled every 10 ms."""
    async with httpx.AsyncClient(trust_env=False, timeout=0.5, headers=headers) as watcher:
        while True:
            try:
                if (await watcher.get(f"{url}/health")).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(DIRECT_POLL_S)


async def one_deploy(
    cloudrun: CountingCloudRun, book: PortBook, image: str, delay_s: float, policy: ProbePolicy, tokens: IdTokens,
    watcher_run: CloudRun,
) -> Observation:
    service = f"bench-ready-{uuid.uuid4().hex[:6]}"
    revision = f"{service}-r1"
    template = run_v2.RevisionTemplate(
        revision=revision,
        containers=[run_v2.Container(image=image, env=[run_v2.EnvVar(name="STARTUP_DELAY_S", value=f"{delay_s:.2f}")])],
    )
    started, started_wall = time.monotonic(), time.time()
    op = await cloudrun.create_service(service, template, [TrafficTarget(revision=revision, percent=100)])
    serving = asyncio.create_task(watch_serving(book, revision, started))
    created = await watcher_run.get_service(service)  # the URL and a token for it: not stagecheck's counted reads
    if created is None:
        raise RuntimeError(f"{service} not found after its create call")
    on_url = asyncio.create_task(watch_url(created.uri, await tokens.headers(created.uri), started))
    _, ready = await cloudrun.wait_revision_ready(service, revision, timeout_s=120)
    if ready.ready is not True or ready.transition_time is None:
        raise RuntimeError(f"{revision} not ready: {ready.message}")
    transition_s = ready.transition_time.timestamp() - started_wall
    ready_s = time.monotonic() - started
    svc = await cloudrun.finish(op, f"deploy {revision}", timeout_s=60)
    prober_started = time.monotonic()
    headers = await tokens.headers(svc.uri)  # the service is private: an ID token for its URL, as the pipeline's
    async with httpx.AsyncClient(trust_env=False) as client:
        result = await probe_url(client, svc.uri + "/health", kind=UrlKind.SERVICE, mode=ProbeMode.REQUIRED, policy=policy,
                                 headers=headers)
    first = next(a for a in result.attempts if a.status == 200)
    healthy_s = prober_started - started + first.at_s + first.latency_s
    direct_s = await asyncio.wait_for(serving, timeout=60)
    url_s = await asyncio.wait_for(on_url, timeout=60)
    serving_s = min(direct_s, transition_s)  # a watcher starved by a busy machine answers late
    return Observation(delay_s, serving_s, direct_s, transition_s, url_s, healthy_s, ready_s, prober_started - started,
                       cloudrun.revision_gets.get(revision, 0),
                       len(result.attempts), str(result.status))  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def fixed_loop_detection(serving_s: float, first_wait_s: float = 10.0, every_s: float = 10.0) -> float:
    """When "sleep 10 s, then check every 10 s" first sees the revision serving (since the deploy)."""
    checks = max(0, math.ceil((serving_s - first_wait_s) / every_s))
    return first_wait_s + checks * every_s


async def run_all(info: SandboxInfo, image: str, deploys: int, concurrency: int, seed: int) -> list[Observation]:
    settings = Settings.model_construct(
        project=info.project, region=info.region, registry=info.registry, services=(),
        endpoints=Endpoints(run_api=info.run_api, credentials_file=info.credentials_file)
    )
    cloudrun = CountingCloudRun(settings)
    watcher_run = CloudRun(settings)  # the script's own reads: not counted as stagecheck's
    tokens = IdTokens(info.credentials_file)
    policy = ProbePolicy()  # the defaults the pipeline uses
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 10.0) for _ in range(deploys)]
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=info.admin_url, trust_env=False, timeout=10) as admin:
        book = PortBook(admin)
        poller = asyncio.create_task(book.run())

        async def guarded(delay: float) -> Observation:
            async with gate:
                return await one_deploy(cloudrun, book, image, delay, policy, tokens, watcher_run)

        try:
            return await asyncio.gather(*(guarded(d) for d in delays))
        finally:
            poller.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    infra = running_infra()

    import docker

    from sandbox.sample_image import build_sample_image

    client = docker.DockerClient(base_url=infra.docker_host, timeout=120)
    image = build_sample_image(client, infra.registry, f"bench-{uuid.uuid4().hex[:8]}").digest_ref
    client.close()
    with tempfile.TemporaryDirectory(prefix="stagecheck-bench-ready-") as tmp:
        info = start(Path(tmp), docker_host=infra.docker_host, registry=infra.registry, startup_timeout_s=60.0)
        try:
            wall = time.monotonic()
            observations = asyncio.run(run_all(info, image, args.deploys, args.concurrency, args.seed))
            wall = time.monotonic() - wall
        finally:
            stop(Path(tmp))
    lags = [o.healthy_s - o.serving_s for o in observations]
    url_lags = [o.healthy_s - o.url_s for o in observations]
    loop_lags = [fixed_loop_detection(o.serving_s) - o.serving_s for o in observations]
    requests = [o.revision_gets + o.probe_requests for o in observations]
    print(
        f"{len(observations)} deploys of the sample service, STARTUP_DELAY_S uniform in [0, 10) s, "
        f"{args.concurrency} at a time; wall {wall:.1f} s; cores={len(os.sched_getaffinity(0))}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("  delay s  direct s  Ready at s  serving s  Ready seen s  op done s  URL 200 s  healthy s  lag ms"
          "  URL lag ms  revision GETs  probe requests  probe")
    for o in sorted(observations, key=lambda o: o.delay_s):
        print(
            f"  {o.delay_s:7.2f}  {o.direct_s:8.2f}  {o.transition_s:10.2f}  {o.serving_s:9.2f}  {o.ready_s:12.2f}"
            f"  {o.finished_s:9.2f}  {o.url_s:9.2f}  {o.healthy_s:9.2f}"
            f"  {1000 * (o.healthy_s - o.serving_s):6.0f}  {1000 * (o.healthy_s - o.url_s):10.0f}"
            f"  {o.revision_gets:13d}  {o.probe_requests:14d}  {o.probe_status}"
        )
    print(
        f"serving -> first healthy probe: median {1000 * statistics.median(lags):.0f} ms, "
        f"p95 {1000 * percentile(lags, 0.95):.0f} ms, max {1000 * max(lags):.0f} ms "
        f"(targets: median <= 250 ms, p95 <= 1000 ms); requests per deploy: median "
        f"{statistics.median(requests):.0f}, max {max(requests)}"
    )
    print(
        f"the service URL's first 200 (to a 10 ms watcher) -> first healthy probe: median "
        f"{1000 * statistics.median(url_lags):.0f} ms, p95 {1000 * percentile(url_lags, 0.95):.0f} ms, max "
        f"{1000 * max(url_lags):.0f} ms (the URL serves once the traffic is reconciled, "
        f"{1000 * statistics.median([o.url_s - o.serving_s for o in observations]):.0f} ms after the container)"
    )
    print(
        f"'sleep 10 s, then check every 10 s': median {statistics.median(loop_lags):.2f} s, "
        f"p95 {percentile(loop_lags, 0.95):.2f} s -> stagecheck is "
        f"{statistics.median(loop_lags) / statistics.median(lags):.0f}x faster (median), "
        f"{percentile(loop_lags, 0.95) / percentile(lags, 0.95):.0f}x (p95)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
