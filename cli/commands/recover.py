"""`stagecheck recover --service NAME`: restore the traffic split a killed release left on a service.

Runs the recovery flow (flows/recover.py): a slot held by a run that has ended is released, the recorded
split restored (verified against what serves) and the rollout record removed. Prints what it did per service.
Exit 0 when every service is recovered or had nothing to recover, 1 when one could not be, 2 on bad usage
or configuration."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line naming the flag, not the whole usage
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="stagecheck recover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", action="append", required=True, metavar="NAME",
                        help="the Cloud Run service to recover (repeatable)")
    parser.add_argument("--config", default="stagecheck.toml", help="path of the stagecheck.toml")
    parser.add_argument("--sandbox", action="store_true", help="target the local sandbox")
    parser.add_argument("--state-dir", default=os.environ.get("STAGECHECK_STATE_DIR", ".stagecheck"),
                        help="where the sandbox writes sandbox.json")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    from cli.main import offline_defaults

    offline_defaults(os.environ)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from pydantic import ValidationError

    from flows.params import ValidationRequest
    from stagecheck.settings import ConfigError

    try:
        request = ValidationRequest(config=args.config, services=args.service, sandbox=args.sandbox,
                                    state_dir=args.state_dir)
        settings = request.load()
        for name in request.services:
            try:
                settings.service(name)
            except ConfigError as exc:
                raise ConfigError(f"--service: {exc}") from None
    except (ConfigError, ValidationError) as exc:
        print(f"stagecheck recover: {exc}", file=sys.stderr)
        return 2

    from cli.commands.validate import _drain_prefect_workers, temporary_api
    from stagecheck.prefect_server import TemporaryServerError

    try:
        server = temporary_api(args.state_dir or ".stagecheck")
    except TemporaryServerError as exc:
        print(f"stagecheck recover: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(request)
    finally:
        if server is not None:
            _drain_prefect_workers()
            server.stop()


def _run(request: Any) -> int:
    import asyncio

    from flows.recover import recover
    from stagecheck.concurrency import ensure_service_limits
    from stagecheck.redact import redact

    try:
        asyncio.run(ensure_service_limits(request.services, repair=False))
    except Exception as exc:
        print(f"stagecheck recover: cannot set up the per-service concurrency limits: {exc}", file=sys.stderr)
        return 1
    state: Any = asyncio.run(recover(services=request.services, config=request.config,  # type: ignore[arg-type]
                                     sandbox=request.sandbox, state_dir=request.state_dir, return_state=True))
    rows = state.result(raise_on_failure=False)
    if not isinstance(rows, list):  # failed before any service (bad config in the run): the message says why
        rows = []
    for row in rows:
        print(f"{row['service']}: {row['status'].upper()} {row['summary']}")
    if not rows:
        print(f"stagecheck recover: {redact(str(state.message))}", file=sys.stderr)
    return 0 if state.is_completed() else 1
