"""`stagecheck sandbox up|down|status`, and the same as a python API (`start`, `stop`, `read_info`).

`up` starts `python -m sandbox serve` detached (own session, log in DIR/sandbox.log, pid in
DIR/sandbox.pid), waits until it is healthy and writes DIR/sandbox.json. `down` stops it and removes
every container labelled with its instance id, even when the server had died."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from localenv import processes
from sandbox.runtime import docker_client, remove_labelled
from sandbox.statefiles import INFO_FILE, KEY_FILES, LOG_FILE, PID_FILE, SERVER_FILE

DEFAULT_STATE_DIR = Path(".stagecheck")
DEFAULT_PROJECT = "stagecheck-sandbox"
DEFAULT_REGION = "europe-west1"
DEFAULT_REGISTRY = "127.0.0.1:5000"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
EXIT_NOT_RUNNING = 3


class SandboxError(Exception):
    """A one-line, user-facing failure of up/down."""


class SandboxInfo(BaseModel):
    run_api: str
    logging_api: str
    admin_url: str
    lb_url: str
    project: str
    region: str
    registry: str
    docker_host: str
    pid: int
    instance_id: str
    state_dir: str
    credentials_file: str  # service-account key (roles/run.admin: deploys and invokes); token_uri = the sandbox
    outsider_credentials_file: str  # a second service account with no role (authenticates, may not invoke)
    external_account_file: str = ""  # Workload Identity Federation credentials (roles/run.admin; no ID tokens)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"


# ------------------------------------------------------------------ helpers


def resolve_docker_host(state_dir: Path, explicit: str | None = None) -> str:
    """--docker-host, else $DOCKER_HOST, else DIR/infra.json's docker_host, else the system socket."""
    if explicit:
        return explicit
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    with contextlib.suppress(OSError, ValueError, AttributeError):
        value = json.loads((state_dir / "infra.json").read_text()).get("docker_host")
        if value:
            return str(value)
    return DEFAULT_DOCKER_HOST


def _docker_answers(docker_host: str) -> bool:
    try:
        client = docker_client(docker_host)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _alive(pid: int) -> bool:
    """True if `pid` runs and is a sandbox server (guards against a recycled pid)."""
    argv = processes.cmdline(pid)
    return b"sandbox" in argv and b"serve" in argv


def _healthy(admin_url: str, timeout: float = 2.0) -> bool:
    try:
        resp = httpx.get(f"{admin_url}/sandbox/v1/health", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def read_info(state_dir: Path | str = DEFAULT_STATE_DIR) -> SandboxInfo:
    path = Path(state_dir) / INFO_FILE
    try:
        return SandboxInfo.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise SandboxError(f"no sandbox recorded in {path}: run `stagecheck sandbox up`") from None
    except ValueError as exc:
        raise SandboxError(f"unreadable {path}: {exc}") from None


def _raw_info(state: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((state / INFO_FILE).read_text())
        if isinstance(data, dict):
            return data
    return {}


def running_info(state_dir: Path | str = DEFAULT_STATE_DIR) -> SandboxInfo | None:
    """The recorded sandbox if its server is alive and healthy."""
    try:
        info = read_info(state_dir)
    except SandboxError:
        return None
    return info if _alive(info.pid) and _healthy(info.admin_url) else None


def _tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


# ------------------------------------------------------------------ python API


def start(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    port: int = 0,
    lb_port: int = 0,
    project: str = DEFAULT_PROJECT,
    region: str = DEFAULT_REGION,
    registry: str = DEFAULT_REGISTRY,
    docker_host: str | None = None,
    startup_timeout_s: float = 240.0,
    cold_start_hold_s: float = 10.0,
    ready_timeout: float = 30.0,
) -> SandboxInfo:
    """Start a sandbox for `state_dir` (or return the one already running there)."""
    state = Path(state_dir).resolve()
    existing = running_info(state)
    if existing is not None:
        return existing
    stale = _raw_info(state)
    if stale.get("pid") and "credentials_file" not in stale and _alive(int(stale["pid"])):
        raise SandboxError(f"a sandbox without service-account keys (an older version) runs for {state} "
                           f"(pid {stale['pid']}): run `stagecheck sandbox down` first")
    state.mkdir(parents=True, exist_ok=True)
    host = resolve_docker_host(state, docker_host)
    if not _docker_answers(host):
        raise SandboxError(f"no Docker Engine at {host}: run `make up`")
    instance_id = uuid.uuid4().hex[:12]
    with contextlib.suppress(FileNotFoundError):
        (state / SERVER_FILE).unlink()
    cmd = [
        sys.executable, "-m", "sandbox", "serve", "--state-dir", str(state), "--port", str(port),
        "--lb-port", str(lb_port), "--project", project, "--region", region, "--registry", registry,
        "--docker-host", host, "--instance-id", instance_id, "--startup-timeout", str(startup_timeout_s),
        "--cold-start-hold", str(cold_start_hold_s),
    ]
    log_path = state / LOG_FILE
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    (state / PID_FILE).write_text(f"{proc.pid}\n")
    server = _wait_ready(proc, state, log_path, ready_timeout)
    info = SandboxInfo(
        run_api=server["run_api"], logging_api=server["run_api"], admin_url=server["run_api"],
        lb_url=server["lb_url"], project=project, region=region, registry=registry, docker_host=host,
        pid=proc.pid, instance_id=instance_id, state_dir=str(state), credentials_file=server["credentials_file"],
        outsider_credentials_file=server["outsider_credentials_file"],
        external_account_file=server.get("external_account_file", ""),
    )
    tmp = state / (INFO_FILE + ".tmp")
    tmp.write_text(info.model_dump_json(indent=2) + "\n")
    tmp.replace(state / INFO_FILE)
    return info


def _wait_ready(proc: subprocess.Popen[bytes], state: Path, log_path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"the sandbox server exited with code {proc.returncode}: {_tail(log_path)}")
        with contextlib.suppress(OSError, ValueError):
            server = json.loads((state / SERVER_FILE).read_text())
            if server.get("pid") == proc.pid and "credentials_file" in server and _healthy(server["run_api"], timeout=1.0):
                return dict(server)
        time.sleep(0.05)
    _terminate(proc.pid)
    raise SandboxError(f"the sandbox server did not become healthy within {timeout:g} s: {_tail(log_path)}")


def _terminate(pid: int, grace_s: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL — only if `pid` is a sandbox server."""
    record = processes.record_of("sandbox", pid) if _alive(pid) else None
    if record is not None:
        processes.signal_until_gone(record, wait_s=grace_s)


def stop(state_dir: Path | str = DEFAULT_STATE_DIR) -> None:
    """Stop the sandbox of `state_dir` and remove its containers (also when the server had died)."""
    state = Path(state_dir).resolve()
    try:
        info: SandboxInfo | None = read_info(state)
    except SandboxError:
        info = None
    pid = info.pid if info else None
    if pid is None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((state / PID_FILE).read_text().strip())
    if pid is not None:
        _terminate(pid)
    raw = _raw_info(state)  # also a sandbox.json of an older version (no key files recorded)
    docker_host, instance_id = raw.get("docker_host"), raw.get("instance_id")
    if info is None and pid is None and raw.get("pid"):
        pid = int(raw["pid"])
        _terminate(pid)
    if docker_host and instance_id and _docker_answers(str(docker_host)):
        remove_labelled(str(docker_host), str(instance_id))
    for name in (INFO_FILE, PID_FILE, SERVER_FILE, *KEY_FILES):
        with contextlib.suppress(FileNotFoundError):
            (state / name).unlink()


def status(state_dir: Path | str = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    info = running_info(state_dir)
    if info is None:
        return None
    resp = httpx.get(f"{info.admin_url}/sandbox/v1/status", timeout=10, trust_env=False)
    resp.raise_for_status()
    return dict(resp.json())


# ------------------------------------------------------------------ CLI


def _print_status(info: SandboxInfo, data: dict[str, Any]) -> None:
    print(f"sandbox {info.instance_id}: running (pid {info.pid})")
    print(f"  run/logging API {info.run_api}   load balancer {info.lb_url}   project {info.project} / {info.region}")
    print(f"  docker {info.docker_host}   registry {info.registry}")
    print(f"  service-account key {info.credentials_file} (roles/run.admin); no-role key {info.outsider_credentials_file}")
    services = data.get("services", {})
    print(f"  services: {len(services)}")
    for name, svc in services.items():
        state = svc.get("terminal", {}).get("state", "?")
        print(f"    {name}  {svc.get('uri')}  ready={svc.get('latest_ready') or '-'}  {state}")
        for t in svc.get("traffic", []):
            print(f"      {t.get('percent', 0):>3}% {t.get('revision', '-')}" + (f"  tag {t['tag']}" if t.get("tag") else ""))
        for rev, phase in svc.get("revisions", {}).items():
            print(f"      revision {rev}: {phase}")
    containers = data.get("containers", [])
    print(f"  containers: {len(containers)}")
    for c in containers:
        print(f"    {c.get('name')}  {c.get('status')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stagecheck sandbox", description="local Cloud Run + Cloud Logging sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the sandbox in the background")
    down = sub.add_parser("down", help="stop the sandbox and remove its containers")
    st = sub.add_parser("status", help="show what runs (exit 3 when not running)")
    for p in (up, down, st):
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    up.add_argument("--port", type=int, default=8780)
    up.add_argument("--lb-port", type=int, default=8781)
    up.add_argument("--project", default=DEFAULT_PROJECT)
    up.add_argument("--region", default=DEFAULT_REGION)
    up.add_argument("--registry", default=DEFAULT_REGISTRY)
    up.add_argument("--docker-host", default=None)
    up.add_argument("--startup-timeout", type=float, default=240.0)
    up.add_argument("--ready-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            already = running_info(args.state_dir)
            if already is not None:
                print(f"sandbox already running for {args.state_dir} (pid {already.pid}): {already.run_api}")
                return 0
            info = start(args.state_dir, port=args.port, lb_port=args.lb_port, project=args.project,
                         region=args.region, registry=args.registry, docker_host=args.docker_host,
                         startup_timeout_s=args.startup_timeout, ready_timeout=args.ready_timeout)
            print(f"sandbox up (pid {info.pid}): API {info.run_api}, load balancer {info.lb_url}; "
                  f"details in {Path(args.state_dir) / INFO_FILE}")
            return 0
        if args.command == "down":
            stop(args.state_dir)
            print("sandbox down")
            return 0
        info_or_none = running_info(args.state_dir)
        if info_or_none is None:
            print(f"sandbox not running for {args.state_dir}")
            return EXIT_NOT_RUNNING
        data = status(args.state_dir) or {}
        _print_status(info_or_none, data)
        return 0
    except SandboxError as exc:
        print(f"stagecheck sandbox: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"stagecheck sandbox: the sandbox did not answer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
