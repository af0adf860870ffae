"""One service's walk through the stages, in the report's order: syntax, inspect, build, push, deploy,
probe-tagged, traffic (canary hold, bake), smoke, logs; then release, or rollback at the first failed gate."""

from __future__ import annotations

from datetime import UTC, datetime

from flows.gates import gate_value
from flows.rollout_steps import RolloutSteps
from stagecheck.analysis.config import Baseline
from stagecheck.concurrency import (
    ServiceLockError,
    lock_failed,
    service_slot,
)
from stagecheck.errors import StageError
from stagecheck.model import (
    Criterion,
    ImageInfo,
    RevisionInfo,
    ServiceReport,
    StageResult,
    Status,
)
from stagecheck.probe_auth import probe_audience
from stagecheck.probe_targets import tagged_targets, with_advisories
from stagecheck.settings import (
    ProbeAuth,
    ProbeMode,
    UrlKind,
)
from stagecheck.stages import Stage
from tasks.build import build_image
from tasks.contract import audit_contract
from tasks.control import deploy_control
from tasks.deploy import DeployOutcome, deploy_revision
from tasks.inspect import ServiceSnapshot, inspect_service
from tasks.logs import analyse_logs
from tasks.probe import probe_urls
from tasks.push import push_image
from tasks.smoke import run_smoke


class ServiceValidation(RolloutSteps):
    """One service's walk through the stages. Holds what the run learned; every decision it makes is
    delegated to the pure functions, every action to a task."""

    async def run(self, syntax: StageResult) -> ServiceReport:
        if self.settings.dry_run:  # builds only, moves nothing on Cloud Run: no slot to take, nothing to wait for
            self.started_at = datetime.now(UTC)
            return self._report(*await self._stages(syntax))
        await self._ensure_limit()
        try:
            async with service_slot(self.svc.name, self.settings.slot_wait_s):  # one validation per service at a time
                self.started_at = datetime.now(UTC)
                if await self._recover_first():
                    image, revision = await self._stages(syntax)
                else:
                    self.record(syntax)
                    image, revision = None, None
                await self._settle_rollout_record()
        except ServiceLockError as exc:
            if self.checkout is not None:
                self.record(self.checkout)
            self.record(syntax)
            self.record(lock_failed(self.svc.name, exc))
            image, revision = None, None
        return self._report(image, revision)

    async def _stages(self, syntax: StageResult) -> tuple[ImageInfo | None, RevisionInfo | None]:
        """The report's table of contents: syntax, inspect, build, push, deploy, probe-tagged, traffic and
        probe-serving per step (canary hold, bake), smoke, logs; then release, or rollback at the first failed gate."""
        if self.checkout is not None and not self.record(self.checkout):
            return None, None
        if not self.record(syntax) or not self._commit_identified():
            return None, None
        snapshot = await self._inspect()
        if snapshot is None:
            return None, None
        ok, image = await self._build()
        if not ok or image is None or self.settings.dry_run:
            return image, None
        ok, image = await self._push(image, snapshot)
        if not ok or image.pinned is None:
            return image, None
        ok, outcome = await self._deploy(image.pinned, snapshot)
        revision = outcome.revision
        if not ok or revision is None:
            return image, revision
        if not await self._probe_tagged(snapshot, outcome, revision.name):
            await self._explain_failure(snapshot, outcome, revision)
            return image, revision
        if not await self._contract(snapshot, outcome, revision.name):
            return image, revision
        if (await self._shift_and_probe(snapshot, revision.name, outcome.service_url)
                and await self._smoke(outcome, revision.name)
                and await self._logs(snapshot, outcome, revision)):
            await self._finish_release(revision.name)
        else:
            failed = next(s.name for s in reversed(self.stages) if s.status is Status.FAIL)
            await self._rollback_if_moved(True, revision.name, failed)
            await self._explain_failure(snapshot, outcome, revision)
        return image, revision

    def _commit_identified(self) -> bool:
        """The commit to validate is known (a dirty or foreign checkout fails the build gate before any build)."""
        if self.git_error is not None:
            self.record(StageResult(name=Stage.BUILD, status=Status.FAIL, summary=str(self.git_error),
                                    criteria=[Criterion(name="Commit identified", stage=Stage.BUILD, status=Status.FAIL,
                                                        expected="a clean checkout of the commit",
                                                        observed=str(self.git_error))]))
            return False
        return True

    async def _inspect(self) -> ServiceSnapshot | None:
        """The service as it serves now (None: the inspect gate failed); a dry run contacts no API."""
        if self.settings.dry_run:  # no API contact at all: build only
            return ServiceSnapshot(exists=False)
        self.starting(Stage.INSPECT)
        result, self.snapshot = await gate_value(await self._api(inspect_service)(self.clients.cloudrun, self.svc.name))
        if not self.record(result) or self.snapshot is None:
            return None
        snapshot = self.snapshot
        self.traffic_after = list(snapshot.traffic)
        return snapshot

    async def _build(self) -> tuple[bool, ImageInfo | None]:
        self.starting(Stage.BUILD)
        result, image = await gate_value(await build_image(
            self.clients.images, self.svc, self.repository, self.git_sha, self.settings.extra_tags))
        return self.record(result), image

    async def _push(self, image: ImageInfo, snapshot: ServiceSnapshot) -> tuple[bool, ImageInfo]:
        self.starting(Stage.PUSH)
        pushed = await gate_value(await push_image(self.clients.images, image, self.repository, snapshot.image))
        result, image = pushed
        return self.record(result), image

    async def _deploy(self, pinned: str, snapshot: ServiceSnapshot) -> tuple[bool, DeployOutcome]:
        """The candidate revision, no traffic; a failed deploy puts the split back as it was (or says why not).
        With `[analysis] baseline = "fresh"`, the control revision first (tasks.control): both start cold."""
        if not await self._deploy_control(snapshot):
            return False, DeployOutcome()
        self.starting(Stage.DEPLOY)
        result, outcome = await gate_value(await self._api(deploy_revision)(
            self.clients.cloudrun, self.settings, self.svc, image=pinned, git_sha=self.git_sha, tag=self.tag, snapshot=snapshot))
        revision = outcome.revision
        if revision is not None:
            self.revision_started = revision.created_at or outcome.started_at
            self.request_timeout_s = revision.timeout_s or self.request_timeout_s
        if outcome.traffic:
            self.traffic_after = outcome.traffic
        if outcome.service_url:
            self.urls["service"] = outcome.service_url
        if outcome.tag_url:
            self.urls["tagged"] = outcome.tag_url
        if self.settings.lb_url:
            self.urls["lb"] = f"{self.settings.lb_url}{self.svc.lb_prefix}"
        if not self.record(result) or revision is None:
            candidate = outcome.revision.name if outcome.revision is not None else ""
            await self._rollback_if_moved(outcome.traffic_moved, candidate, Stage.DEPLOY)
            if not outcome.traffic_moved and snapshot.exists and outcome.revision is not None:
                await self._clean_up_failed_deploy(snapshot, outcome.revision.name)
            return False, outcome
        return True, outcome

    async def _deploy_control(self, snapshot: ServiceSnapshot) -> bool:
        """The fresh control, when configured and a revision serves (False: it failed; nothing moved)."""
        analysis = self.settings.analysis
        if analysis is None or analysis.baseline is not Baseline.FRESH or snapshot.previous is None:
            return True
        self.starting("deploy control")
        result, self.control = await gate_value(await self._api(deploy_control)(
            self.clients.cloudrun, self.svc.name, serving=snapshot.previous.name, split=snapshot.serving,
            timeout_s=self.settings.deploy_timeout_s))
        return self.control is not None or self.record(result)

    async def _probe_tagged(self, snapshot: ServiceSnapshot, outcome: DeployOutcome, revision: str) -> bool:
        """The candidate answers on its tag URL before it gets any traffic (skipped when the tagged probe is off)."""
        if self.svc.health.tagged.mode == ProbeMode.OFF:
            return True
        self.starting(Stage.PROBE_TAGGED)
        tagged, notes = tagged_targets(self.settings, self.svc, self.tag, outcome.tag_url, snapshot.ingress,
                                       outcome.service_url)
        sent_from = datetime.now(UTC)  # request logs are stamped at arrival (a held request: long before its end)
        result = await gate_value(await probe_urls(self.clients.http, Stage.PROBE_TAGGED, tagged, self.settings.probes,
                                  tokens=self.clients.tokens, service=self.svc.name))
        self.last_probe_at = sent_from
        result = with_advisories(result, notes, "the candidate was not probed before traffic (set lb_tag_url "
                                                "to probe its tag through the load balancer)")
        if not self.record(result):
            await self._rollback_if_moved(outcome.traffic_moved, revision, Stage.PROBE_TAGGED)
            return False
        return True

    async def _contract(self, snapshot: ServiceSnapshot, outcome: DeployOutcome, revision: str) -> bool:
        """The candidate's API contract against the serving revision's, before any traffic moves (tasks.contract);
        a failed audit stops the release like a failed probe-tagged."""
        self.starting(Stage.CONTRACT)
        result, self.contract = await gate_value(await self._api(audit_contract)(
            self.clients.cloudrun, self.clients.http, self.clients.tokens, self.svc.name, self.svc.contract,
            self.settings.probes, baseline_revision=snapshot.previous.name if snapshot.previous else None,
            candidate_url=outcome.tag_url, timeout_s=self.settings.deploy_timeout_s, ingress=snapshot.ingress,
            in_vpc=self.settings.worker_in_vpc,
            audience=probe_audience(UrlKind.TAGGED, outcome.service_url, self.settings.probes)))
        if not self.record(result):
            await self._rollback_if_moved(outcome.traffic_moved, revision, Stage.CONTRACT)
            return False
        return True

    async def _smoke(self, outcome: DeployOutcome, revision: str) -> bool:
        """The configured smoke commands against the released revision (none configured: nothing to run)."""
        if not self.svc.smoke:
            return True
        env = {"STAGECHECK_BASE_URL": outcome.service_url or "", "STAGECHECK_TAG_URL": outcome.tag_url or "",
               "STAGECHECK_LB_URL": self.urls.get("lb", ""), "STAGECHECK_REVISION": revision,
               "STAGECHECK_SERVICE": self.svc.name}
        self.starting(Stage.SMOKE)
        env.update(await self._smoke_token(outcome.service_url))
        return self.record(await gate_value(
            await run_smoke(list(self.svc.smoke), env, self.settings.repo_root, service=self.svc.name)))

    async def _smoke_token(self, service_url: str | None) -> dict[str, str]:
        """STAGECHECK_ID_TOKEN (audience: the service URL) for smoke commands against a private service."""
        if self.settings.probes.auth != ProbeAuth.ID_TOKEN or not service_url or self.clients.tokens is None:
            return {}
        try:
            return {"STAGECHECK_ID_TOKEN": await self.clients.tokens.token(service_url)}
        except StageError:  # the probes already proved minting works; a smoke command then sees no token
            return {}

    async def _logs(self, snapshot: ServiceSnapshot, outcome: DeployOutcome, revision: RevisionInfo) -> bool:
        """The new revision's logs against the previous revision's, up to the last probe's request log."""
        self.starting(Stage.LOGS)
        previous = snapshot.previous.name if snapshot.previous else None
        result = await gate_value(await analyse_logs(
                                    self.clients.logs, service=self.svc.name, revision=revision.name,
                                    previous_revision=previous,
                                    start=revision.created_at or outcome.started_at or self.started_at,
                                    last_probe_at=self.last_probe_at, rules=self.settings.logs,
                                    probes=self.settings.probes))
        return self.record(result)
