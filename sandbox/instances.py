"""A revision's instances: each a container on its own port, started, probed, stopped, restarted on demand.

A revision runs up to `scaling.maxInstanceCount` instances (unset: 100), each serving at most
`maxInstanceRequestConcurrency` requests at once. A rollout starts the first instance (the revision is
Ready once it is) and warms further ones in the background (the sandbox keeps two by default, so
probes and logs see more than one instance). A request goes to the least busy ready instance; when
every instance is at its concurrency another one starts if the maximum allows, and the request waits
(queued) for a free slot up to the service's queue timeout, then gets 429 "The request was aborted
because there was no available instance." (Cloud Run: queued up to 60 s, then 429). A revision
scaled to zero starts an instance on the first request (cold start). An instance stops when the
revision leaves traffic, when it is idle past the scale-to-zero delay, on a scale-in, or when its
container exits; the platform stops it with SIGTERM and SIGKILLs it 10 s later (container runtime
contract), and a container failing its `livenessProbe` is restarted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from sandbox import model
from sandbox.runlog import RunLog
from sandbox.runtime import ContainerStartError, DockerRuntime, ImagePullError, Launch, free_port, labels_for

InstanceState = Literal["STOPPED", "STARTING", "READY"]


@dataclass(frozen=True)
class StartFailure:
    message: str
    reason: str  # a google.cloud.run.v2 Condition.RevisionReason / CommonReason name


async def _wait_exit(exited: asyncio.Future[int], seconds: float) -> bool:
    """Sleep up to `seconds`; True if the container exited meanwhile."""
    if seconds > 0 and not exited.done():
        await asyncio.wait({exited}, timeout=seconds)
    return exited.done()


async def _tcp_ok(port: int, limit_s: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), limit_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _http_ok(port: int, probe: dict[str, Any], limit_s: float) -> bool:
    get = probe.get("httpGet") or {}
    path = get.get("path") or "/"
    headers = {h.get("name", ""): h.get("value", "") for h in get.get("httpHeaders") or []}
    try:
        async with httpx.AsyncClient(timeout=limit_s, trust_env=False) as client:
            resp = await client.get(f"http://127.0.0.1:{port}{path}", headers=headers)
    except httpx.HTTPError:
        return False
    return 200 <= resp.status_code < 400


async def wait_startup(
    port: int, spec: model.ContainerSpec, exited: asyncio.Future[int], deadline_s: float
) -> StartFailure | None:
    """Cloud Run's startup check: the default TCP probe (port accepts connections), or the configured
    `startupProbe` (httpGet / tcpSocket with initialDelay, period, failureThreshold, timeout)."""
    probe = spec.startup_probe
    deadline = time.monotonic() + deadline_s

    def exit_failure() -> StartFailure:
        return StartFailure(
            f"{model.container_exit_message(exited.result())} {model.startup_timeout_message(spec.container_port)}",
            "HEALTH_CHECK_CONTAINER_ERROR",
        )

    if not probe or ("httpGet" not in probe and "tcpSocket" not in probe and "grpc" not in probe):
        while time.monotonic() < deadline:
            if exited.done():
                return exit_failure()
            if await _tcp_ok(port, 0.5):
                return None
            await _wait_exit(exited, 0.05)
        return StartFailure(model.startup_timeout_message(spec.container_port), "HEALTH_CHECK_CONTAINER_ERROR")

    initial = float(probe.get("initialDelaySeconds") or 0)
    period = float(probe.get("periodSeconds") or 10)
    timeout = float(probe.get("timeoutSeconds") or 1)
    threshold = int(probe.get("failureThreshold") or 3)
    if await _wait_exit(exited, min(initial, max(0.0, deadline - time.monotonic()))):
        return exit_failure()
    failures = 0
    while time.monotonic() < deadline:
        ok = await (_http_ok(port, probe, timeout) if "httpGet" in probe else _tcp_ok(port, timeout))
        if ok:
            return None
        if exited.done():
            return exit_failure()
        failures += 1
        if failures >= threshold:
            break
        if await _wait_exit(exited, min(period, max(0.0, deadline - time.monotonic()))):
            return exit_failure()
    if "httpGet" in probe:
        return StartFailure(model.startup_probe_message(), "HEALTH_CHECK_CONTAINER_ERROR")
    return StartFailure(model.startup_timeout_message(spec.container_port), "HEALTH_CHECK_CONTAINER_ERROR")


NO_INSTANCE_MESSAGE = "The request was aborted because there was no available instance."
# Container runtime contract: an instance being shut down gets SIGTERM, then SIGKILL 10 seconds later
SHUTDOWN_GRACE_S = 10.0


def liveness_failed_message(probe: dict[str, Any], failures: int, port: int) -> str:
    """The platform line of a liveness failure (wording modelled on Cloud Run's startup-probe lines)."""
    kind = "HTTP" if "httpGet" in probe else "TCP"
    where = f'path "{(probe.get("httpGet") or {}).get("path") or "/"}"' if kind == "HTTP" else f"port {port}"
    return (f"LIVENESS {kind} probe failed {failures} times consecutively for the container on {where}. "
            "The container will be restarted.")


DEFAULT_MAX_INSTANCES = 100  # scaling.maxInstanceCount unset (google.cloud.run.v2.RevisionScaling)


class NoAvailableInstance(Exception):
    """Every instance is at its concurrency, no further one may start, and the queue timeout passed."""


def new_instance_id() -> str:
    """An opaque id like Cloud Run's `labels.instanceId` (a long hex string)."""
    return "00" + secrets.token_hex(47)


class Instance:
    """One container of a revision (one instance)."""

    def __init__(
        self,
        *,
        service: str,
        revision: str,
        spec: model.ContainerSpec,
        runtime: DockerRuntime,
        log: RunLog,
        startup_timeout_s: float,
        image: Callable[[], Awaitable[str]] | None = None,
        on_change: Callable[[], None] = lambda: None,
        number: int = 1,
    ) -> None:
        self.service = service
        self.revision = revision
        self.spec = spec
        self.instance_id = new_instance_id()
        self._runtime = runtime
        self._log = log
        self._startup_timeout_s = startup_timeout_s
        self._image = image
        self._on_change = on_change
        self._image_id: str | None = None
        self._starts = 0
        self._number = number
        self._task: asyncio.Task[StartFailure | None] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._stopping = False
        self._liveness: asyncio.Task[None] | None = None
        self.restarts = 0  # liveness restarts
        self.state: InstanceState = "STOPPED"
        self.port: int | None = None
        self.container_id: str | None = None
        self.container_name: str | None = None
        self.in_flight = 0
        self.last_active = time.monotonic()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> StartFailure | None:
        """Start (or join the start in progress); None once the instance is ready."""
        if self.state == "READY":
            return None
        return await asyncio.shield(self.launch())

    def launch(self) -> asyncio.Task[StartFailure | None]:
        """Begin starting now (the instance counts as STARTING at once); the task ends when it is ready or failed."""
        if self._task is None or self._task.done():
            self.state = "STARTING"
            self._task = asyncio.create_task(self._start())
        return self._task

    async def _start(self) -> StartFailure | None:
        self.state = "STARTING"
        self._stopping = False
        failure = await self._launch()
        if failure is not None:
            self._log.system(self.service, self.revision, "ERROR", failure.message)
            self._stopping = True
            await self._remove()
            self.state = "STOPPED"
            self._on_change()
            return failure
        self.state = "READY"
        self.last_active = time.monotonic()
        self._log.system(self.service, self.revision, "INFO",
                         f"Instance {self.instance_id[:12]} of revision {self.revision} is ready on port {self.port}.")
        probe = self.spec.liveness_probe
        if probe and ("httpGet" in probe or "tcpSocket" in probe):  # checked once the startup probe passed
            self._liveness = asyncio.create_task(self._watch_liveness(probe))
        self._on_change()
        return None

    async def _watch_liveness(self, probe: dict[str, Any]) -> None:
        """`livenessProbe`: failureThreshold failures in a row restart the container (SIGTERM, grace, a new
        container on the same instance), as Cloud Run restarts an instance that fails it."""
        period = float(probe.get("periodSeconds") or 10)
        timeout = float(probe.get("timeoutSeconds") or 1)
        threshold = int(probe.get("failureThreshold") or 3)
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        failures = 0
        while self.state == "READY" and not self._stopping and self.port is not None:
            ok = await (_http_ok(self.port, probe, timeout) if "httpGet" in probe else _tcp_ok(self.port, timeout))
            failures = 0 if ok else failures + 1
            if failures >= threshold:
                self._log.system(self.service, self.revision, "ERROR",
                                 liveness_failed_message(probe, failures, self.spec.container_port))
                self.restarts += 1
                self.state = "STARTING"  # no new requests while it restarts
                self._on_change()
                await self._terminate(SHUTDOWN_GRACE_S)
                self._liveness = None
                self.launch()
                return
            await asyncio.sleep(period)

    async def _terminate(self, grace_s: float) -> None:
        """Stop the container as Cloud Run does (SIGTERM, SIGKILL after `grace_s`), wait for its exit (so the
        exit code is the container's own) and remove it."""
        self._stopping = True
        exited = self._exited
        target = self.container_id or self.container_name
        if target and exited is not None and not exited.done():
            await self._runtime.stop(target, grace_s)
            await asyncio.wait({exited}, timeout=5.0)
        await self._remove()

    async def _launch(self) -> StartFailure | None:
        if self._image_id is None:
            try:
                self._image_id = await (self._image() if self._image else self._runtime.pull(self.spec.image))
            except ImagePullError as exc:
                return StartFailure(model.image_missing_message(self.spec.image, str(exc)), "CONTAINER_MISSING")
        self._starts += 1
        self.port = free_port()
        self.container_name = f"sbx-{self._runtime.instance_id[:8]}-{self.revision}-{self._number}-{self._starts}"
        env = {v.name: v.value for v in self.spec.env}
        env.update({"PORT": str(self.port), "K_SERVICE": self.service, "K_REVISION": self.revision,
                    "K_CONFIGURATION": self.service})
        launch = Launch(
            image=self._image_id,
            name=self.container_name,
            env=env,
            labels=labels_for(self._runtime.instance_id, self.service, self.revision),
            memory_bytes=self.spec.memory_bytes,
            cpus=self.spec.cpus,
            entrypoint=list(self.spec.command) or None,
            command=list(self.spec.args) or None,
        )
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exited = exited
        self._log.system(self.service, self.revision, "INFO",
                         f"Starting new instance of revision {self.revision} (PORT={self.port}).")
        run = asyncio.ensure_future(self._runtime.run(
            launch,
            lambda stream, line: self._log.container(self.service, self.revision, stream, line,
                                                     instance_id=self.instance_id),
            lambda code: self._on_exit(exited, code),
        ))
        try:
            self.container_id = await asyncio.shield(run)
        except asyncio.CancelledError:
            # stopped while the engine creates the container: let that finish, then remove it
            with contextlib.suppress(Exception):
                await self._runtime.remove(await run)
            raise
        except ContainerStartError as exc:
            return StartFailure(f"The container could not be started: {exc}", "HEALTH_CHECK_CONTAINER_ERROR")
        return await wait_startup(self.port, self.spec, exited, self._startup_timeout_s)

    def _on_exit(self, exited: asyncio.Future[int], code: int) -> None:
        if not exited.done():
            exited.set_result(code)
        if exited is not self._exited:
            return  # an earlier container of this revision
        if self._stopping:  # stopped by the platform: "Container called exit(143)." after SIGTERM
            self._log.system(self.service, self.revision, "INFO" if code == 0 else "ERROR",
                             model.container_exit_message(code))
            return
        severity = "INFO" if code == 0 else "ERROR"
        self._log.system(self.service, self.revision, severity, model.container_exit_message(code))
        if self.state == "READY":
            self.state = "STOPPED"
            self._on_change()
            asyncio.get_running_loop().create_task(self._remove())

    async def stop(self, reason: str, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Shut the instance down: SIGTERM, SIGKILL after `grace_s` (the container runtime contract's 10 s)."""
        if self.state == "STOPPED" and self.container_name is None:
            return
        self._stopping = True
        self._log.system(self.service, self.revision, "INFO", f"Stopping instance of revision {self.revision}: {reason}.")
        if self._liveness is not None and self._liveness is not asyncio.current_task():
            self._liveness.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        was_ready = self.state == "READY"
        self.state = "STOPPED"  # no new requests meanwhile
        self._on_change()
        if was_ready:
            await self._terminate(grace_s)
        await self._remove()
        self._on_change()

    async def _remove(self) -> None:
        target = self.container_id or self.container_name
        self.container_id = None
        self.container_name = None
        if target:
            await self._runtime.remove(target)

    # ------------------------------------------------------------ requests

    def begin_request(self) -> None:
        self.in_flight += 1

    def end_request(self) -> None:
        self.in_flight -= 1
        self.last_active = time.monotonic()
        self._on_change()

    def idle_for(self, now: float) -> float:
        return 0.0 if self.in_flight or self.state != "READY" else now - self.last_active

    def describe(self) -> dict[str, Any]:
        return {"service": self.service, "revision": self.revision, "instance_id": self.instance_id,
                "state": self.state, "port": self.port, "container_id": self.container_id,
                "container_name": self.container_name, "in_flight": self.in_flight}


class RevisionInstance:
    """All instances of one revision: scale out up to the maximum, concurrency per instance, queueing."""

    def __init__(
        self,
        *,
        service: str,
        revision: str,
        spec: model.ContainerSpec,
        runtime: DockerRuntime,
        log: RunLog,
        startup_timeout_s: float,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        concurrency: int = 80,
        warm_instances: int = 2,
        request_timeout_s: float = 300.0,
    ) -> None:
        self.service = service
        self.revision = revision
        self.spec = spec
        self.request_timeout_s = request_timeout_s  # template.timeout: past it the front end answers 504
        self.max_instances = max(1, max_instances)
        self.concurrency = max(1, concurrency)
        self.warm_instances = max(1, min(warm_instances, self.max_instances))
        self._runtime = runtime
        self._log = log
        self._startup_timeout_s = startup_timeout_s
        self._numbers = itertools.count(1)
        self._image_lock = asyncio.Lock()
        self._image_id: str | None = None
        self._change: asyncio.Future[None] | None = None
        self._warming: set[asyncio.Task[StartFailure | None]] = set()
        self._stopping = False
        self.instances: list[Instance] = []

    # ------------------------------------------------------------ state

    @property
    def state(self) -> InstanceState:
        states = {i.state for i in self.instances}
        return "READY" if "READY" in states else "STARTING" if "STARTING" in states else "STOPPED"

    @property
    def in_flight(self) -> int:
        return sum(i.in_flight for i in self.instances)

    def _notify(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None

    async def _changed(self, timeout_s: float) -> None:
        """Wait until an instance's state or load changes (or `timeout_s` passes)."""
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        if timeout_s > 0:
            await asyncio.wait({self._change}, timeout=timeout_s)

    async def _pull(self) -> str:
        async with self._image_lock:
            if self._image_id is None:
                self._image_id = await self._runtime.pull(self.spec.image)
            return self._image_id

    def _new_instance(self) -> Instance:
        inst = Instance(service=self.service, revision=self.revision, spec=self.spec, runtime=self._runtime,
                        log=self._log, startup_timeout_s=self._startup_timeout_s, image=self._pull,
                        on_change=self._notify, number=next(self._numbers))
        self.instances.append(inst)
        return inst

    def _active(self) -> list[Instance]:
        return [i for i in self.instances if i.state != "STOPPED" or i.container_name is not None]

    def _prune(self) -> None:
        """Forget instances that stopped (their containers are removed)."""
        self.instances = [i for i in self.instances if i.state != "STOPPED" or i.container_name is not None
                          or (i._task is not None and not i._task.done())]

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> StartFailure | None:
        """Rollout: the first instance must become ready (its failure is the revision's; the revision is
        Ready as soon as it is, as Cloud Run's is once one instance passed its startup probe); the further
        warm instances then start in the background (a failure among them is logged, the revision stays
        Ready; waiting for them would put Ready one startup time late)."""
        self._stopping = False
        self._prune()
        first = next((i for i in self.instances if i.state != "STOPPED"), None) or self._new_instance()
        failure = await first.start()
        if failure is None:
            missing = self.warm_instances - len([i for i in self.instances if i.state != "STOPPED"])
            for _ in range(max(0, missing)):
                self._spawn()
        return failure

    def _spawn(self) -> Instance:
        inst = self._new_instance()
        task = inst.launch()
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)
        return inst

    async def stop(self, reason: str, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        self._stopping = True
        for task in list(self._warming):
            task.cancel()
        await asyncio.gather(*(i.stop(reason, grace_s) for i in self.instances), return_exceptions=True)
        self._prune()

    async def scale_in(self, count: int) -> int:
        """Stop up to `count` idle ready instances (Cloud Run scales in at will): SIGTERM and grace."""
        idle = [i for i in self.instances if i.state == "READY" and not i.in_flight][:max(0, count)]
        await asyncio.gather(*(i.stop("scale-in") for i in idle))
        self._prune()
        return len(idle)

    async def stop_idle(self, after_s: float, now: float, reason: str) -> None:
        """Scale to zero: stop each ready instance idle for `after_s` or longer."""
        for inst in list(self.instances):
            if inst.state == "READY" and not inst.in_flight and inst.idle_for(now) >= after_s:
                await inst.stop(reason)
        self._prune()

    # ------------------------------------------------------------ requests

    async def acquire(self, hold_s: float, queue_s: float) -> Instance | None:
        """A ready instance with a free request slot, the slot already taken (call `end_request` on it).

        None when the revision was scaled to zero and no instance became ready within `hold_s` (cold
        start); NoAvailableInstance when every instance stayed busy for `queue_s`."""
        started = time.monotonic()
        while True:
            self._prune()
            ready = [i for i in self.instances if i.state == "READY" and i.port is not None]
            free = [i for i in ready if i.in_flight < self.concurrency]
            if free:
                inst = min(free, key=lambda i: (i.in_flight, i.last_active))
                inst.begin_request()
                return inst
            starting = [i for i in self.instances if i.state == "STARTING"]
            if not ready:  # scaled to zero (or crashed): a cold start, held up to hold_s
                if not starting:
                    self._spawn()
                left = hold_s - (time.monotonic() - started)
                if left <= 0:
                    return None
                await self._changed(left)
                continue
            if not starting and len(self._active()) < self.max_instances and not self._stopping:
                self._spawn()  # scale out for the queued request
            left = queue_s - (time.monotonic() - started)
            if left <= 0:
                raise NoAvailableInstance(NO_INSTANCE_MESSAGE)
            await self._changed(left)

    def idle_for(self, now: float) -> float:
        ready = [i for i in self.instances if i.state == "READY"]
        return min((i.idle_for(now) for i in ready), default=0.0)

    def describe(self) -> dict[str, Any]:
        return {"service": self.service, "revision": self.revision, "state": self.state,
                "in_flight": self.in_flight, "max_instances": self.max_instances,
                "concurrency": self.concurrency, "instances": [i.describe() for i in self.instances]}
