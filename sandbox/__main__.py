"""`python -m sandbox serve --state-dir DIR ...`: run the sandbox server in the foreground."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from sandbox.server import ServeOptions, serve


def parse(argv: list[str]) -> ServeOptions:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the sandbox server in the foreground")
    p.add_argument("--state-dir", type=Path, default=Path(".stagecheck"))
    p.add_argument("--port", type=int, default=8780)
    p.add_argument("--lb-port", type=int, default=8781)
    p.add_argument("--project", default="stagecheck-sandbox")
    p.add_argument("--region", default="europe-west1")
    p.add_argument("--registry", default="127.0.0.1:5000")
    p.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    p.add_argument("--instance-id", default=None)
    p.add_argument("--startup-timeout", type=float, default=240.0, help="revision startup deadline (s)")
    p.add_argument("--cold-start-hold", type=float, default=10.0, help="default hold for cold starts (s)")
    args = parser.parse_args(argv)
    return ServeOptions(
        state_dir=args.state_dir, port=args.port, lb_port=args.lb_port, project=args.project, region=args.region,
        registry=args.registry, docker_host=args.docker_host, instance_id=args.instance_id or uuid.uuid4().hex[:12],
        startup_timeout_s=args.startup_timeout, cold_start_hold_s=args.cold_start_hold,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        serve(options)
    except OSError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
