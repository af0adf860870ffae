"""The failure notification's body: a short, Slack-compatible JSON summary of a failed verdict.

Pure: builds the message from a ServiceReport; the POST (and the webhook URL, which is a secret)
live in tasks/notify.py. Every text is redacted, and the caller passes the secret values it holds
(the webhook URL itself) so they can never end up in the body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stagecheck.model import ServiceReport
from stagecheck.redact import redact_obj

MAX_REASON_CHARS = 300


def _short(text: str, limit: int = MAX_REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_summary(report: ServiceReport, flow_run_url: str | None = None,
                    secret_values: Iterable[str] = ()) -> dict[str, Any]:
    """Slack-compatible body: `text` (what a person reads), `attachments[0].fields` (what Slack shows
    as a table) and `stagecheck` (the same facts, machine-readable)."""
    link = flow_run_url or report.flow_run_url
    gate = report.decided_by or "unknown"
    reason = _short(report.reasons[0]) if report.reasons else ""
    sha = (report.git_sha or "")[:12]
    text = f"stagecheck: {report.verdict.value.upper()} for {report.service} at gate {gate}"
    if sha:
        text += f" (commit {sha})"
    if reason:
        text += f": {reason}"
    if link:
        text += f" <{link}|flow run>"
    facts: dict[str, Any] = {
        "verdict": report.verdict.value,
        "service": report.service,
        "project": report.project,
        "region": report.region,
        "failed_gate": report.decided_by,
        "reason": reason or None,
        "git_sha": report.git_sha,
        "rollback": _short(report.rollback.message) or None,
        "flow_run_url": link,
    }
    fields = [{"title": title, "value": str(facts[key]), "short": True}
              for title, key in (("Service", "service"), ("Verdict", "verdict"), ("Failed gate", "failed_gate"),
                                 ("Commit", "git_sha")) if facts[key]]
    if link:
        fields.append({"title": "Flow run", "value": link, "short": False})
    body = {
        "text": text,
        "attachments": [{"color": "danger", "fallback": text, "fields": fields}],
        "stagecheck": facts,
    }
    redacted: dict[str, Any] = redact_obj(body, tuple(secret_values))
    return redacted
