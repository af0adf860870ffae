"""Benchmark: time to verdict of `stagecheck validate` on the sandbox. Prints figures; not a test.

    STAGECHECK_STATE_DIR=/work/main/.stagecheck .venv/bin/python benchmarks/bench_verdict.py [--repeat 3]

Starts its own sandbox (temp state dir, the running Docker Engine and registry of
$STAGECHECK_STATE_DIR) and, for the "configured server" runs, its own `prefect server start` on a free
127.0.0.1 port (temp PREFECT_HOME); stops both at the end. The example config
(examples/stagecheck.sandbox.toml) is copied with absolute paths and a temp report dir, and run as
users run it (`stagecheck validate --config ... --sandbox`), warm (one unmeasured run of each kind
first), interleaved, median of --repeat:

  dry run (syntax + build)        without PREFECT_API_URL (a temporary server per run) and with one
  full release (one service)      with a configured server, and without
  full release (three services)   with a configured server; wall time against one service

Per run: wall time, the sum of the stage times in the JSON report (stage work), and the orchestration
overhead (wall - stage work; for several services, wall - the slowest service's stage work). Also the
import cost of the command (python -X importtime) and the peak RSS of the validate process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._infra import running_infra  # noqa: E402
from sandbox.control import start, stop  # noqa: E402

BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "stagecheck.sandbox.toml"


@dataclass
class Outcome:
    wall_s: float
    stage_work_s: float  # the slowest service's sum of stage durations
    stages: dict[str, float]  # stage -> seconds (first service)
    verdicts: list[str]
    max_rss_mb: float
    cpu_s: float  # user + system CPU of the validate process and the children it waited for

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.stage_work_s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(dest: Path, services: int, reports: Path) -> Path:
    """The example config with absolute paths; `services` copies of its service under new names."""
    text = EXAMPLE.read_text()
    text = re.sub(r'^repo_root = .*$', f'repo_root = "{REPO}"', text, flags=re.M)
    text = re.sub(r'^report_dir = .*$', f'report_dir = "{reports}"', text, flags=re.M)
    text = text.replace('source_dir = "sample-service"', f'source_dir = "{REPO / "examples" / "sample-service"}"')
    head, sep, service = text.partition("[[services]]")
    blocks = []
    for index in range(services):
        suffix = "" if index == 0 else f"-{index + 1}"
        block = service.replace('name = "sample"', f'name = "sample{suffix}"')
        blocks.append(sep + block)
    dest.write_text(head + "".join(blocks))
    return dest


def run_validate(config: Path, state: Path, env: dict[str, str], dry_run: bool, reports: Path) -> Outcome:
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    cmd = [str(BIN / "stagecheck"), "validate", "--config", str(config), "--sandbox", "--state-dir", str(state)]
    if dry_run:
        cmd.append("--dry-run")
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    found = sorted(p for p in reports.rglob("*.json") if not p.name.endswith("-latest.json"))
    if not found:
        raise RuntimeError(f"no report (exit {process.returncode}):\n{output[-3000:]}")
    works: list[float] = []
    verdicts: list[str] = []
    stages: dict[str, float] = {}
    for path in found:
        report = json.loads(path.read_text())
        if "stages" not in report:
            continue
        verdicts.append(f"{report['service']}={report['verdict']}")
        durations = {s["name"]: s["duration_s"] for s in report["stages"]}
        works.append(sum(durations.values()))
        stages = stages or durations
    return Outcome(wall, max(works), stages, verdicts, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def start_prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2, trust_env=False).status_code == 200:
                return process, api, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("prefect server exited")
        time.sleep(0.2)
    raise RuntimeError("prefect server did not answer within 180 s")


def stop_prefect_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the group this script started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def import_cost() -> str:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import stagecheck.commands.validate, flows.validate"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    total = max(us for us, _ in rows)
    top = [f"{name.strip()} {us / 1e6:.2f}s" for us, name in rows if name.startswith(" " * 3) and not name.startswith(" " * 4)]
    return f"{total / 1e6:.2f} s for `import stagecheck.commands.validate, flows.validate`; heaviest: " + ", ".join(
        sorted(top, key=lambda t: -float(t.rsplit(" ", 1)[1][:-1]))[:5]
    )


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    infra = running_infra()
    print(f"imports: {import_cost()}")
    with tempfile.TemporaryDirectory(prefix="stagecheck-bench-verdict-") as tmp:
        work = Path(tmp)
        state = work / "sandbox"
        start(state, docker_host=infra.docker_host, registry=infra.registry)
        server = None
        try:
            server, api, server_start_s = start_prefect_server(work / "prefect-server")
            print(f"`prefect server start` answered /api/health after {server_start_s:.1f} s")
            base_env = {**os.environ, "STAGECHECK_CACHE_DIR": str(work / "syntax-cache")}
            base_env.pop("PREFECT_API_URL", None)
            without = {**base_env, "PREFECT_HOME": str(work / "prefect-ephemeral")}
            configured = {**base_env, "PREFECT_HOME": str(work / "prefect-client"), "PREFECT_API_URL": api}
            one = write_config(work / "one.toml", 1, work / "reports")
            three = write_config(work / "three.toml", 3, work / "reports")
            cases = [
                ("dry run, temporary server", one, without, True),
                ("dry run, configured server", one, configured, True),
                ("release x1, temporary server", one, without, False),
                ("release x1, configured server", one, configured, False),
                ("release x3, configured server", three, configured, False),
            ]
            results: dict[str, list[Outcome]] = {label: [] for label, *_ in cases}
            for _label, config, env, dry in cases:  # warm-up: image layers, caches, the Prefect DBs
                run_validate(config, state, env, dry, work / "reports")
            for _ in range(args.repeat):
                for label, config, env, dry in cases:
                    results[label].append(run_validate(config, state, env, dry, work / "reports"))
        finally:
            if server is not None:
                stop_prefect_server(server)
            stop(state)
    print(f"\nmedian of {args.repeat} (interleaved, warm); cores={len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {'case':<32}{'wall s':>8}{'stage work s':>14}{'overhead s':>12}{'CPU s':>8}{'peak RSS MB':>13}  verdicts")
    for label, outcomes in results.items():
        print(f"  {label:<32}{med([o.wall_s for o in outcomes]):8.2f}{med([o.stage_work_s for o in outcomes]):14.2f}"
              f"{med([o.overhead_s for o in outcomes]):12.2f}{med([o.cpu_s for o in outcomes]):8.2f}"
              f"{max(o.max_rss_mb for o in outcomes):13.0f}  {' '.join(sorted(set(outcomes[-1].verdicts)))}")
    for label in ("dry run, configured server", "release x1, configured server"):
        stages = results[label][-1].stages
        print(f"  stages ({label}, last run): " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
    for kind in ("dry run", "release x1"):
        cost = med([o.wall_s for o in results[f"{kind}, temporary server"]]) - med(
            [o.wall_s for o in results[f"{kind}, configured server"]])
        print(f"  temporary server cost ({kind}): {cost:.2f} s of wall time")
    ratio = med([o.wall_s for o in results["release x3, configured server"]]) / med(
        [o.wall_s for o in results["release x1, configured server"]])
    print(f"  three services in one run: {ratio:.2f}x the wall time of one (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
