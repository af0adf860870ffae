"""Is the process that wrote a record still alive? For records a killed process leaves behind (the holder of a
service's slot, a rollout record) on a Prefect server that never learns of the kill: a CLI's temporary server
dies with its CLI, so the killed run stays Running there and its lease is never reaped.

A process is named by host, pid and its start time (Linux `/proc/<pid>/stat`, field 22), so a pid the kernel
has reused since is not mistaken for the writer. Only a process on this host can be judged."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ProcessRef(BaseModel):
    """The process that wrote a record."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str
    pid: int
    started: int | None = None  # clock ticks after boot (None where /proc is not readable)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def start_ticks(pid: int) -> int | None:
    """The start time of a live process (clock ticks after boot), or None when it does not exist (or /proc
    cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 (state) onwards
    try:
        return int(fields[19])  # field 22
    except (IndexError, ValueError):
        return None


def this_process() -> ProcessRef:
    pid = os.getpid()
    return ProcessRef(host=socket.gethostname(), pid=pid, started=start_ticks(pid))


def is_gone(ref: ProcessRef) -> bool | None:
    """True when the process has ended (or its pid now names another process), False when it runs, None when
    this host cannot tell (another host)."""
    if ref.host != socket.gethostname():
        return None
    if ref.pid == os.getpid():
        return False
    try:
        os.kill(ref.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by someone else
    started = start_ticks(ref.pid)
    if started is None:
        return True if Path("/proc/self/stat").exists() else None
    return ref.started is not None and started != ref.started
