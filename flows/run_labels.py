"""The flow run's name and tags: `validate-<services>-<sha7>` and `service:<name>` per service."""

from __future__ import annotations

from prefect.runtime import flow_run

from stagecheck.concurrency import (
    service_tag,
)


def run_name(services: list[str], git_sha: str | None) -> str:
    """Pure: the flow run's name, `validate-checkout-1a2b3c4` (services joined by `+`; `all` when the
    config's every service; `HEAD` while the commit is not resolved yet)."""
    return f"validate-{'+'.join(services) if services else 'all'}-{git_sha[:7] if git_sha else 'HEAD'}"


def _run_token() -> str:
    """A per-run checkout's directory suffix: the flow run's id (8 hex digits) and 4 random ones."""
    import secrets

    return f"{str(flow_run.id or '')[:8] or 'local'}-{secrets.token_hex(2)}"


def _initial_run_name() -> str:
    """The name a run starts with, from its parameters (renamed once the config and commit are known)."""
    params = flow_run.parameters or {}
    return run_name(list(params.get("services") or []), params.get("git_sha"))


def run_tags(existing: list[str], services: list[str]) -> list[str]:
    """Pure: the flow run's tags, its own plus `service:<name>` for each service it validates."""
    return list(dict.fromkeys([*existing, *(service_tag(s) for s in services)]))


async def _label_run(name: str, services: list[str]) -> None:
    """Give the running flow run its final name (service and resolved SHA) and its `service:<name>` tags, in
    one API request. The tags are on the flow run, not on its task runs: Prefect's task engine asks the API
    for tag concurrency slots before every tagged task run (a write on the server), and on a SQLite server
    such a write answered 503 "database is locked" cost ~2 s of client back-off (see docs/performance.md)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    tags_now = run_tags(list(context.flow_run.tags or []), services)
    if context.flow_run.name == name and tags_now == list(context.flow_run.tags or []):
        return
    async with get_client() as client:
        await client.update_flow_run(context.flow_run.id, name=name, tags=tags_now)
    context.flow_run.name, context.flow_run.tags = name, tags_now
