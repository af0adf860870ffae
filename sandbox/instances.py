"""One revision's instance: start the container, wait for its startup probe, stop, restart on demand.

Each revision has at most one instance. It starts when the revision is rolled out or when a request
reaches a revision scaled to zero (cold start); it stops when the revision leaves traffic, when it
is idle past the service's scale-to-zero delay, or when the container exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
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


class RevisionInstance:
    """At most one running container for one revision."""

    def __init__(
        self,
        *,
        service: str,
        revision: str,
        spec: model.ContainerSpec,
        runtime: DockerRuntime,
        log: RunLog,
        startup_timeout_s: float,
    ) -> None:
        self.service = service
        self.revision = revision
        self.spec = spec
        self._runtime = runtime
        self._log = log
        self._startup_timeout_s = startup_timeout_s
        self._image_id: str | None = None
        self._starts = 0
        self._task: asyncio.Task[StartFailure | None] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._stopping = False
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
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._start())
        return await asyncio.shield(self._task)

    async def _start(self) -> StartFailure | None:
        self.state = "STARTING"
        self._stopping = False
        failure = await self._launch()
        if failure is not None:
            self._log.system(self.service, self.revision, "ERROR", failure.message)
            self._stopping = True
            await self._remove()
            self.state = "STOPPED"
            return failure
        self.state = "READY"
        self.last_active = time.monotonic()
        self._log.system(self.service, self.revision, "INFO",
                         f"Instance of revision {self.revision} is ready on port {self.port}.")
        return None

    async def _launch(self) -> StartFailure | None:
        if self._image_id is None:
            try:
                self._image_id = await self._runtime.pull(self.spec.image)
            except ImagePullError as exc:
                return StartFailure(model.image_missing_message(self.spec.image, str(exc)), "CONTAINER_MISSING")
        self._starts += 1
        self.port = free_port()
        self.container_name = f"sbx-{self._runtime.instance_id[:8]}-{self.revision}-{self._starts}"
        # labels.instanceId of this container's log lines (Cloud Run: one opaque id per instance)
        instance_label = hashlib.sha256(self.container_name.encode()).hexdigest()[:32]
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
            lambda stream, line: self._log.container(self.service, self.revision, stream, line, instance_label),
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
        if self._stopping:
            self._log.system(self.service, self.revision, "INFO", f"Instance of revision {self.revision} stopped.")
            return
        severity = "INFO" if code == 0 else "ERROR"
        self._log.system(self.service, self.revision, severity, model.container_exit_message(code))
        if self.state == "READY":
            self.state = "STOPPED"
            asyncio.get_running_loop().create_task(self._remove())

    async def stop(self, reason: str) -> None:
        if self.state == "STOPPED" and self.container_name is None:
            return
        self._stopping = True
        self._log.system(self.service, self.revision, "INFO", f"Stopping instance of revision {self.revision}: {reason}.")
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._remove()
        self.state = "STOPPED"

    async def _remove(self) -> None:
        target = self.container_id or self.container_name
        self.container_id = None
        self.container_name = None
        if target:
            await self._runtime.remove(target)

    # ------------------------------------------------------------ requests

    async def acquire(self, hold_s: float) -> int | None:
        """The port to send a request to, starting the instance if it is scaled to zero (cold start).
        None when it is not ready within `hold_s`."""
        if self.state == "READY" and self.port is not None:
            return self.port
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._start())
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._task), hold_s)
        except TimeoutError:
            return None
        return self.port if failure is None and self.state == "READY" else None

    def begin_request(self) -> None:
        self.in_flight += 1

    def end_request(self) -> None:
        self.in_flight -= 1
        self.last_active = time.monotonic()

    def idle_for(self, now: float) -> float:
        return 0.0 if self.in_flight or self.state != "READY" else now - self.last_active

    def describe(self) -> dict[str, Any]:
        return {"service": self.service, "revision": self.revision, "state": self.state, "port": self.port,
                "container_id": self.container_id, "container_name": self.container_name,
                "in_flight": self.in_flight}
