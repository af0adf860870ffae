"""`prefect.yaml` from `deployments/targets.toml`: the same deployments, for `prefect deploy --all` into
any Prefect server or Cloud workspace and a work pool of the user's choosing.

    python -m deployments.prefect_yaml           write prefect.yaml at the repository root
    python -m deployments.prefect_yaml --check   exit 1 when prefect.yaml differs from the targets

What `prefect deploy` registers: one deployment per target (schedule, merge trigger passing only
`git_sha` and `git_ref`, tags, default parameters) and a pull step. The build steps read the deploying
clone's `origin` URL and branch; the pull step then `git_clone`s that repository and branch on the
worker for every flow run (a shallow clone in the run's working directory), so the worker needs no
copy of the code, only stagecheck's dependencies. The flow then checks out the run's commit itself
(`stagecheck.checkout`). Pure except `main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from deployments.automations import failed_verdicts
from deployments.definitions import (
    DEFAULT_TARGETS_FILE,
    ENTRYPOINT,
    RECOVERY_DEPLOYMENT,
    RECOVERY_DESCRIPTION,
    RECOVERY_ENTRYPOINT,
    RECOVERY_TAGS,
    REPO_ROOT,
    DefinitionError,
    Target,
    load_targets,
    recovery_trigger,
)
from deployments.events import MERGE_EVENT

PREFECT_YAML = REPO_ROOT / "prefect.yaml"

HEADER = """\
# Generated from deployments/targets.toml by `python -m deployments.prefect_yaml`: edit the targets,
# then regenerate (a test checks that this file is in step with them).
#
# Register the deployments into your own Prefect server or Cloud workspace and work pool, from a
# clone whose `origin` your workers can clone:
#     STAGECHECK_WORK_POOL=YOUR_POOL prefect --no-prompt deploy --all
# (`--pool` is ignored by `prefect deploy` when it registers several deployments: the pool comes from
# the environment through the `{{ $STAGECHECK_WORK_POOL }}` placeholders below.)
# Each flow run then clones that origin (branch: the one deployed from) on the worker and checks
# out the commit it validates (a merge event's SHA) for that run alone.
# `automations:` (failed verdicts -> the notification block) is registered by `stagecheck serve
# register`, which resolves `block_document_id: <block-type>/<block-name>` to the block's id.
"""

BUILD = [
    {"prefect.deployments.steps.run_shell_script": {
        "id": "git-origin", "script": "git remote get-url origin", "stream_output": False}},
    {"prefect.deployments.steps.run_shell_script": {
        "id": "git-branch", "script": "git rev-parse --abbrev-ref HEAD", "stream_output": False}},
]
# `prefect deploy` fills `{{ $NAME }}` from the environment (it ignores `--pool` with several deployments)
WORK_POOL = {"name": "{{ $STAGECHECK_WORK_POOL }}"}
PULL = [
    {"prefect.deployments.steps.git_clone": {
        "id": "clone", "repository": "{{ git-origin.stdout }}", "branch": "{{ git-branch.stdout }}"}},
    {"prefect.deployments.steps.set_working_directory": {"directory": "{{ clone.directory }}"}},
]


def deployment(target: Target) -> dict[str, Any]:
    """Pure: one `deployments:` entry of prefect.yaml."""
    out: dict[str, Any] = {
        "name": target.name,
        "entrypoint": ENTRYPOINT,
        "description": target.description or f"Validate a release on Cloud Run {target.environment.value}.",
        "tags": target.all_tags(),
        "work_pool": dict(WORK_POOL),
        "parameters": target.parameters(),
        "schedules": ([{"cron": target.cron, "timezone": target.timezone, "active": target.schedule_active}]
                      if target.cron else []),
    }
    if target.triggered_by_merges:
        out["triggers"] = [{
            "type": "event",
            "name": f"{target.name}: validate merged commits",
            "enabled": True,
            "expect": [MERGE_EVENT],
            "match": target.merge_match(),
            "parameters": target.merge_parameters(),
        }]
    return out


def recovery() -> dict[str, Any]:
    """Pure: the recovery deployment (flows/recover.py) with its Automation: a `prefect.flow-run.Crashed`
    event of a validation run starts it for that run (the same trigger `stagecheck serve` registers)."""
    trigger = recovery_trigger().model_dump(mode="json")
    return {
        "name": RECOVERY_DEPLOYMENT,
        "entrypoint": RECOVERY_ENTRYPOINT,
        "description": RECOVERY_DESCRIPTION,
        "tags": list(RECOVERY_TAGS),
        "work_pool": dict(WORK_POOL),
        "parameters": {},
        "schedules": [],
        "triggers": [{
            "type": "event",
            "name": trigger["name"],
            "enabled": True,
            "expect": sorted(trigger["expect"]),
            "match": trigger["match"],
            "match_related": trigger["match_related"],
            "parameters": trigger["parameters"],
        }],
    }


def render(targets: tuple[Target, ...]) -> str:
    """Pure: the text of prefect.yaml for these targets, and the recovery deployment."""
    document = {"name": "stagecheck", "build": BUILD, "push": None, "pull": PULL,
                "deployments": [deployment(t) for t in targets] + [recovery()],
                # `prefect deploy` ignores it; `stagecheck serve` registers it (deployments/automations.py)
                "automations": [failed_verdicts()]}
    return HEADER + "\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the notification body template) as literal blocks, as a person writes them."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.prefect_yaml", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=Path, default=DEFAULT_TARGETS_FILE)
    parser.add_argument("--output", type=Path, default=PREFECT_YAML)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of step")
    args = parser.parse_args(argv)
    try:
        text = render(load_targets(args.targets))
    except DefinitionError as exc:
        print(f"prefect_yaml: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of step with {args.targets}: run `python -m deployments.prefect_yaml`",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
