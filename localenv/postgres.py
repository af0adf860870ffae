"""A throwaway PostgreSQL for a team Prefect server (tests, benchmarks): Debian's `postgresql` binaries, a
cluster of its own in a temporary directory, listening on 127.0.0.1 only (no Unix socket in a shared
place), stopped by pid and removed afterwards.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user the Debian package
creates, and initdb / postgres run as that user (`setpriv`, which execs in place: the recorded pid is the
server's). Local connections are trusted (the cluster listens on loopback and lives only as long as the
run); Prefect connects with `postgresql+asyncpg://prefect@127.0.0.1:PORT/prefect`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localenv.processes import ProcessRecord, is_running, last_line, spawn_detached, stop_process, wait_until

PG_ROOT = Path("/usr/lib/postgresql")
USER = DATABASE = "prefect"
READY_TIMEOUT_S = 60.0


class PostgresError(RuntimeError):
    """PostgreSQL is not installed or did not start (the message says what to do / what it printed)."""


@dataclass
class Postgres:
    root: Path  # the temporary directory holding the cluster and its log
    port: int
    record: ProcessRecord

    @property
    def url(self) -> str:
        """Prefect's `PREFECT_SERVER_DATABASE_CONNECTION_URL` for this cluster."""
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{DATABASE}"


def bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted((p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise PostgresError("PostgreSQL is not installed: `make system-packages` (Debian package `postgresql`)")
    return found[-1]


def _as_owner(argv: list[str]) -> list[str]:
    """Run as the `postgres` user when we are root (PostgreSQL refuses root); as ourselves otherwise."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(*, timeout_s: float = READY_TIMEOUT_S) -> Postgres:
    """initdb a new cluster in a temporary directory, start it on a free 127.0.0.1 port, create the
    `prefect` role and database; stop() it (and remove the directory) when done."""
    bins = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="stagecheck-postgres-"))
    data, log = root / "data", root / "postgres.log"
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    try:
        subprocess.run(_as_owner([str(bins / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
                                  "--no-sync", "--no-instructions"]),
                       check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresError(f"initdb failed: {getattr(exc, 'stderr', '') or exc}") from None
    port = _free_port()
    record = spawn_detached("postgres", _as_owner([
        str(bins / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root),
        "-c", "fsync=off", "-c", "max_connections=200"]), log)
    server = Postgres(root=root, port=port, record=record)

    def ready() -> bool:
        if not is_running(record):
            return True
        probe = subprocess.run([str(bins / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        return probe.returncode == 0

    if not wait_until(ready, timeout_s) or not is_running(record):
        stop(server)
        raise PostgresError(f"PostgreSQL did not accept connections on 127.0.0.1:{port} within {timeout_s:g} s: "
                            f"{last_line(log) or 'no output'}")
    created = subprocess.run([str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
                             capture_output=True, text=True)
    if created.returncode != 0:
        stop(server)
        raise PostgresError(f"createdb failed: {created.stderr.strip()}")
    return server


def stop(server: Postgres) -> None:
    """Fast shutdown (SIGINT), then harder; remove the cluster's directory."""
    stop_process(server.record, signals=(signal.SIGINT, signal.SIGQUIT, signal.SIGKILL), wait_s=10.0)
    shutil.rmtree(server.root, ignore_errors=True)
