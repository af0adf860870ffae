"""Stage `checkout`: the tree of the requested commit, for this run alone (see `stagecheck.checkout`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.checkout import Checkout, CheckoutError, prepare, remove
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.redact import redact
from stagecheck.request import ValidationRequest
from stagecheck.settings import ConfigError, ContractSettings, ServiceConfig, Settings, check_sources
from stagecheck.stages import Stage
from tasks.common import gate, guarded


@dataclass(frozen=True)
class CheckedOut:
    """What the rest of the run reads: the checkout and the settings whose paths point into it."""

    checkout: Checkout
    settings: Settings
    services: tuple[ServiceConfig, ...]


def settings_in_tree(request: ValidationRequest, settings: Settings, checkout: Checkout) -> Settings:
    """The run's settings with every repository path in the checkout. A config file inside the clone is
    read again from the commit (a merge may change it); reports stay where the clone's config puts them
    (the per-run tree is deleted at the end). Raises ConfigError when the commit's config is invalid."""
    if not checkout.per_run:
        return settings
    config = Path(request.config).resolve()
    moved = checkout.relocate(config)
    if moved != config and moved.is_file():
        try:
            fresh = request.model_copy(update={"config": str(moved)}).load()
        except ConfigError as exc:
            raise ConfigError(f"the config at commit {checkout.sha[:12]} is invalid: {exc}") from None
        return fresh.model_copy(update={"report_dir": settings.report_dir})
    return settings.model_copy(update={
        "repo_root": checkout.relocate(settings.repo_root),
        "services": tuple(s.model_copy(update={"source_dir": checkout.relocate(s.source_dir), "contract": _moved_contract(
                          s, checkout)}) for s in settings.services),
    })


def _moved_contract(svc: ServiceConfig, checkout: Checkout) -> ContractSettings:
    """The service's contract settings with its ignore file read from the commit's tree."""
    ignore = svc.contract.ignore_file
    return svc.contract.model_copy(update={"ignore_file": checkout.relocate(ignore) if ignore else None})


def checkout_stage_result(checkout: Checkout, requested: str | None) -> StageResult:
    """Pure: the PASS result of a checkout."""
    summary = redact(checkout.how)
    return StageResult(
        name=Stage.CHECKOUT, status=Status.PASS, summary=summary,
        evidence=[Evidence(kind="note", summary=summary,
                           data={"sha": checkout.sha, "tree": str(checkout.tree), "per_run": checkout.per_run})],
        criteria=[Criterion(name="Commit checked out", stage=Stage.CHECKOUT, status=Status.PASS,
                            expected=f"the tree of {requested or 'HEAD'}", observed=f"tree of {checkout.sha[:12]}")])


def checkout_run_name(parameters: dict[str, Any]) -> str:
    """`checkout-1a2b3c4` (`checkout-HEAD` when no commit was requested)."""
    request = parameters.get("request")
    sha = getattr(request, "git_sha", None)
    return f"checkout-{sha[:7] if sha else 'HEAD'}"


_RUN_NAME: Callable[..., str] = checkout_run_name


@task(name="checkout", cache_policy=NO_CACHE, task_run_name=_RUN_NAME)
async def checkout_commit(request: ValidationRequest, settings: Settings, services: list[str],
                          token: str) -> tuple[StageResult, CheckedOut | None]:
    """Check out the requested commit for this run (in place when the clone is at it and clean, else a
    per-run `git worktree` fetched from the remote if need be) and point the run's settings into it.
    A bad SHA, a commit the remote does not have, or an invalid config at that commit fail the gate."""
    async def body() -> tuple[StageResult, CheckedOut | None]:
        paths = tuple(settings.service(name).source_dir for name in services)
        checkout = await asyncio.to_thread(prepare, settings.repo_root, request.git_sha, paths, token=token)
        try:
            moved = settings_in_tree(request, settings, checkout)
            chosen = tuple(moved.service(name) for name in services)
            check_sources(moved, chosen)
        except ConfigError as exc:
            await asyncio.to_thread(remove, checkout)
            message = str(exc) if str(exc).startswith("the config at commit") else \
                f"at commit {checkout.sha[:12]}: {exc}"
            raise CheckoutError(message) from None
        done = CheckedOut(checkout=checkout, settings=moved, services=chosen)
        return checkout_stage_result(checkout, request.git_sha), done

    result, done = await guarded(Stage.CHECKOUT, body, None)
    if result.status is Status.FAIL:
        result.summary = redact(result.summary)
    return gate(result, (result, done))
