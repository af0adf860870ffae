"""The local infrastructure the sandbox needs: a Docker Engine and an image registry.

`ensure_up` reuses an engine / registry that already answers and starts only what is missing
(dockerd without docker's bridge; the CNCF `docker-registry` on 127.0.0.1). What it started is
recorded in `STATE_DIR/pids/infra-*.pid` (pid + start time), so `stop_started` stops exactly
that and never something it merely reused. `STATE_DIR/infra.json` tells the rest of the sandbox
where the engine and the registry are.

    stagecheck infra up|down|status [--state-dir DIR] [--registry ADDR] [--docker-host HOST]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker
import docker.errors
import httpx
import requests.exceptions
import yaml

from localenv import processes
from localenv.processes import ProcessRecord
from sandbox.sample_image import SampleImageError, check_busybox, ensure_base_image

DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_STATE_DIR = Path(".stagecheck")
SYSTEM_DOCKER_HOST = "unix:///var/run/docker.sock"
ENGINE_START_TIMEOUT_S = 60.0
REGISTRY_START_TIMEOUT_S = 20.0
ENGINE_STOP_TIMEOUT_S = 30.0
REGISTRY_STOP_TIMEOUT_S = 10.0
# A unix socket path holds at most 107 bytes. dockerd's longest socket is
# EXEC_ROOT/containerd/containerd.sock.ttrpc (exec root + 33 bytes), the exec root is RUN_DIR/exec.
MAX_RUN_DIR_LEN = 107 - len("/exec/containerd/containerd.sock.ttrpc") - 8
DOCKERD = "dockerd"
REGISTRY = "registry"


class InfraError(RuntimeError):
    """Infrastructure could not be brought up or down; the message is one line for the user."""


@dataclass(frozen=True)
class InfraInfo:
    docker_host: str  # e.g. unix:///work/main/.stagecheck/docker/docker.sock
    registry: str  # host:port, e.g. 127.0.0.1:5000
    # Components that ensure_up (this call or an earlier one on the same state dir) started and
    # that still run: what `stop_started` / `make down` will stop. Reused ones are not listed.
    started: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InfraPaths:
    state_dir: Path
    run_dir: Path  # holds the engine's exec root (its sockets): short enough for unix sockets
    docker_sock: Path  # where an engine started here listens

    @property
    def docker_dir(self) -> Path:
        return self.state_dir / "docker"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_sock}"

    @property
    def data_root(self) -> Path:
        return self.docker_dir / "data"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def dockerd_pidfile(self) -> Path:
        return self.docker_dir / "dockerd.pid"

    @property
    def dockerd_log(self) -> Path:
        return self.docker_dir / "dockerd.log"

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_dir / "config.yml"

    @property
    def registry_log(self) -> Path:
        return self.registry_dir / "registry.log"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    def record_file(self, component: str) -> Path:
        return self.pids_dir / f"infra-{component}.pid"

    @property
    def infra_json(self) -> Path:
        return self.state_dir / "infra.json"


def run_dir_for(state_dir: Path, short_root: Path) -> Path:
    """`state_dir/docker`, or `short_root/stagecheck-<hash>` when that is too long for sockets."""
    docker_dir = state_dir / "docker"
    if len(str(docker_dir)) <= MAX_RUN_DIR_LEN:
        return docker_dir
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return short_root / f"stagecheck-{digest}"


def short_root() -> Path:
    run = Path("/run")
    return run if os.access(run, os.W_OK) else Path(tempfile.gettempdir())


def infra_paths(state_dir: Path, docker_sock: Path | None = None) -> InfraPaths:
    """Where everything lives for `state_dir`; `docker_sock` overrides the engine's socket."""
    state_dir = state_dir.resolve()
    run_dir = run_dir_for(state_dir, short_root())
    sock = docker_sock or run_dir / "docker.sock"
    if len(str(sock)) > 107:
        raise InfraError(f"unix socket path too long (max 107 bytes): {sock}")
    return InfraPaths(state_dir=state_dir, run_dir=run_dir, docker_sock=sock)


def parse_registry_addr(addr: str) -> tuple[str, int]:
    """`127.0.0.1:5000` -> ("127.0.0.1", 5000); only loopback addresses are allowed."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InfraError(f"registry address must look like 127.0.0.1:5000 (got {addr!r})")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InfraError(f"registry address must be on loopback (127.0.0.0/8), got {addr!r}")
    return host, int(port_text)


def dockerd_argv(paths: InfraPaths) -> list[str]:
    return [
        DOCKERD,
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--storage-driver=overlay2",
        f"--host={paths.docker_host}",
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--pidfile={paths.dockerd_pidfile}",
    ]


def registry_config(paths: InfraPaths, addr: str) -> dict[str, object]:
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(paths.registry_dir / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": addr},
    }


# --- probes ---------------------------------------------------------------------------------


def ensure_sample_base(docker_host: str) -> None:
    """The sample service's base image (its Dockerfile's BUSYBOX_IMAGE) in the engine; InfraError if not."""
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        ensure_base_image(client)
    except SampleImageError as exc:
        raise InfraError(str(exc)) from exc
    finally:
        client.close()


def engine_answers(docker_host: str) -> bool:
    if docker_host.startswith("unix://") and not Path(docker_host.removeprefix("unix://")).exists():
        return False
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=3)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
    finally:
        client.close()


def registry_state(addr: str) -> str:
    """'registry' if a Docker registry answers on `addr`, 'free' if nothing listens, else 'other'."""
    try:
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            response = client.get(f"http://{addr}/v2/")
    except httpx.ConnectError:
        return "free"
    except httpx.HTTPError:
        return "other"
    if response.headers.get("docker-distribution-api-version", "").startswith("registry/2"):
        return "registry"
    return "other"


# --- starting -------------------------------------------------------------------------------


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InfraError(f"`{name}` is not installed (not on PATH): run `make setup`")
    return path


def owned_records(paths: InfraPaths) -> dict[str, ProcessRecord]:
    """Components this state dir's ensure_up started and that are still running."""
    records = {}
    for component in (DOCKERD, REGISTRY):
        record = processes.read_record(paths.record_file(component))
        if record is not None and processes.is_running(record):
            records[component] = record
    return records


def _clear_stale_pidfile(paths: InfraPaths) -> None:
    pid = processes.pid_from_pidfile(paths.dockerd_pidfile)
    if pid is not None and processes.command_name(pid) == DOCKERD:
        raise InfraError(
            f"a process (pid {pid}) owns {paths.dockerd_pidfile} but no engine answers on "
            f"{paths.docker_host}; stop it or remove the pidfile"
        )
    paths.dockerd_pidfile.unlink(missing_ok=True)


def _await_start(
    paths: InfraPaths, record: ProcessRecord, ready: Callable[[], bool], timeout_s: float, waiting_for: str
) -> None:
    """Wait until `ready()`; if the process dies or the deadline passes, stop and forget it."""
    answered = processes.wait_until(lambda: not processes.is_running(record) or ready(), timeout_s)
    if answered and processes.is_running(record):
        return
    reason = f"did not answer on {waiting_for} within {timeout_s:.0f} s" if not answered else "exited during startup"
    processes.signal_until_gone(record, wait_s=10.0)
    paths.record_file(record.name).unlink(missing_ok=True)
    if record.name == DOCKERD:
        _cleanup_after_engine(paths, record)
    detail = processes.last_line(Path(record.log))
    hint = f" (last log line: {detail[:200]})" if detail else ""
    raise InfraError(f"{record.argv[0].rsplit('/', 1)[-1]} {reason}; see {record.log}{hint}")


def start_engine(paths: InfraPaths) -> ProcessRecord:
    require_binary(DOCKERD)
    _clear_stale_pidfile(paths)
    paths.docker_dir.mkdir(parents=True, exist_ok=True)
    paths.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.docker_sock.parent.mkdir(parents=True, exist_ok=True)
    record = processes.spawn_detached(DOCKERD, dockerd_argv(paths), paths.dockerd_log)
    processes.write_record(paths.record_file(DOCKERD), record)
    _await_start(
        paths, record, lambda: engine_answers(paths.docker_host), ENGINE_START_TIMEOUT_S, paths.docker_host
    )
    return record


def start_registry(paths: InfraPaths, addr: str) -> ProcessRecord:
    binary = require_binary("docker-registry")
    paths.registry_dir.mkdir(parents=True, exist_ok=True)
    paths.registry_config.write_text(yaml.safe_dump(registry_config(paths, addr), sort_keys=False))
    argv = [binary, "serve", str(paths.registry_config)]
    record = processes.spawn_detached(REGISTRY, argv, paths.registry_log)
    processes.write_record(paths.record_file(REGISTRY), record)
    _await_start(paths, record, lambda: registry_state(addr) == "registry", REGISTRY_START_TIMEOUT_S, addr)
    return record


def _engine_candidates(paths: InfraPaths, docker_host: str | None) -> tuple[list[str], str | None]:
    """(hosts to try in order, the host to start an engine on if none answers, or None)."""
    chosen = docker_host or os.environ.get("DOCKER_HOST") or None
    if chosen is None:
        return [paths.docker_host, SYSTEM_DOCKER_HOST], paths.docker_host
    return [chosen], chosen if chosen.startswith("unix://") else None


def ensure_engine(paths: InfraPaths, docker_host: str | None) -> tuple[str, ProcessRecord | None]:
    candidates, start_on = _engine_candidates(paths, docker_host)
    for host in candidates:
        if engine_answers(host):
            return host, None
    if start_on is None:
        raise InfraError(f"no Docker Engine answers on {candidates[0]}")
    sock = Path(start_on.removeprefix("unix://"))
    return start_on, start_engine(infra_paths(paths.state_dir, docker_sock=sock))


def ensure_registry(paths: InfraPaths, addr: str) -> ProcessRecord | None:
    parse_registry_addr(addr)
    state = registry_state(addr)
    if state == "registry":
        return None
    if state == "other":
        raise InfraError(f"{addr} is taken by something that is not a Docker registry: choose another --registry")
    return start_registry(paths, addr)


def write_infra_json(paths: InfraPaths, info: InfraInfo) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    partial = paths.infra_json.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(info), indent=2) + "\n")
    partial.replace(paths.infra_json)


@contextmanager
def state_lock(paths: InfraPaths) -> Iterator[None]:
    """Serialise ensure_up/stop_started on one state dir (parallel test sessions, make -j)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with (paths.state_dir / "infra.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_up(
    state_dir: Path, *, registry_addr: str = DEFAULT_REGISTRY, docker_host: str | None = None
) -> InfraInfo:
    """Make sure a Docker Engine and a registry answer; start only what is missing. Idempotent."""
    parse_registry_addr(registry_addr)
    paths = infra_paths(state_dir)
    try:
        check_busybox()  # before starting anything: the sample image's base needs a static busybox
    except SampleImageError as exc:
        raise InfraError(str(exc)) from exc
    with state_lock(paths):
        host, _ = ensure_engine(paths, docker_host)
        ensure_registry(paths, registry_addr)
        ensure_sample_base(host)
        info = InfraInfo(docker_host=host, registry=registry_addr, started=sorted(owned_records(paths)))
        write_infra_json(paths, info)
    return info


# --- stopping -------------------------------------------------------------------------------


def _mount_points() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def _cleanup_after_engine(paths: InfraPaths, record: ProcessRecord) -> None:
    """What a stopped dockerd may leave: its default netns mount, docker0, a short run dir."""
    exec_root = next((a.split("=", 1)[1] for a in record.argv if a.startswith("--exec-root=")), None)
    if exec_root:
        netns = Path(exec_root) / "netns" / "default"
        if str(netns) in _mount_points():
            subprocess.run(["umount", str(netns)], capture_output=True, check=False)
        run_dir = Path(exec_root).parent
        outside_state_dir = not run_dir.is_relative_to(paths.state_dir)
        if outside_state_dir and run_dir.name.startswith("stagecheck-"):
            shutil.rmtree(run_dir, ignore_errors=True)
    if Path("/sys/class/net/docker0").exists():
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True, check=False)


def stop_started(state_dir: Path) -> list[str]:
    """Stop what ensure_up started for `state_dir` (registry first, then the engine), by pid.

    Returns the components it stopped. Reused engines/registries are never touched."""
    paths = infra_paths(state_dir)
    if not paths.state_dir.is_dir():
        return []
    with state_lock(paths):
        return _stop_recorded(paths)


def _stop_recorded(paths: InfraPaths) -> list[str]:
    stopped = []
    for component, timeout_s in ((REGISTRY, REGISTRY_STOP_TIMEOUT_S), (DOCKERD, ENGINE_STOP_TIMEOUT_S)):
        record_file = paths.record_file(component)
        record = processes.read_record(record_file)
        if record is not None and processes.is_running(record):
            processes.signal_until_gone(record, wait_s=timeout_s)
            stopped.append(component)
            if component == DOCKERD:
                _cleanup_after_engine(paths, record)
        record_file.unlink(missing_ok=True)
    if stopped:
        paths.infra_json.unlink(missing_ok=True)
    return stopped


# --- status and CLI -------------------------------------------------------------------------


def read_infra_json(state_dir: Path) -> InfraInfo | None:
    try:
        data = json.loads(infra_paths(state_dir).infra_json.read_text())
        return InfraInfo(docker_host=data["docker_host"], registry=data["registry"], started=data["started"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def status_lines(state_dir: Path, registry_addr: str, docker_host: str | None) -> tuple[list[str], bool]:
    paths = infra_paths(state_dir)
    recorded = read_infra_json(state_dir)
    owned = owned_records(paths)
    host = docker_host or os.environ.get("DOCKER_HOST") or (recorded.docker_host if recorded else paths.docker_host)
    registry = recorded.registry if recorded and registry_addr == DEFAULT_REGISTRY else registry_addr

    def owner(component: str) -> str:
        record = owned.get(component)
        return f"started by stagecheck, pid {record.pid}" if record else "not started by stagecheck"

    engine_ok = engine_answers(host)
    registry_ok = registry_state(registry) == "registry"
    lines = [
        f"docker engine  {host}: {'up' if engine_ok else 'DOWN'} ({owner(DOCKERD)})",
        f"registry       {registry}: {'up' if registry_ok else 'DOWN'} ({owner(REGISTRY)})",
    ]
    return lines, engine_ok and registry_ok


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stagecheck infra", description="Start/stop the local Docker Engine and registry."
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: .stagecheck")
    parser.add_argument("--registry", default=DEFAULT_REGISTRY, help=f"default: {DEFAULT_REGISTRY}")
    parser.add_argument("--docker-host", default=None, help="default: $DOCKER_HOST, else the state dir's")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "up":
            info = ensure_up(args.state_dir, registry_addr=args.registry, docker_host=args.docker_host)
            started = ", ".join(info.started) or "nothing"
            print(f"docker engine: {info.docker_host}")
            print(f"registry:      {info.registry}")
            print(f"started by stagecheck (stopped by `stagecheck infra down`): {started}")
            return 0
        if args.action == "down":
            stopped = stop_started(args.state_dir)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop (nothing was started by stagecheck)")
            return 0
        lines, healthy = status_lines(args.state_dir, args.registry, args.docker_host)
        print("\n".join(lines))
        return 0 if healthy else 1
    except (InfraError, OSError) as exc:
        print(f"stagecheck infra: error: {exc}", file=sys.stderr)
        return 1
