"""Benchmark: time to verdict of `stagecheck validate` on the sandbox. Prints figures; not a test.

    STAGECHECK_STATE_DIR=/work/main/.stagecheck .venv/bin/python benchmarks/bench_verdict.py [--repeat 3]
        [--cases dry-temp,dry,dry-bg,x1-temp,x1,x1-bg,x3] [--baseline REV]

--baseline REV also runs a `git archive` copy of commit REV (PYTHONPATH first, the same venv),
interleaved with this checkout, and prints this/baseline ratios: before and after in the same run.

Starts its own sandbox (temp state dir, the running Docker Engine and registry of
$STAGECHECK_STATE_DIR) and, for the "configured server" runs, its own `prefect server start` on a free
127.0.0.1 port (temp PREFECT_HOME); stops both at the end. The example config
(examples/stagecheck.sandbox.toml) is copied with absolute paths and a temp report dir, and run as
users run it (`stagecheck validate --config ... --sandbox`), warm (one unmeasured run of each kind
first), interleaved, median of --repeat:

  dry run (syntax + build)        without PREFECT_API_URL (a temporary server per run) and with one
  full release (one service)      with a configured server, and without
  full release (three services)   with a configured server; wall time against one service
  "-bg" cases                     without PREFECT_API_URL, with a background server recorded in the
                                  state dir (`stagecheck prefect-server start`, started once here): this
                                  checkout finds and reuses it; a --baseline older than it starts its
                                  temporary server as before

Per run: wall time, the sum of the stage times in the JSON report (stage work), and the orchestration
overhead (wall - stage work; for several services, wall - the slowest service's stage work). Beside them,
the Prefect floor: a fresh process running a flow of two empty tasks on the same server, interleaved. Also the
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
from localenv.control import start, stop  # noqa: E402

BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "stagecheck.sandbox.toml"


@dataclass
class Outcome:
    wall_s: float
    stage_work_s: float  # the slowest service's sum of stage durations
    stages: dict[str, float]  # stage -> seconds (first service)
    per_service: dict[str, dict[str, float]]  # service -> stage -> seconds (every service)
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


def run_validate(config: Path, state: Path, env: dict[str, str], dry_run: bool, reports: Path,
                 code: Path = REPO) -> Outcome:
    """One `stagecheck validate` run of the code in `code` (this checkout, or a copy of another commit)."""
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    if code != REPO:  # the copy's packages come first on sys.path (the venv's editable install points here)
        env = {**env, "PYTHONPATH": str(code)}
    cmd = [str(BIN / "stagecheck"), "validate", "--config", str(config), "--sandbox", "--state-dir", str(state)]
    if dry_run:
        cmd.append("--dry-run")
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=code)
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
    per_service: dict[str, dict[str, float]] = {}
    for path in found:
        report = json.loads(path.read_text())
        if "stages" not in report:
            continue
        verdicts.append(f"{report['service']}={report['verdict']}")
        if report["verdict"] == "fail":  # a benchmark of failing runs measures the wrong thing: say why
            print(f"    {report['service']} failed at {report.get('decided_by')}: {(report.get('reasons') or [''])[0]}",
                  flush=True)
        durations = {s["name"]: s["duration_s"] for s in report["stages"]}
        works.append(sum(durations.values()))
        stages = stages or durations
        per_service[report["service"]] = durations
    return Outcome(wall, max(works), stages, per_service, verdicts, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


FLOOR_FLOW = """
import asyncio
from prefect import flow, task

@task
async def stage(n: int) -> int:
    return n

@flow(persist_result=False)
async def floor() -> int:
    return sum([await stage(1), await stage(2)])

asyncio.run(floor(return_state=True))
"""


def run_floor(env: dict[str, str]) -> tuple[float, float]:
    """The Prefect floor: a fresh process that imports Prefect and runs a flow of two empty async tasks
    against the same server (what any Prefect-native command pays before doing any work): (wall s, CPU s)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", FLOOR_FLOW], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("the floor flow failed")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


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


def import_cost(code: Path = REPO) -> str:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import cli.commands.validate, flows.validate"],
        capture_output=True, text=True, cwd=code, check=True, env={**os.environ, "PYTHONPATH": str(code)},
    )  # fmt: skip
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    total = max(us for us, _ in rows)
    top = [f"{name.strip()} {us / 1e6:.2f}s" for us, name in rows if name.startswith(" " * 3) and not name.startswith(" " * 4)]
    return f"{total / 1e6:.2f} s for `import cli.commands.validate, flows.validate`; heaviest: " + ", ".join(
        sorted(top, key=lambda t: -float(t.rsplit(" ", 1)[1][:-1]))[:5]
    )


def med(values: list[float]) -> float:
    return statistics.median(values)


CASES: dict[str, tuple[str, int, bool | str, bool]] = {  # key -> (label, services, temporary server? ("bg": background), dry run?)
    "dry-temp": ("dry run, temporary server", 1, True, True),
    "dry": ("dry run, configured server", 1, False, True),
    "x1-temp": ("release x1, temporary server", 1, True, False),
    "x1": ("release x1, configured server", 1, False, False),
    "x3": ("release x3, configured server", 3, False, False),
    "dry-bg": ("dry run, background server", 1, "bg", True),
    "x1-bg": ("release x1, background server", 1, "bg", False),
}


def median_stages(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    """service -> stage -> median seconds over the runs."""
    table: dict[str, dict[str, list[float]]] = {}
    for outcome in outcomes:
        for service, stages in outcome.per_service.items():
            for stage, seconds in stages.items():
                table.setdefault(service, {}).setdefault(stage, []).append(seconds)
    return {svc: {stage: med(values) for stage, values in stages.items()} for svc, stages in table.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--baseline", default="", metavar="REV",
                        help="also run a copy of this git revision (git archive), interleaved: before/after ratios")
    args = parser.parse_args()
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; choose from {list(CASES)}")
    infra = running_infra()
    with tempfile.TemporaryDirectory(prefix="stagecheck-bench-verdict-") as tmp:
        work = Path(tmp)
        codes: dict[str, Path] = {"this": REPO}
        if args.baseline:
            base = work / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline], cwd=REPO, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            codes = {f"baseline {args.baseline}": base, "this": REPO}
        for name, code in codes.items():
            print(f"imports ({name}): {import_cost(code)}")
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
            configs = {n: write_config(work / f"services-{n}.toml", n, work / "reports") for n in (1, 3)}
            if any(CASES[k][2] == "bg" for k in keys):
                from stagecheck.prefect_server import start_background_server

                os.environ["PREFECT_HOME"] = without["PREFECT_HOME"]  # the server's database: the runs' home
                started = time.perf_counter()
                start_background_server(state, 300)
                print(f"background server (`stagecheck prefect-server start`) answered after "
                      f"{time.perf_counter() - started:.1f} s, once")

            def env_of(key: str) -> dict[str, str]:
                return configured if CASES[key][2] is False else without

            runs = [(f"{CASES[k][0]}", configs[CASES[k][1]], env_of(k), CASES[k][3]) for k in keys]
            results: dict[tuple[str, str], list[Outcome]] = {(c, r[0]): [] for r in runs for c in codes}
            floors: list[tuple[float, float]] = []
            load = [os.getloadavg()[0]]
            for _label, config, env, dry in runs:  # warm-up: image layers, caches, the Prefect DBs
                for code in codes.values():
                    run_validate(config, state, env, dry, work / "reports", code)
            run_floor(configured)
            for _ in range(args.repeat):
                floors.append(run_floor(configured))
                for label, config, env, dry in runs:
                    for name, code in codes.items():
                        results[(name, label)].append(run_validate(config, state, env, dry, work / "reports", code))
                load.append(os.getloadavg()[0])
        finally:
            if server is not None:
                stop_prefect_server(server)
            if any(CASES[k][2] == "bg" for k in keys):
                from stagecheck.prefect_server import stop_background_server

                stop_background_server(state)
            stop(state)
    print(f"\nmedian of {args.repeat} (interleaved, warm); cores={len(os.sched_getaffinity(0))}, "
          f"load average (1 min) {min(load):.1f}-{max(load):.1f}, at the end {os.getloadavg()[0]:.1f}")
    print(f"  {'code':<20}{'case':<32}{'wall s':>8}{'stage work s':>14}{'overhead s':>12}{'CPU s':>8}"
          f"{'peak RSS MB':>13}  verdicts")
    for (name, label), outcomes in results.items():
        print(f"  {name:<20}{label:<32}{med([o.wall_s for o in outcomes]):8.2f}"
              f"{med([o.stage_work_s for o in outcomes]):14.2f}"
              f"{med([o.overhead_s for o in outcomes]):12.2f}{med([o.cpu_s for o in outcomes]):8.2f}"
              f"{max(o.max_rss_mb for o in outcomes):13.0f}  {' '.join(sorted(set(outcomes[-1].verdicts)))}")

    print(f"  {'prefect floor':<20}{'2 empty tasks, configured server':<32}{med([w for w, _ in floors]):8.2f}"
          f"{0:14.2f}{med([w for w, _ in floors]):12.2f}{med([c for _, c in floors]):8.2f}")

    def wall(name: str, key: str) -> float:
        return med([o.wall_s for o in results[(name, CASES[key][0])]])

    for name in codes:
        for key in ("dry", "x1", "x3"):
            if (name, CASES[key][0]) in results:
                for svc, stages in median_stages(results[(name, CASES[key][0])]).items():
                    print(f"  stages ({name}, {CASES[key][0]}, {svc}, median): "
                          + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
        for kind, temp, conf in (("dry run", "dry-temp", "dry"), ("release x1", "x1-temp", "x1"),
                                 ("dry run", "dry-bg", "dry"), ("release x1", "x1-bg", "x1")):
            if temp in keys and conf in keys:
                print(f"  {CASES[temp][0]} minus configured ({name}, {kind}): "
                      f"{wall(name, temp) - wall(name, conf):.2f} s of wall time")
        if "x1" in keys and "x3" in keys:
            print(f"  three services in one run ({name}): {wall(name, 'x3') / wall(name, 'x1'):.2f}x the wall "
                  "time of one (target <= 1.5x)")
    if len(codes) == 2:
        base_name = next(iter(codes))
        for key in keys:
            print(f"  {CASES[key][0]}: this / baseline wall time {wall('this', key) / wall(base_name, key):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
