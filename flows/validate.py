"""The staging validation flow: source -> image -> revision -> traffic -> verdict, per service.

Where each part of the report comes from:
- `flows/service_walk.py`  one service's walk, in the report's order (checkout, syntax, inspect, build,
  push, deploy, probe-tagged, then the rollout, smoke, logs);
- `flows/rollout_steps.py` the rollout bookkeeping: recovery of a killed release, the rollout record,
  traffic steps with probes, canary holds and the bake;
- `flows/endings.py`       the endings: release, rollback, the failure explained, the service's report;
- `flows/service_state.py` what a walk holds; `flows/gates.py` how a gate's answer is read;
- `flows/run_labels.py`    the run's name and tags.

The flow only orchestrates: each stage is a task in `tasks/`, the decisions live in `stagecheck/`
(pure functions), and the outside world is reached through `stagecheck/clients/`. It stops at the
first failed gate, rolls traffic back when it had moved, always reports, and ends Failed when a
verdict fails (fail closed).

Run: `stagecheck validate --config stagecheck.toml [--sandbox]` (or `python -m cli validate ...`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.states import Failed, State
from pydantic import Field, ValidationError

from flows.gates import gate_value
from flows.params import GIT_SHA_PATTERN, ValidationRequest, flow_timeout_s
from flows.run_labels import _initial_run_name, _label_run, _run_token, run_name, run_tags
from flows.service_walk import ServiceValidation
from stagecheck.checkout import remove as remove_checkout
from stagecheck.errors import StageError
from stagecheck.model import (
    StageResult,
    Status,
    Verdict,
)
from stagecheck.progress import progress
from stagecheck.redact import hold_secret_values, redact, redact_run_logs
from stagecheck.report import render_run_markdown
from stagecheck.repository import settings_outside
from stagecheck.secret_values import secret_values
from stagecheck.settings import (
    ConfigError,
    check_sources,
)
from stagecheck.stages import Stage
from stagecheck.verdict_events import emit, verdict_event
from tasks.checkout import checkout_commit
from tasks.common import Clients
from tasks.notify import notify_failure
from tasks.report import publish_report
from tasks.repository import fetch_repository
from tasks.syntax import check_syntax

# the names other modules and tests import from here
__all__ = ["ServiceValidation", "gate_value", "run_name", "run_tags", "validate"]


@flow(name="stagecheck-validate", log_prints=False, persist_result=False, flow_run_name=_initial_run_name,
      timeout_seconds=flow_timeout_s())
async def validate(
    config: str = "stagecheck.toml",
    services: list[str] | None = None,
    git_sha: Annotated[str | None, Field(pattern=GIT_SHA_PATTERN)] = None,
    git_ref: str | None = None,
    traffic_steps: list[int] | None = None,
    canary_hold_s: Annotated[float | None, Field(ge=0)] = None,
    bake_s: Annotated[float | None, Field(ge=0)] = None,
    analysis: bool | None = None,
    dry_run: bool = False,
    sandbox: bool = False,
    state_dir: str = ".stagecheck",
    repository: str | None = None,
    repository_credentials: str | None = None,
) -> list[dict[str, str]] | State:
    """Validate a release on Cloud Run staging: build, push, deploy with no traffic, probe, shift
    traffic, read logs, decide with evidence; roll back on a failed gate. Fails when a verdict fails.

    Flat parameters (the UI's run form, `prefect deployment run --param git_sha=...`, and triggers that
    set only `git_sha` and `git_ref`): the fields of `flows.params.ValidationRequest`, described alike.

    Args:
        config: Path of the stagecheck.toml (inside `repository` when set, else relative to the working directory)
        services: Cloud Run services to validate; empty means every service in the config
        git_sha: Commit to validate (checked out for the run unless the clone is at it); empty means HEAD
        git_ref: Branch or ref the commit came from (shown in the report)
        traffic_steps: Override the traffic plan: percent to the new revision per step, e.g. [10, 50, 100]
        canary_hold_s: Override the wait after each canary step (seconds)
        bake_s: Override the bake window after the last step (seconds)
        analysis: Compare the candidate with the baseline under load during the bake (the [analysis] section, defaults when absent); empty: as the config says
        dry_run: Check syntax and build the image only; deploy nothing
        sandbox: Target the local sandbox (endpoints from STATE_DIR/sandbox.json)
        state_dir: Where the sandbox writes sandbox.json
        repository: Git URL (https://, ssh://, git@host:path, file://) or absolute path of the service repository to validate; empty: the repository of the working directory
        repository_credentials: Prefect block holding the repository's HTTPS token: a Secret block's name, or <block type>/<name> (e.g. github-credentials/acme); never put credentials in the URL
    """
    logger = get_run_logger()
    repo = None
    try:
        request = ValidationRequest(config=config, services=services or [], git_sha=git_sha, git_ref=git_ref,
                                    traffic_steps=traffic_steps, canary_hold_s=canary_hold_s, bake_s=bake_s,
                                    analysis=analysis, dry_run=dry_run, sandbox=sandbox, state_dir=state_dir, repository=repository,
                                    repository_credentials=repository_credentials)
        if request.repository:  # a service repository stagecheck does not live in: its tree at the commit
            request, repo = await fetch_repository(request, _run_token())
        settings = settings_outside(request.load(), repo)
        chosen = [settings.service(name) for name in request.services] or list(settings.services)
        if not request.git_sha:  # with a requested commit, the checkout gate checks them in its tree
            check_sources(settings, chosen)  # the build inputs exist, before any stage
    except (ConfigError, ValidationError, StageError) as exc:  # bad input: a Failed run, the message, no traceback
        if repo is not None:
            await asyncio.to_thread(remove_checkout, repo.checkout)
        logger.error("%s", exc)
        return Failed(message=str(exc))
    hold_secret_values(secret_values(settings, os.environ))  # every output masks them from here on
    redact_run_logs()
    traffic_override = (request.traffic_steps is not None or request.canary_hold_s is not None
                        or request.bake_s is not None)

    # once per run: the commit's tree (a per-run checkout unless the clone is at it; reported when per run or failed)
    checked, tree = await gate_value(await checkout_commit(request, settings, [s.name for s in chosen], _run_token()))
    if tree is not None:  # from here on every repository path points into the commit's tree
        settings, chosen = tree.settings, list(tree.services)
    syntax = await gate_value(await check_syntax(settings.repo_root, settings.syntax)) if tree else StageResult(
        name=Stage.SYNTAX, status=Status.SKIP, summary="not run: the commit was not checked out")
    clients = Clients.from_settings(settings)
    commit: str | StageError = tree.checkout.sha if tree else StageError(checked.summary)
    await _label_run(run_name([s.name for s in chosen], commit if isinstance(commit, str) else settings.git_sha),
                     [s.name for s in chosen])
    logger = get_run_logger()  # its lines carry the new name
    try:
        reports = list(await asyncio.gather(*(
            ServiceValidation(settings, svc, clients, commit,
                              settings.traffic if traffic_override else settings.traffic_for(svc),
                              request.git_ref, None if tree and not tree.checkout.per_run else checked).run(syntax)
            for svc in chosen)))
    finally:
        await clients.aclose()
        for done in (tree.checkout if tree else None, repo.checkout if repo else None):  # also on failure; a
            if done is not None:                                # crashed run's tree is removed by the next run
                await asyncio.to_thread(remove_checkout, done)

    paths = []
    for report in reports:
        path = await publish_report(report, settings.report_dir, settings.result_storage)
        paths.append(path)
        progress().service_finished(report, path)
        emit(verdict_event(report, str(path)))  # others react to the verdict with their own Automations
        logger.info("%s: %s%s -> %s", report.service, report.verdict.value.upper(),
                    f" (decided by {report.decided_by})" if report.decided_by else "", path)
    if len(reports) > 1:
        from prefect.artifacts import acreate_markdown_artifact

        await acreate_markdown_artifact(markdown=render_run_markdown(reports), key="stagecheck-run",
                                        description="staging validation of several services")
    results = [{"service": r.service, "verdict": r.verdict.value, "report": str(p)}
               for r, p in zip(reports, paths, strict=True)]
    failed = [r for r in reports if r.verdict is Verdict.FAIL]
    if failed:
        await notify_failure(failed)
        message = "; ".join(f"{r.service} failed at {r.decided_by}: {r.reasons[0] if r.reasons else ''}"
                            for r in failed)
        logger.error("verdict FAIL: %s", message)
        # a Failed final state (not an exception): the run fails closed, with the reason and no traceback
        return Failed(message=redact(message), data=results)
    return results
