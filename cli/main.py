"""The `stagecheck` command line. Each sub-command lives in the module that owns it; this file
only dispatches (imports are lazy so `stagecheck --help` stays fast)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping

# sub-command -> (module, help). Each module exposes `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("cli.commands.validate", "run the staging validation flow"),
    "check-syntax": ("cli.commands.check_syntax", "syntax-check a repository (pre-commit / CI)"),
    "sandbox": ("localenv.control", "start/stop/inspect the local Cloud Run + Cloud Logging sandbox"),
    "infra": ("localenv.infra", "start/stop the local Docker Engine and registry the sandbox needs"),
    "notify-merge": ("cli.commands.notify_merge", "emit a merge event that triggers a validation"),
    "recover": ("cli.commands.recover", "restore the traffic split a killed release left on a service"),
    "serve": ("deployments.serve", "start a local Prefect server, register deployments, start a worker"),
    "prefect-server": ("cli.commands.prefect_server", "start/stop a background Prefect server validate reuses"),
}

USAGE = "usage: stagecheck [--version] COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(
    f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()
) + """

`stagecheck COMMAND --help` describes a command, its environment variables and exit status.
environment: PREFECT_API_URL / PREFECT_PROFILE (the Prefect API; default: the active profile's),
  STAGECHECK_* (config keys and defaults, see `stagecheck validate --help`), DOCKER_HOST
exit status: 0 success, 1 a failed verdict or an unreachable service, 2 bad usage or input"""


def version() -> str:
    """The installed distribution's version (the source tree's pyproject version when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("stagecheck")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
        found = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
        return found.group(1) if found else "unknown"


# A temporary Prefect server on an offline machine would log "Failed to send telemetry" at ERROR on
# every run; stagecheck sends nothing anywhere. A value the user set explicitly is kept.
OFFLINE_DEFAULTS = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def offline_defaults(environ: MutableMapping[str, str]) -> None:
    """Set the no-telemetry defaults in `environ` (before Prefect is imported), never overriding."""
    for key, value in OFFLINE_DEFAULTS.items():
        environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    offline_defaults(os.environ)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if args else 2
    if args[0] in {"--version", "-V"}:
        print(f"stagecheck {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"stagecheck: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
