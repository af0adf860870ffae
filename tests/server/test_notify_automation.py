"""Failed verdicts notified the Prefect way: the Automation shipped in prefect.yaml, registered as
`stagecheck serve` registers it, sends a `stagecheck.validation.failed` event to a Custom Webhook
notification block; a real `prefect server start` renders and delivers it to a webhook on 127.0.0.1
(standing in for Slack, which nothing here can reach). The flow's own webhook task then stands down."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from deployments.automations import NOTIFICATION_BLOCK, register_automations
from stagecheck.model import ServiceReport, Verdict
from stagecheck.verdict_events import FAILED_VERDICTS_AUTOMATION, emit, verdict_event
from tasks.notify import automation_notifies
from tests.server.conftest import REPO_ROOT, LocalServer, serve_posts

pytestmark = pytest.mark.server


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.arrived = threading.Condition()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    got = Receiver()

    def arrived(path: str, body: Any) -> None:
        with got.arrived:
            got.posts.append((path, body))
            got.arrived.notify_all()

    with serve_posts(arrived) as port:
        yield got, port


def report(service: str, verdict: Verdict) -> ServiceReport:
    now = datetime.now(UTC)
    failed = verdict is Verdict.FAIL
    return ServiceReport(service=service, project="staging-proj", region="europe-west1", verdict=verdict,
                         decided_by="probe-serving" if failed else None,
                         reasons=["GET /health -> 503 in 3 of 3 attempts"] if failed else [],
                         git_sha="0123456789abcdef0123456789abcdef01234567", started_at=now, finished_at=now,
                         flow_run_url="http://127.0.0.1:4200/runs/flow-run/1234")


def test_a_failed_verdict_reaches_the_notification_block_through_the_automation(
        prefect_server: LocalServer, receiver: tuple[Receiver, int]) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    got, port = receiver
    token = secrets.token_hex(16)  # the Slack-like secret part of the URL, kept in the block's secrets
    slug, block_name = NOTIFICATION_BLOCK.split("/")
    failing, passing = f"shop-{token[:6]}", f"cart-{token[:6]}"

    async def set_up() -> tuple[bool, list[str], bool]:
        before = await automation_notifies()
        await CustomWebhookNotificationBlock(
            name="stagecheck", url=f"http://127.0.0.1:{port}/services/{{{{ path }}}}",
            json_data={"text": "{{subject}}\n{{body}}"}, secrets={"path": f"T0/B0/{token}"},
        ).save(block_name, overwrite=True)
        done = await register_automations(REPO_ROOT / "prefect.yaml")
        return before, done.names, await automation_notifies()

    async def tear_down() -> None:
        from prefect import get_client

        async with get_client() as client:  # the other tests on this server keep the task's webhook
            for automation in await client.read_automations_by_name(FAILED_VERDICTS_AUTOMATION):
                await client.delete_automation(automation.id)
            block = await client.read_block_document_by_name(block_name, slug)
            await client.delete_block_document(block.id)

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        try:
            before, names, after = asyncio.run(set_up())
            assert (before, names, after) == (False, [FAILED_VERDICTS_AUTOMATION], True)
            for r in (report(passing, Verdict.PASS), report(failing, Verdict.FAIL)):
                emit(verdict_event(r, f"reports/{r.service}-latest.json"))
            EventsWorker.drain_all(timeout=30)
            deadline = time.monotonic() + 90  # the server's trigger and action services act within seconds
            with got.arrived:
                while not got.posts and time.monotonic() < deadline:
                    got.arrived.wait(timeout=1.0)
        finally:
            asyncio.run(tear_down())

    assert len(got.posts) == 1, got.posts
    path, body = got.posts[0]
    assert path == f"/services/T0/B0/{token}"  # the URL from the block, its secret part filled in
    text = body["text"]
    assert text.startswith(f"stagecheck: FAIL for {failing}\nstagecheck: FAIL for {failing} at gate probe-serving "
                           "(commit 0123456789ab)")
    assert "- GET /health -> 503 in 3 of 3 attempts" in text
    assert f"report: reports/{failing}-latest.json" in text
    assert "flow run: http://127.0.0.1:4200/runs/flow-run/1234" in text
    assert token not in json.dumps(body)
    assert passing not in text
