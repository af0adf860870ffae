"""Process supervision for the local environment (the Docker Engine and registry, the sandbox server, the
local Prefect server and worker): detached background processes identified by pid *and* start time, so
that stopping one never hits an unrelated process that reused the pid. The one module that starts,
watches and stops processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

POLL_S = 0.05


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: distinguishes a reused pid
    argv: list[str]
    log: str


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


def command_name(pid: int) -> str | None:
    """The executable's base name of a live process (None if it is gone or a zombie)."""
    if start_ticks(pid) is None:
        return None
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return Path(argv0).name


def is_running(record: ProcessRecord) -> bool:
    return start_ticks(record.pid) == record.start_ticks


def cmdline(pid: int) -> list[bytes]:
    """The argv of a live process ([] if it is gone or a zombie)."""
    if start_ticks(pid) is None:
        return []
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def record_of(name: str, pid: int) -> ProcessRecord | None:
    """A record for a live process known only by its pid (None if it is gone), to stop it by pid and start time."""
    ticks = start_ticks(pid)
    return None if ticks is None else ProcessRecord(name=name, pid=pid, start_ticks=ticks, argv=[], log="")


# Backgrounded by a short-lived shell, so the daemon is re-parented to init: it outlives the
# caller (pytest, make) without becoming its zombie, and its output goes to the log, not a pipe.
_LAUNCHER = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


def spawn_detached(name: str, argv: list[str], log: Path) -> ProcessRecord:
    """Start `argv` in a new session, detached, with stdout/stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    launcher = subprocess.run(
        ["/bin/sh", "-c", _LAUNCHER, "sh", str(log), *argv],
        capture_output=True, text=True, start_new_session=True, check=True, timeout=30,
    )
    pid = int(launcher.stdout.strip())
    ticks = start_ticks(pid)
    return ProcessRecord(name=name, pid=pid, start_ticks=ticks or 0, argv=argv, log=str(log))


def reap(pid: int) -> None:
    """Collect `pid` if it is our exited child (else it would linger as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def gone(record: ProcessRecord) -> bool:
    """The recorded process no longer runs (collected first if it is our child)."""
    reap(record.pid)
    return not is_running(record)


def signal_until_gone(record: ProcessRecord, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGKILL),
                      wait_s: float = 10.0) -> None:
    """Send each signal in turn (only while it is still that very process), waiting up to `wait_s`
    after each for it to go."""
    for sig in signals:
        if gone(record):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)
        if wait_until(lambda: gone(record), wait_s):
            return


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (e.g. the flow-run processes a worker started)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def stop_process(record: ProcessRecord, *, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGKILL),
                 wait_s: float = 10.0) -> None:
    """Signal `record` (only if it is still that very process) in order until it is gone; then stop
    the children it left behind, also by pid and start time."""
    orphans = [ProcessRecord(name=f"{record.name}-child", pid=p, start_ticks=start_ticks(p) or 0, argv=[], log="")
               for p in (children(record.pid) if is_running(record) else [])]
    signal_until_gone(record, signals, wait_s)
    for child in orphans:
        signal_until_gone(child, (signal.SIGTERM, signal.SIGKILL), 5.0)


def write_record(path: Path, record: ProcessRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(record)) + "\n")
    partial.replace(path)


def read_record(path: Path) -> ProcessRecord | None:
    """The record in `path`, or None if there is none or it is not one of ours."""
    try:
        data = json.loads(path.read_text())
        return ProcessRecord(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None


def pid_from_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def last_line(path: Path) -> str:
    """The last non-empty line of a log file ('' if none), to quote in an error."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1].strip() if lines else ""
