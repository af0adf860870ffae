"""How a service's walk ends: the release (the split a person expects), the rollback at the first failed
gate (or the clean-up after a failed deploy), the failure explained from the candidate's logs, the report."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.runtime import flow_run

from flows.gates import gate_value
from flows.service_state import ServiceRun
from stagecheck.cost import estimate_revision_cost
from stagecheck.log_analysis.explanation import needs_explaining
from stagecheck.model import (
    ImageInfo,
    RevisionInfo,
    Rollback,
    ServiceReport,
    Status,
)
from stagecheck.rollback import cleaned_up, decide_rollback, rolled_back
from stagecheck.stages import Stage
from stagecheck.verdict import collect_criteria, decide, required_for
from tasks.deploy import DeployOutcome
from tasks.inspect import ServiceSnapshot
from tasks.logs import explain_failure
from tasks.traffic import finish_release, restore_after_failed_deploy, rollback_traffic


class Endings(ServiceRun):
    """The release/rollback endings of a walk and its report."""

    async def _finish_release(self, revision: str) -> None:
        """A passed release leaves the service as a person expects: LATEST=100 (after_pass "latest") or the
        candidate pinned, and only the newest few of stagecheck's own tags."""
        self.starting(Stage.RELEASE)
        plan = self.traffic_plan
        result, applied = await gate_value(await self._api(finish_release)(
            self.clients.cloudrun, self.svc.name, self.traffic_after, revision, self.tag, plan.after_pass,
            plan.keep_tags, self.settings.deploy_timeout_s))
        if applied:
            self.traffic_after = applied
        if not self.record(result):
            await self._rollback_if_moved(True, revision, Stage.RELEASE)

    async def _rollback_if_moved(self, moved: bool, revision: str, failed_stage: str) -> None:
        """After a failed gate: restore the split that served before when traffic had moved (stagecheck.rollback)."""
        if self.rollback.performed:
            return
        snapshot = self.snapshot
        decision = decide_rollback(moved=moved, serving_before=snapshot.serving if snapshot and snapshot.exists else [],
                                   candidate=revision, tag=self.tag, failed_stage=failed_stage,
                                   traffic_now=self.traffic_after)
        if isinstance(decision, Rollback):
            self.rollback = decision
            return
        self.starting(Stage.ROLLBACK)
        result, applied = await gate_value(await self._api(rollback_traffic)(self.clients.cloudrun, self.svc.name, decision.split,
                                                 self.settings.deploy_timeout_s, failed_stage))
        self.record(result)
        if applied:
            self.traffic_after = applied
        self.rollback = rolled_back(result, applied)

    async def _clean_up_failed_deploy(self, snapshot: ServiceSnapshot, candidate: str) -> None:
        """The failed candidate must not stay a traffic target: restore the split as it was configured
        (LATEST stays LATEST: the failed revision never becomes Ready), minus targets that are not Ready."""
        self.starting(Stage.ROLLBACK)
        remembered = snapshot.traffic or snapshot.serving
        result, applied = await gate_value(await self._api(restore_after_failed_deploy)(
            self.clients.cloudrun, self.svc.name, remembered, candidate, self.tag, self.traffic_plan.keep_tags,
            self.settings.deploy_timeout_s))
        self.record(result)
        if applied:
            self.traffic_after = applied
        self.rollback = cleaned_up(result, applied)

    async def _explain_failure(self, snapshot: ServiceSnapshot, outcome: DeployOutcome, revision: RevisionInfo) -> None:
        """After a gate failed once the candidate served (and traffic was restored): what the candidate logged
        around the failure, named in the failing stage's evidence and the report's reasons."""
        failed = next((s for s in self.stages if s.status is Status.FAIL), None)  # the gate, not its rollback
        if failed is None or not needs_explaining(failed):
            return
        causes, evidence = await explain_failure(
            self.clients.logs, service=self.svc.name, revision=revision.name,
            previous_revision=snapshot.previous.name if snapshot.previous else None,
            start=revision.created_at or outcome.started_at or self.started_at,
            failed_at=self.failed_at or datetime.now(UTC), rules=self.settings.logs, probes=self.settings.probes)
        failed.causes.extend(causes)
        failed.evidence.extend(evidence)

    def _report(self, image: ImageInfo | None, revision: RevisionInfo | None) -> ServiceReport:
        required = required_for(self.settings, self.svc, bake=bool(self.traffic_plan.bake_s))
        verdict, decided_by, reasons, warnings = decide(self.stages, required)
        snapshot = self.snapshot
        price = self.settings.price
        return ServiceReport(
            service=self.svc.name, project=self.settings.project, region=self.settings.region,
            verdict=verdict, decided_by=decided_by, reasons=reasons, warnings=warnings,
            stages=self.stages, criteria=collect_criteria(self.stages), image=image, revision=revision,
            previous_revision=snapshot.previous if snapshot else None,
            traffic_before=snapshot.traffic if snapshot else [], traffic_after=self.traffic_after,
            rollback=self.rollback, urls=self.urls, git_sha=None if self.git_error else self.git_sha,
            git_ref=self.git_ref,
            started_at=self.started_at, finished_at=datetime.now(UTC), flow_run_url=_flow_run_url(),
            estimated_monthly_cost_usd=estimate_revision_cost(revision, price),
            previous_estimated_monthly_cost_usd=estimate_revision_cost(snapshot.previous if snapshot else None, price),
            contract=self.contract,
        )


def _flow_run_url() -> str | None:
    try:
        url = flow_run.get_flow_run_ui_url()
    except Exception:  # no API/UI configured: the report simply has no link
        return None
    # without a UI address (a temporary local server) Prefect builds "None/flow-runs/..."
    return str(url) if url and str(url).startswith(("http://", "https://")) else None
