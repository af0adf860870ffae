"""The verdict as a Prefect event, so others can react with ordinary Automations (promote, set a
GitHub commit status, page someone): `stagecheck.validation.passed` / `stagecheck.validation.failed`,
about the resource `stagecheck.service.<name>` (labels: project, region). Building it is pure; `emit`
hands it to Prefect's event client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stagecheck.model import ServiceReport, Verdict

PASSED_EVENT = "stagecheck.validation.passed"
FAILED_EVENT = "stagecheck.validation.failed"
RESOURCE_PREFIX = "stagecheck.service."
PROJECT_LABEL = "stagecheck.project"
REGION_LABEL = "stagecheck.region"
# the Automation (prefect.yaml `automations:`) that sends failed verdicts to a notification block
FAILED_VERDICTS_AUTOMATION = "stagecheck-failed-verdicts"


def service_resource_id(service: str) -> str:
    return f"{RESOURCE_PREFIX}{service}"


@dataclass(frozen=True)
class VerdictEvent:
    event: str
    resource: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)


def verdict_event(report: ServiceReport, report_path: str) -> VerdictEvent:
    """Pure: the event for one service's verdict, with what a reaction needs in its payload."""
    passed = report.verdict is Verdict.PASS
    return VerdictEvent(
        event=PASSED_EVENT if passed else FAILED_EVENT,
        resource={"prefect.resource.id": service_resource_id(report.service),
                  "prefect.resource.name": report.service,
                  PROJECT_LABEL: report.project, REGION_LABEL: report.region},
        payload={"service": report.service, "verdict": report.verdict.value,
                 "revision": report.revision.name if report.revision else None,
                 "git_sha": report.git_sha, "git_ref": report.git_ref,
                 "decided_by": report.decided_by, "reasons": report.reasons[:3],
                 "report": report_path, "report_url": report.flow_run_url},
    )


def emit(event: VerdictEvent) -> None:
    """Send the event to the configured Prefect API (the current flow run joins as a related resource)."""
    from prefect.events import emit_event

    emit_event(event=event.event, resource=event.resource, payload=event.payload)
