"""The Automations stagecheck ships: failed verdicts sent to a notification block.

They live in prefect.yaml under a top-level `automations:` key, in the format `prefect automation create
--from-file` reads (`prefect deploy` ignores the key). One thing differs: an action's `block_document_id`
may name the block as `<block-type-slug>/<block-name>` (the form `Block.load` takes), so that the file is
the same for every workspace; `stagecheck serve` (up and register) resolves it to the block's id and
creates or updates each automation by name. An automation whose block does not exist is not registered
(the caller says which block to create), and the flow's own webhook task stays the fallback (tasks/notify.py).

The shipped one reacts to `stagecheck.validation.failed` (stagecheck/verdict_events.py) with Prefect's
`send-notification` action; its body is rendered by the server from the event payload (service, gate,
reasons, commit, report), which holds no secret: the webhook URL (a Slack token) stays in the block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from stagecheck.verdict_events import FAILED_EVENT, FAILED_VERDICTS_AUTOMATION, RESOURCE_PREFIX

NOTIFICATION_BLOCK = "custom-webhook/stagecheck-failures"  # or slack-webhook/<name>: any notification block

SUBJECT = "stagecheck: {{ event.payload.verdict | upper }} for {{ event.payload.service }}"
BODY = (
    "stagecheck: {{ event.payload.verdict | upper }} for {{ event.payload.service }} at gate "
    "{{ event.payload.decided_by or 'unknown' }}"
    "{% if event.payload.git_sha %} (commit {{ event.payload.git_sha[:12] }}){% endif %}\n"
    "{% for reason in event.payload.reasons %}- {{ reason }}\n{% endfor %}"
    "report: {{ event.payload.report }}"
    "{% if event.payload.report_url %}\nflow run: {{ event.payload.report_url }}{% endif %}"
)


def failed_verdicts() -> dict[str, Any]:
    """Pure: the automation sending each failed verdict to the notification block (prefect.yaml form)."""
    return {
        "name": FAILED_VERDICTS_AUTOMATION,
        "description": "Send every failed stagecheck verdict to the notification block "
                       f"{NOTIFICATION_BLOCK!r} (Slack webhook or custom webhook).",
        "enabled": True,
        "trigger": {"type": "event", "posture": "Reactive", "expect": [FAILED_EVENT],
                    "match": {"prefect.resource.id": f"{RESOURCE_PREFIX}*"}, "for_each": ["prefect.resource.id"],
                    "threshold": 1, "within": 0},
        "actions": [{"type": "send-notification", "block_document_id": NOTIFICATION_BLOCK,
                     "subject": SUBJECT, "body": BODY}],
    }


def load_automations(prefect_yaml: Path) -> list[dict[str, Any]]:
    """The `automations:` of a prefect.yaml (none when the file or the key is missing)."""
    if not prefect_yaml.is_file():
        return []
    document = yaml.safe_load(prefect_yaml.read_text()) or {}
    found = document.get("automations") or []
    return [a for a in found if isinstance(a, dict)]


def block_reference(value: object) -> tuple[str, str] | None:
    """Pure: (block type slug, block name) for a `slug/name` reference; None for an id or anything else."""
    if not isinstance(value, str) or value.count("/") != 1:
        return None
    try:
        UUID(value)
        return None
    except ValueError:
        slug, name = value.split("/")
        return (slug, name) if slug and name else None


@dataclass
class Registered:
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why an automation was not registered


async def register_automations(prefect_yaml: Path) -> Registered:
    """Create or update (by name) each automation of the file on the configured Prefect API."""
    from prefect import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.exceptions import ObjectNotFound

    done = Registered()
    async with get_client() as client:
        for spec in load_automations(prefect_yaml):
            actions, missing = [], None
            for action in spec.get("actions") or []:
                ref = block_reference(action.get("block_document_id")) if isinstance(action, dict) else None
                if ref is not None:
                    try:
                        block = await client.read_block_document_by_name(ref[1], ref[0], include_secrets=False)
                    except ObjectNotFound:
                        missing = "/".join(ref)
                        break
                    action = {**action, "block_document_id": str(block.id)}
                actions.append(action)
            name = str(spec.get("name"))
            if missing is not None:
                done.skipped.append(f"automation {name!r}: no block {missing!r} (create it: README, Failure "
                                    "notification); the flow's webhook task notifies meanwhile")
                continue
            automation = AutomationCore.model_validate({**spec, "actions": actions})
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:  # one automation per name
                    await client.delete_automation(extra.id)
            else:
                await client.create_automation(automation)
            done.names.append(automation.name)
    return done
