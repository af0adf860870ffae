"""Containers on a Docker Engine through the docker SDK (host networking, one port per instance).

Blocking SDK calls run on a small dedicated thread pool; each container gets one daemon thread
that streams its demultiplexed stdout/stderr line by line and then reports its exit code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import docker
import docker.errors

LABEL_SANDBOX = "stagecheck.sandbox"
LABEL_SERVICE = "stagecheck.service"
LABEL_REVISION = "stagecheck.revision"

Stream = Literal["stdout", "stderr"]
LineSink = Callable[[Stream, str], None]  # called from the container's log thread
ExitSink = Callable[[int], None]  # called on the event loop


class ImagePullError(Exception):
    pass


class ContainerStartError(Exception):
    pass


@dataclass(frozen=True)
class Launch:
    image: str
    name: str
    env: dict[str, str]
    labels: dict[str, str]
    memory_bytes: int | None = None
    cpus: float | None = None
    entrypoint: list[str] | None = None
    command: list[str] | None = None


@dataclass
class ContainerInfo:
    id: str
    name: str
    status: str
    labels: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def labels_for(instance_id: str, service: str, revision: str) -> dict[str, str]:
    return {LABEL_SANDBOX: instance_id, LABEL_SERVICE: service, LABEL_REVISION: revision}


def docker_client(base_url: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=base_url, timeout=30)


def remove_labelled(base_url: str, instance_id: str) -> int:
    """Blocking: force-remove every container of a sandbox instance (used by `down`, also when the server died)."""
    client = docker_client(base_url)
    try:
        containers = client.containers.list(all=True, filters={"label": f"{LABEL_SANDBOX}={instance_id}"})
        for container in containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        return len(containers)
    finally:
        client.close()


class DockerRuntime:
    def __init__(self, base_url: str, instance_id: str) -> None:
        self.base_url = base_url
        self.instance_id = instance_id
        self._client = docker_client(base_url)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker")
        self.registry_auth: Callable[[str], dict[str, str] | None] | None = None  # registry host -> pull credentials

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def ping(self) -> bool:
        return bool(await self._call(self._client.ping))

    async def pull(self, image: str) -> str:
        """Pull `image` (tag or @sha256 digest) and return the local image id to run; a registry that wants
        credentials (`registry_auth`) gets the service agent's."""
        auth = self.registry_auth(image.split("/", 1)[0]) if self.registry_auth is not None else None

        def _pull() -> str:
            try:
                return str(self._client.images.pull(image, auth_config=auth).id)
            except docker.errors.APIError as exc:
                raise ImagePullError(str(exc.explanation or exc)) from None
            except docker.errors.DockerException as exc:
                raise ImagePullError(str(exc)) from None

        return str(await self._call(_pull))

    async def run(self, launch: Launch, on_line: LineSink, on_exit: ExitSink) -> str:
        """Create the container, attach to its output, then start it (so no early line is lost)."""
        loop = asyncio.get_running_loop()

        def _run() -> str:
            api = docker.APIClient(base_url=self.base_url, timeout=None)  # type: ignore[arg-type]
            try:
                container = self._client.containers.create(
                    launch.image,
                    name=launch.name,
                    detach=True,
                    network_mode="host",
                    environment=launch.env,
                    labels=launch.labels,
                    mem_limit=launch.memory_bytes,
                    nano_cpus=int(launch.cpus * 1e9) if launch.cpus else None,
                    entrypoint=launch.entrypoint,
                    command=launch.command,
                )
                output = api.attach(str(container.id), stdout=True, stderr=True, stream=True, logs=True, demux=True)
                threading.Thread(
                    target=self._follow, args=(api, str(container.id), output, on_line, on_exit, loop), daemon=True,
                    name=f"logs-{launch.name}",
                ).start()
                container.start()
            except docker.errors.DockerException as exc:
                raise ContainerStartError(str(getattr(exc, "explanation", None) or exc)) from None
            return str(container.id)

        return str(await self._call(_run))

    def _follow(
        self,
        api: docker.APIClient,
        container_id: str,
        output: Iterator[tuple[bytes | None, bytes | None]],
        on_line: LineSink,
        on_exit: ExitSink,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        buffers: dict[Stream, bytes] = {"stdout": b"", "stderr": b""}
        code = -1
        try:
            for out, err in output:
                pairs: tuple[tuple[Stream, bytes | None], ...] = (("stdout", out), ("stderr", err))
                for stream, chunk in pairs:
                    if chunk:
                        buffers[stream] = _emit_lines(buffers[stream] + chunk, stream, on_line)
            for stream, rest in buffers.items():
                if rest:
                    on_line(stream, rest.decode("utf-8", "replace"))
            code = int(api.wait(container_id, timeout=30).get("StatusCode", -1))
        except docker.errors.NotFound:
            code = 137  # removed while running (killed)
        except Exception:  # engine gone or stream broken: report as an unexpected exit
            code = -1
        finally:
            api.close()
        if not loop.is_closed():
            loop.call_soon_threadsafe(on_exit, code)

    async def stop(self, container_id: str, grace_s: float) -> None:
        """Cloud Run's shutdown: SIGTERM (the image's STOPSIGNAL), SIGKILL after `grace_s` if still running."""

        def _stop() -> None:
            try:
                self._client.api.stop(container_id, timeout=max(0, round(grace_s)))
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:  # already stopping / gone: removal follows anyway
                pass

        await self._call(_stop)

    async def remove(self, container_id: str) -> None:
        def _remove() -> None:
            try:
                self._client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass

        await self._call(_remove)

    async def containers(self) -> list[ContainerInfo]:
        def _list() -> list[ContainerInfo]:
            for attempt in range(5):
                try:
                    found = self._client.containers.list(all=True,
                                                         filters={"label": f"{LABEL_SANDBOX}={self.instance_id}"})
                    return [ContainerInfo(str(c.id), str(c.name), str(c.status), dict(c.labels)) for c in found]
                except docker.errors.NotFound:  # removed between the list and its inspect (e.g. scaled to zero)
                    if attempt == 4:
                        raise
            return []

        result: list[ContainerInfo] = await self._call(_list)
        return result

    async def remove_all(self) -> int:
        count: int = await self._call(remove_labelled, self.base_url, self.instance_id)
        return count

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _emit_lines(data: bytes, stream: Stream, on_line: LineSink) -> bytes:
    *lines, rest = data.split(b"\n")
    for line in lines:
        on_line(stream, line.rstrip(b"\r").decode("utf-8", "replace"))
    return rest
