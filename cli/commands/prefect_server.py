"""`stagecheck prefect-server start|stop|status`: a background Prefect server that later
`stagecheck validate` runs without `PREFECT_API_URL` find in the state dir and use, instead of starting
a temporary server each (see stagecheck/prefect_server.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from stagecheck.prefect_server import (
    IDLE_S,
    TemporaryServerError,
    find_background_server,
    read_background_server,
    start_background_server,
    stop_background_server,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stagecheck prefect-server",
                                     description="A background Prefect server reused by `stagecheck validate`.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"))
    parser.add_argument("--idle-minutes", type=float, default=IDLE_S / 60,
                        help="start: stop by itself after this many minutes without a request (default: %(default)g)")
    parser.add_argument("--timeout", type=float, default=120.0, help="start: seconds to wait for /api/health")
    args = parser.parse_args(argv)
    if args.idle_minutes <= 0:
        parser.error("--idle-minutes: must be > 0")
    return args


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.action == "start":
        try:
            server, started = start_background_server(args.state_dir, args.timeout, args.idle_minutes * 60)
        except TemporaryServerError as exc:
            print(f"stagecheck prefect-server: {exc}", file=sys.stderr)
            return 1
        print(f"{'started' if started else 'already running'}: {server.api_url} (pid {server.pid}); "
              f"stops after {server.idle_s / 60:g} min unused or on `stagecheck prefect-server stop`")
        print(f"Prefect UI: {server.ui_url}")
        return 0
    if args.action == "stop":
        stopped = stop_background_server(args.state_dir)
        print(f"stopped pid {stopped.pid}" if stopped else "no background Prefect server recorded")
        return 0
    recorded = read_background_server(args.state_dir)
    if recorded is None:
        print("no background Prefect server recorded")
        return 1
    healthy = find_background_server(args.state_dir) is not None
    print(f"{recorded.api_url} (pid {recorded.pid}, up {(time.time() - recorded.started_at) / 60:.1f} min, "
          f"{'healthy' if healthy else 'not answering'})")
    print(f"Prefect UI: {recorded.ui_url}")
    return 0 if healthy else 1
