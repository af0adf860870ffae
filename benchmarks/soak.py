"""Soak: N consecutive validations of the sample service against a sandbox, with real deploys.
Prints figures; not a test.

    STAGECHECK_STATE_DIR=.stagecheck .venv/bin/python benchmarks/soak.py [--runs 50] [--every 10]

Starts its own sandbox (free ports, a temporary state dir, the Docker Engine and registry of
STAGECHECK_STATE_DIR) and one temporary Prefect server (stagecheck.prefect_server), then runs
`stagecheck validate --sandbox` --runs times in a row on a temporary git checkout of the sample
service: the same commit each time, so every run deploys a new revision, shifts traffic 50 -> 100 %
over the previous one, probes and reads the logs (a canary release). Before, every --every runs and
after, it prints: the sandbox's containers (running / all), processes (this script's descendants;
zombies apart), open file descriptors and RSS of the sandbox server, the Prefect server and this
script, the tags of the soak's registry repository, the service's revisions and the JSON reports.
Ctrl-C stops early and still prints the last figures. Everything it started is stopped and its
registry repository removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from localenv.cleanup import remove_local_repository, remove_repository  # noqa: E402
from localenv.control import SandboxInfo, start, stop  # noqa: E402
from localenv.infra import DEFAULT_REGISTRY, ensure_up  # noqa: E402
from sandbox.runtime import LABEL_SANDBOX  # noqa: E402
from sandbox.sample_image import SAMPLE_SERVICE_DIR  # noqa: E402
from stagecheck.prefect_server import TemporaryServer, start_temporary_server  # noqa: E402

CONFIG = """repo_root = "."
report_dir = "reports"
deploy_timeout_s = 120
[probes]
deadline_s = 60
consecutive_successes = 3
[traffic]
steps = [50, 100]
[logs]
settle_s = 15
[[services]]
name = "{name}"
image_name = "{name}"
source_dir = "svc"
memory = "256Mi"
max_instances = 2
"""


@dataclass
class Snapshot:
    containers_running: int
    containers_all: int
    processes: int
    zombies: int
    fds: dict[str, int]
    rss_mib: dict[str, float]
    registry_tags: int
    revisions: int
    reports: int

    def line(self, label: str) -> str:
        fds = " ".join(f"{k}={v}" for k, v in self.fds.items())
        rss = " ".join(f"{k}={v:.0f}" for k, v in self.rss_mib.items())
        return (f"{label:>10}: containers {self.containers_running} running / {self.containers_all} all | "
                f"processes {self.processes} (+{self.zombies} zombie) | fds {fds} | RSS MiB {rss} | "
                f"registry tags {self.registry_tags} | revisions {self.revisions} | reports {self.reports}")


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _descendants(root: int) -> tuple[int, int]:
    """(live, zombie) descendants of `root`."""
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        states[int(entry.name)] = fields[0]
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    live = zombie = 0
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if states.get(pid) == "Z":
            zombie += 1
        else:
            live += 1
        todo += children.get(pid, [])
    return live, zombie


def snapshot(sandbox: SandboxInfo, server: TemporaryServer, docker_client: docker.DockerClient, name: str,
             reports: Path) -> Snapshot:
    containers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_SANDBOX}={sandbox.instance_id}"})
    pids = {"sandbox": sandbox.pid, "prefect": server.process.pid, "soak": os.getpid()}
    fds, rss = {}, {}
    for label, pid in pids.items():
        try:
            fds[label] = len(os.listdir(f"/proc/{pid}/fd"))
            rss[label] = int(_status(pid)["VmRSS"].split()[0]) / 1024
        except OSError:
            fds[label], rss[label] = -1, -1.0
    live, zombie = _descendants(os.getpid())
    tags = httpx.get(f"http://{sandbox.registry}/v2/{name}/tags/list", timeout=10, trust_env=False)
    revisions = httpx.get(f"{sandbox.run_api}/v2/{sandbox.parent}/services/{name}/revisions", timeout=10,
                          trust_env=False)
    return Snapshot(
        containers_running=sum(1 for c in containers if c.status == "running"), containers_all=len(containers),
        processes=live, zombies=zombie, fds=fds, rss_mib=rss,
        registry_tags=len(tags.json().get("tags") or []) if tags.status_code == 200 else 0,
        revisions=len(revisions.json().get("revisions", [])) if revisions.status_code == 200 else 0,
        reports=len(list(reports.glob("*.json"))) if reports.is_dir() else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description="N consecutive validations against a sandbox; prints figures")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--every", type=int, default=10, help="print figures every N runs")
    args = parser.parse_args()
    if args.runs < 1 or args.every < 1:
        print("--runs and --every: 1 or more", file=sys.stderr)
        return 2
    state_dir = Path(os.environ.get("STAGECHECK_STATE_DIR") or REPO_ROOT / ".stagecheck")
    infra = ensure_up(state_dir, registry_addr=os.environ.get("STAGECHECK_REGISTRY") or DEFAULT_REGISTRY)
    name = f"soak-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="stagecheck-soak-"))
    sandbox_state = work / "sandbox"
    repo = work / "repo"
    shutil.copytree(SAMPLE_SERVICE_DIR, repo / "svc", ignore=shutil.ignore_patterns("README.md", "bin"))
    (repo / "stagecheck.toml").write_text(CONFIG.format(name=name))
    (repo / ".gitignore").write_text("reports/\n")
    git = ["git", "-C", str(repo), "-c", "user.email=soak@example.com", "-c", "user.name=soak"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "soak"], check=True)

    sandbox = start(sandbox_state, port=0, lb_port=0, docker_host=infra.docker_host, registry=infra.registry)
    server = start_temporary_server(120)
    docker_client = docker.DockerClient(base_url=infra.docker_host, timeout=60)
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    durations: list[float] = []
    failures: list[str] = []
    print(f"soak: {args.runs} validations of {name} (sandbox {sandbox.run_api}, Prefect {server.api_url})", flush=True)
    print(snapshot(sandbox, server, docker_client, name, repo / "reports").line("before"), flush=True)
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "cli.main", "validate", "--config", str(repo / "stagecheck.toml"),
                 "--sandbox", "--state-dir", str(sandbox_state)],
                cwd=repo, env=env, capture_output=True, text=True, timeout=900)
            durations.append(time.monotonic() - started)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
                failures.append(f"run {run}: exit {proc.returncode}: {' | '.join(tail)}")
            print(f"  run {run:>3}: exit {proc.returncode} in {durations[-1]:.1f} s", flush=True)
            if run % args.every == 0 and run != args.runs:
                print(snapshot(sandbox, server, docker_client, name, repo / "reports").line(f"after {run}"), flush=True)
    except KeyboardInterrupt:
        print("  interrupted", flush=True)
    finally:
        print(snapshot(sandbox, server, docker_client, name, repo / "reports").line(f"after {len(durations)}"),
              flush=True)
        if durations:
            ordered = sorted(durations)
            print(f"runs: {len(durations)}, failed: {len(failures)}; wall time per run: median "
                  f"{ordered[len(ordered) // 2]:.1f} s, max {ordered[-1]:.1f} s, first {durations[0]:.1f} s, "
                  f"last {durations[-1]:.1f} s", flush=True)
        for failure in failures:
            print(f"  {failure}", flush=True)
        stop(sandbox_state)
        server.stop()
        remove_repository(state_dir, name)
        remove_local_repository(infra.docker_host, f"{infra.registry}/{name}")
        docker_client.close()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
