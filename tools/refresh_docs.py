"""Refresh the committed sample report and its picture from a real demo run.

    .venv/bin/python -m tools.refresh_docs [--state-dir .stagecheck] [--runs 2]

Needs: the venv (`make setup`), a Docker Engine and the local registry (`make up`, or `DOCKER_HOST` naming a
running engine), and headless Chromium for the picture (Debian: `apt-get install -y chromium`). It starts the
sandbox when none runs in the state dir (and stops it again), validates the example service with
`examples/stagecheck.sandbox.toml` on a background Prefect server that serves the UI, then writes

    docs/sample-report.md          the report artifact's markdown, as the Prefect UI shows it
    docs/sample-report.json        the JSON report of the same run
    docs/images/report-artifact.png  a screenshot of that artifact in the Prefect UI

Paths of this machine's clone are written as `.` in the committed files.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CONFIG = "examples/stagecheck.sandbox.toml"
SERVICE = "sample"
DOCS = REPO / "docs"
PICTURE = DOCS / "images" / "report-artifact.png"
UI_LINK = re.compile(r"Prefect UI: (http://\S+/flow-run/([0-9a-f-]{36}))")


def stagecheck(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"`stagecheck {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("headless Chromium is needed for the picture: apt-get install -y chromium")


def local(text: str) -> str:
    """This machine's clone path written as `.` (the committed files name no path outside the repository)."""
    return text.replace(str(REPO) + "/", "./").replace(str(REPO), ".")


def report_artifact(api_url: str, flow_run_id: str) -> dict[str, object]:
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [f"stagecheck-report-{SERVICE}"]}}}
    found = httpx.post(f"{api_url}/artifacts/filter", json=body, timeout=30, trust_env=False).json()
    if not found:
        raise SystemExit(f"no artifact stagecheck-report-{SERVICE} on flow run {flow_run_id}")
    artifact: dict[str, object] = found[0]
    return artifact


def screenshot(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1600,1900", "--virtual-time-budget=20000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=180)
    if not path.exists() or path.stat().st_size < 10_000:
        raise SystemExit(f"the screenshot of {url} is missing or blank ({path})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.refresh_docs", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=str(REPO / ".stagecheck"))
    parser.add_argument("--runs", type=int, default=2,
                        help="validations in a row (the second is a canary over the first's revision)")
    args = parser.parse_args(argv)
    chromium()  # say what is missing before anything starts
    from stagecheck.prefect_server import find_background_server, stop_background_server

    started_sandbox = stagecheck("sandbox", "status", "--state-dir", args.state_dir, check=False).returncode != 0
    had_server = find_background_server(args.state_dir) is not None
    if started_sandbox:
        stagecheck("sandbox", "up", "--state-dir", args.state_dir)
    try:
        for _ in range(max(1, args.runs)):
            run = stagecheck("validate", "--config", CONFIG, "--sandbox", "--state-dir", args.state_dir,
                             "--keep-server", check=False)
            print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr)
        link = UI_LINK.search(run.stdout)
        server = find_background_server(args.state_dir)
        if link is None or server is None:
            raise SystemExit(f"the run printed no Prefect UI link:\n{run.stdout}{run.stderr}")
        artifact = report_artifact(server.api_url, link.group(2))
        (DOCS / "sample-report.md").write_text(
            f"<!-- a real report of `make demo` (the sandbox), written by `python -m tools.refresh_docs` -->\n\n"
            f"{local(str(artifact['data']))}")
        latest = REPO / "reports" / f"{SERVICE}-latest.json"
        (DOCS / "sample-report.json").write_text(local(json.dumps(json.loads(latest.read_text()), indent=2)) + "\n")
        screenshot(f"{server.ui_url}/artifacts/artifact/{artifact['id']}", PICTURE)
        print(f"wrote docs/sample-report.md, docs/sample-report.json, {PICTURE.relative_to(REPO)}")
    finally:
        if started_sandbox:
            stagecheck("sandbox", "down", "--state-dir", args.state_dir, check=False)
        if not had_server:
            stop_background_server(args.state_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
