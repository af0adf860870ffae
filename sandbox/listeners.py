"""Many HTTP listeners in one asyncio loop: one uvicorn.Server per pre-bound socket.

uvicorn's own signal capture is disabled for every listener (the sandbox server installs its own
SIGTERM/SIGINT handling and stops all listeners itself)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class _Listener(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it (uvicorn's
    # fromfd() copy of a passed socket has proto 0, so asyncio would not set TCP_NODELAY itself)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ListenerPool:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._servers: dict[int, tuple[_Listener, asyncio.Task[None], socket.socket]] = {}

    async def open(self, app: ASGIApp, port: int = 0, *, proxy: bool = False, start_timeout_s: float = 10.0) -> int:
        """Serve `app` on 127.0.0.1:`port` (0 = a free port); returns the port once it accepts connections.
        A `proxy` listener adds no Server/Date headers of its own (the upstream's pass through)."""
        sock = bind(port, self.host)
        actual = int(sock.getsockname()[1])
        config = uvicorn.Config(app, interface="asgi3", lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=5,
                                server_header=not proxy, date_header=not proxy)
        server = _Listener(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if task.done():
                sock.close()
                task.result()
                raise RuntimeError(f"listener on port {actual} stopped during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"listener on port {actual} did not start")
            await asyncio.sleep(0.01)
        self._servers[actual] = (server, task, sock)
        return actual

    async def close(self, port: int, timeout_s: float = 5.0) -> None:
        entry = self._servers.pop(port, None)
        if entry is None:
            return
        server, task, sock = entry
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            server.force_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)
        sock.close()

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(port) for port in list(self._servers)), return_exceptions=True)

    @property
    def ports(self) -> list[int]:
        return sorted(self._servers)
