"""Before the config is read: the service repository a request names, checked out at its commit for this run
(`stagecheck.repository`), with the token of a Prefect block (never in the URL, never in any output).

Unlike the stage tasks it raises (RepositoryError, its task run Failed): before the config is read there is no
service, so no report to carry a gate; the flow ends Failed with the reason, as for a bad config."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.checkout import remove
from stagecheck.redact import hold_secret_values, redact
from stagecheck.repository import RepositoryError, RepositoryTree, check_out, secret_forms
from stagecheck.request import ValidationRequest


def block_token(block: Any) -> str:
    """Pure: the token a credentials block holds: a `Secret`'s value, or the `token` of a GitHubCredentials
    block (prefect-github) or any block with one; RepositoryError for a block without either."""
    if hasattr(block, "get") and callable(block.get):
        value = block.get()
    else:
        value = getattr(block, "token", None)
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if not isinstance(value, str) or not value.strip():
        raise RepositoryError(f"the credentials block {type(block).__name__} holds no token (a Secret's value or a "
                              "`token` field)")
    return value.strip()


async def load_token(name: str) -> str:
    """The token of the block `name`: a `Secret` block name, or a slug `<block type>/<name>` (e.g.
    `github-credentials/acme` where prefect-github is installed)."""
    from prefect.blocks.core import Block
    from prefect.blocks.system import Secret

    try:
        block = await (Block.aload(name) if "/" in name else Secret.aload(name))
    except (ValueError, KeyError) as exc:
        raise RepositoryError(f"repository_credentials {name!r}: no such block ({exc})") from None
    return block_token(block)


@task(name="repository", cache_policy=NO_CACHE)
async def fetch_repository(request: ValidationRequest, run_token: str) -> tuple[ValidationRequest, RepositoryTree]:
    """Check out `request.repository` at `request.git_sha` (or `git_ref`, else its HEAD) for this run; returns the
    request with `config` and `git_sha` pointing into that tree. RepositoryError with a redacted reason."""
    assert request.repository
    token = await load_token(request.repository_credentials) if request.repository_credentials else None
    hold_secret_values(secret_forms(token))  # masked in every output from here on
    try:
        tree = await asyncio.to_thread(check_out, request.repository, request.git_sha or request.git_ref,
                                       token=token, run_token=run_token)
    except RepositoryError as exc:
        raise RepositoryError(redact(str(exc))) from None
    try:
        config = tree.config(request.config)
    except RepositoryError:
        await asyncio.to_thread(remove, tree.checkout)
        raise
    return request.model_copy(update={"config": str(config), "git_sha": tree.checkout.sha}), tree
