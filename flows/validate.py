"""The staging validation flow: source -> image -> revision -> traffic -> verdict, per service.

The flow only orchestrates: each stage is a task in `tasks/`, the decisions live in `stagecheck/`
(pure functions), and the outside world is reached through `stagecheck/clients/`. It stops at the
first failed gate, rolls traffic back when it had moved, always reports, and ends Failed when a
verdict fails (fail closed).

Run: `stagecheck validate --config stagecheck.toml [--sandbox]` (or `python -m cli validate ...`).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Annotated, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import Field, ValidationError

from flows.params import GIT_SHA_PATTERN, ValidationRequest, flow_timeout_s
from stagecheck.analysis.windows import analyses_window
from stagecheck.checkout import remove as remove_checkout
from stagecheck.concurrency import (
    ServiceLockError,
    ensure_service_limits,
    limit_name,
    lock_failed,
    service_slot,
    service_tag,
    this_flow_run,
)
from stagecheck.contract.findings import ContractAudit
from stagecheck.cost import estimate_revision_cost
from stagecheck.errors import StageError
from stagecheck.evidence import BakeData
from stagecheck.liveness import this_process
from stagecheck.log_analysis.explanation import failure_time, needs_explaining
from stagecheck.model import (
    Criterion,
    Evidence,
    ImageInfo,
    RevisionInfo,
    Rollback,
    ServiceReport,
    StageResult,
    Status,
    TrafficTarget,
    Verdict,
)
from stagecheck.probe_auth import probe_audience
from stagecheck.probe_targets import serving_targets, tagged_targets, websocket_target, with_advisories
from stagecheck.prober import ProbeTarget
from stagecheck.progress import progress
from stagecheck.redact import hold_secret_values, redact, redact_run_logs
from stagecheck.report import render_run_markdown
from stagecheck.repository import settings_outside
from stagecheck.retry_policy import TaskT, with_api_retries
from stagecheck.rollback import cleaned_up, decide_rollback, rolled_back
from stagecheck.rollout import RecoveryAction, RolloutRecord
from stagecheck.secret_values import secret_values
from stagecheck.settings import (
    ConfigError,
    ProbeAuth,
    ProbeMode,
    ServiceConfig,
    Settings,
    TrafficPlan,
    UrlKind,
    check_sources,
)
from stagecheck.stages import Stage
from stagecheck.traffic import describe, plan_steps
from stagecheck.verdict import collect_criteria, decide, required_for
from stagecheck.verdict_events import emit, verdict_event
from tasks.bake import watch_release
from tasks.build import build_image
from tasks.checkout import checkout_commit
from tasks.common import Clients, FailedGate
from tasks.contract import audit_contract
from tasks.deploy import DeployOutcome, deploy_revision
from tasks.inspect import ServiceSnapshot, inspect_service
from tasks.logs import analyse_logs, explain_failure
from tasks.notify import notify_failure
from tasks.probe import probe_urls
from tasks.push import push_image
from tasks.report import publish_report
from tasks.repository import fetch_repository
from tasks.rollout import clear_rollout_record, record_annotation, recover_service, write_rollout_record
from tasks.smoke import run_smoke
from tasks.syntax import check_syntax
from tasks.traffic import finish_release, restore_after_failed_deploy, rollback_traffic, shift_traffic

T = TypeVar("T")


async def gate_value(value: T) -> T:
    """What a stage task returned; from a Failed task run (a failed gate, see `tasks.common.gate`) the
    value its state carries, so the flow reads every gate the same way and stops at the first FAIL."""
    if not isinstance(value, State):
        return value
    data = await value.result(raise_on_failure=False)  # type: ignore[misc]
    if isinstance(data, FailedGate):
        return cast(T, data.value)
    if isinstance(data, BaseException):  # a task that crashed outside its guard: nothing to read
        raise data
    raise RuntimeError(f"task run ended {value.name}: {value.message}")


class ServiceValidation:
    """One service's walk through the stages. Holds what the run learned; every decision it makes is
    delegated to the pure functions, every action to a task."""

    def __init__(self, settings: Settings, svc: ServiceConfig, clients: Clients, git_sha: str | StageError,
                 traffic_plan: TrafficPlan, git_ref: str | None = None, checkout: StageResult | None = None) -> None:
        self.settings, self.svc, self.clients = settings, svc, clients
        self.checkout = checkout  # the run's checkout gate, recorded first
        self.git_ref = git_ref
        self.git_error = git_sha if isinstance(git_sha, StageError) else None
        self.git_sha = git_sha if isinstance(git_sha, str) else "0" * 40
        self.traffic_plan = traffic_plan
        self.stages: list[StageResult] = []
        self.started_at = datetime.now(UTC)
        self.snapshot: ServiceSnapshot | None = None
        self.rollback = Rollback()
        self.traffic_after: list[TrafficTarget] = []
        self.urls: dict[str, str] = {}
        self.last_probe_at: datetime | None = None
        self.revision_started: datetime | None = None  # when the new revision was created (its logs start)
        self.request_timeout_s = 300.0  # the revision's `timeout`: how late its request entries can be written
        self.rollout: RolloutRecord | None = None  # the record on the service while traffic may be moved
        self.failed_at: datetime | None = None  # when the first failed gate saw its failure
        self.contract: ContractAudit | None = None  # the breaking-changes audit, when it compared

    @property
    def tag(self) -> str:
        return f"sc-{self.git_sha[:7]}"

    @property
    def repository(self) -> str:
        return f"{self.settings.registry}/{self.svc.repository}"

    def record(self, result: StageResult) -> bool:
        """Keep a stage result; True when its gate passed."""
        self.stages.append(result)
        if result.status is Status.FAIL and self.failed_at is None:
            self.failed_at = failure_time(result)
        progress().stage_finished(self.svc.name, result)
        return result.status is not Status.FAIL

    def starting(self, stage: str) -> None:
        progress().stage_started(self.svc.name, stage)

    def _api(self, stage_task: TaskT) -> TaskT:
        """An idempotent API stage, retried by Prefect after a transient answer (stagecheck.retry_policy)."""
        return with_api_retries(stage_task, self.settings.api_retries)

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

    async def _recover_first(self) -> bool:
        """Before anything else: a rollout record a killed release left on the service is recovered (the
        recorded split restored), so this run's baseline is the release before the killed one. False when it
        could not be (the run stops: nothing moves over an unknown split)."""
        result, plan = await gate_value(await recover_service(self.clients.cloudrun, self.svc.name,
                                                              self.settings.deploy_timeout_s, this_flow_run()[0]))
        if plan.action is RecoveryAction.NOTHING and result.status is not Status.FAIL:
            return True
        if plan.action is RecoveryAction.UNKNOWN:  # the API failed: the inspect gate reports it; a record this
            return True                           # read missed is never overwritten (write_rollout_record)
        return self.record(result)

    async def _write_rollout_record(self, snapshot: ServiceSnapshot, revision: str) -> bool:
        """The durable record of this release, on the service, before its first traffic change."""
        run_id, run_name_ = this_flow_run()
        record = RolloutRecord(service=self.svc.name, candidate=revision, tag=self.tag, before=snapshot.serving,
                               step=0, flow_run_id=str(run_id) if run_id else None, flow_run_name=run_name_,
                               started_at=datetime.now(UTC), process=this_process())
        try:
            await write_rollout_record(self.clients.cloudrun, self.svc.name, record, self.settings.deploy_timeout_s)
        except (StageError, ValueError) as exc:
            self.record(StageResult(name=Stage.TRAFFIC, status=Status.FAIL,
                                    summary=f"could not write the rollout record, so no traffic was moved: {exc}",
                                    criteria=[Criterion(name="Rollout record written", stage=Stage.TRAFFIC,
                                                        status=Status.FAIL, expected="the record on the service",
                                                        observed=str(exc))]))
            return False
        self.rollout = record
        return True

    async def _settle_rollout_record(self) -> None:
        """Remove the record after a passed release or a verified rollback; otherwise it stays for recovery."""
        if self.rollout is None:
            return
        released = any(s.name == Stage.RELEASE and s.status is Status.PASS for s in self.stages)
        if not (released or (self.rollback.performed and self.rollback.ok)):
            self.record(StageResult(name=Stage.ROLLOUT_RECORD, status=Status.WARN,
                                    summary=f"the rollout record stays on the service: `stagecheck recover --service "
                                            f"{self.svc.name}` (or the next validation) restores "
                                            f"{describe(self.rollout.before)}"))
            return
        error = await clear_rollout_record(self.clients.cloudrun, self.svc.name, self.settings.deploy_timeout_s)
        if error:
            self.record(StageResult(name=Stage.ROLLOUT_RECORD, status=Status.WARN,
                                    summary=f"the rollout record could not be removed ({error}): the next run or "
                                            "`stagecheck recover` would restore the split it recorded"))
        self.rollout = None

    async def _ensure_limit(self) -> None:
        """Create the service's concurrency limit when it is missing (an existing one is left as its owner
        set it). When the API refuses, the lock gate that follows fails the run with what to do."""
        try:
            await ensure_service_limits([self.svc.name], repair=False)
        except Exception as exc:  # the lock gate reports it; no traceback here
            get_run_logger().warning("could not create the concurrency limit %s: %s", limit_name(self.svc.name), exc)

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
        """The candidate revision, no traffic; a failed deploy puts the split back as it was (or says why not)."""
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

    async def _probe_tagged(self, snapshot: ServiceSnapshot, outcome: DeployOutcome, revision: str) -> bool:
        """The candidate answers on its tag URL before it gets any traffic (skipped when the tagged probe is off)."""
        if self.svc.health.tagged.mode == ProbeMode.OFF:
            return True
        self.starting(Stage.PROBE_TAGGED)
        tagged, notes = tagged_targets(self.settings, self.svc, self.tag, outcome.tag_url, snapshot.ingress,
                                       outcome.service_url)
        result = await gate_value(await probe_urls(self.clients.http, Stage.PROBE_TAGGED, tagged, self.settings.probes,
                                  tokens=self.clients.tokens, service=self.svc.name))
        self.last_probe_at = datetime.now(UTC)
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
            await run_smoke(list(self.svc.smoke), env, self.settings.repo_root)))

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

    async def _shift_and_probe(self, snapshot: ServiceSnapshot, revision: str, service_url: str | None) -> bool:
        """Straight or canary: shift a step, probe the serving URLs, hold; stop at the first failure."""
        targets, missing = serving_targets(self.settings, self.svc, service_url, snapshot.ingress)
        try:
            steps = plan_steps(snapshot.serving, revision, self.tag, self.traffic_plan) if snapshot.exists else [
                [TrafficTarget(revision=revision, percent=100, tag=self.tag)]]
        except ValueError as exc:  # a split Cloud Run would reject: decided before anything moves
            self.record(StageResult(name=Stage.TRAFFIC, status=Status.FAIL, summary=f"no valid traffic plan: {exc}",
                                    criteria=[Criterion(name="Traffic plan", stage=Stage.TRAFFIC, status=Status.FAIL,
                                                        expected="a valid split per step", observed=str(exc))]))
            await self._rollback_if_moved(False, revision, Stage.TRAFFIC)
            return False
        if snapshot.exists and snapshot.serving and not await self._write_rollout_record(snapshot, revision):
            self.rollback = Rollback(needed=False, message=f"traffic never moved: {describe(self.traffic_after)}")
            return False
        for number, split in enumerate(steps, start=1):
            percent = next((t.percent for t in split if t.revision == revision), 0)
            label = f"step {number}/{len(steps)}: {percent} %"
            if snapshot.exists:
                self.starting(f"traffic {percent}%")
                if self.rollout is not None:  # the record's step moves with the traffic, in the same request
                    self.rollout = self.rollout.at_step(percent)
                result, applied = await gate_value(await self._api(shift_traffic)(
                    self.clients.cloudrun, self.svc.name, split, self.settings.deploy_timeout_s, label,
                    record_annotation(self.rollout) if self.rollout is not None else None))
                if applied:
                    self.traffic_after = applied
                if not self.record(result):
                    await self._rollback_if_moved(True, revision, Stage.TRAFFIC)
                    return False
            else:
                self.record(StageResult(name=Stage.TRAFFIC, status=Status.PASS,
                                        summary=f"{label}: first deployment, the revision serves since creation",
                                        evidence=[Evidence(kind="traffic", summary=describe(split))]))
            self.starting(f"probe {percent}%")
            # the optional WebSocket exchange runs once the new revision serves everything
            websocket = websocket_target(self.svc, service_url, probe_audience(
                UrlKind.SERVICE, service_url, self.settings.probes)) if number == len(steps) else None
            result = await gate_value(await probe_urls(
                                      self.clients.http, Stage.PROBE_SERVING, targets, self.settings.probes,
                                      websocket=websocket, label=f"[{percent} %] ", tokens=self.clients.tokens,
                                      service=self.svc.name, unprobed=missing))
            self.last_probe_at = datetime.now(UTC)
            if not self.record(result):
                await self._rollback_if_moved(True, revision, Stage.PROBE_SERVING)
                return False
            last = number == len(steps)
            watch_s = self.traffic_plan.bake_s if last else self.traffic_plan.hold_s
            if watch_s:  # the canary holds (and the release bakes) under watch: probes and logs
                label = f"bake after {percent} %" if last else f"canary hold at {percent} %"
                analyse = self.settings.analysis is not None and analyses_window(self.settings.analysis, watch_s,
                                                                                    last=last)
                if not await self._bake(snapshot, revision, targets, watch_s, label, analyse=analyse):
                    return False
        return True

    async def _bake(self, snapshot: ServiceSnapshot, revision: str, targets: list[ProbeTarget], seconds: float,
                    label: str, analyse: bool = False) -> bool:
        """Watch the serving release for `seconds` (with the `analysis` stage beside the last bake, when
        configured); a failure seen during the watch rolls back at once."""
        self.starting(label)
        bake_over = asyncio.Event()  # a failed bake rolls back at once: the analysis' load stops with it
        judged = asyncio.create_task(self._analysis(snapshot, revision, seconds, bake_over, label)) if analyse else None
        result = await gate_value(await watch_release(
                                     self.clients.http, self.clients.logs, label=label, service=self.svc.name,
                                     revision=revision,
                                     previous_revision=snapshot.previous.name if snapshot.previous else None,
                                     since=self.revision_started or self.started_at, targets=targets,
                                     duration_s=seconds, interval_s=self.traffic_plan.bake_interval_s,
                                     probes=self.settings.probes, rules=self.settings.logs,
                                     tokens=self.clients.tokens, overlap_s=self.request_timeout_s))
        # the logs stage settles to the request log of the last probe the bake actually sent
        watched = BakeData.read(result.data)
        if watched is not None and watched.last_probe_at:
            self.last_probe_at = datetime.fromisoformat(watched.last_probe_at)
        baked = self.record(result)
        if not baked:
            bake_over.set()
        analysed = self.record(await judged) if judged is not None else True
        if not (baked and analysed):
            await self._rollback_if_moved(True, revision, Stage.BAKE if not baked else Stage.ANALYSIS)
            return False
        return True

    async def _analysis(self, snapshot: ServiceSnapshot, revision: str, seconds: float, stop: asyncio.Event,
                        label: str) -> StageResult:
        """The `analysis` stage (tasks/analysis.py): candidate vs the revision that served before, under load
        (the last bake, and canary holds long enough to decide: stagecheck.analysis.windows.analyses_window)."""
        from tasks.analysis import analyse_release  # scipy: loaded only when a run analyses

        assert self.settings.analysis is not None
        service_url = self.urls.get("service")
        return await gate_value(await analyse_release(
            self.clients.cloudrun, self.clients.http, service=self.svc.name,
            baseline_revision=snapshot.previous.name if snapshot.previous else None,
            candidate_url=self.urls.get("tagged"), audience=probe_audience(UrlKind.SERVICE, service_url,
                                                                         self.settings.probes),
            settings=self.settings.analysis, duration_s=seconds, timeout_s=self.settings.deploy_timeout_s,
            label=label, tokens=self.clients.tokens, stop=stop, reader=self.clients.logs, candidate_revision=revision))

    async def _smoke_token(self, service_url: str | None) -> dict[str, str]:
        """STAGECHECK_ID_TOKEN (audience: the service URL) for smoke commands against a private service."""
        if self.settings.probes.auth != ProbeAuth.ID_TOKEN or not service_url or self.clients.tokens is None:
            return {}
        try:
            return {"STAGECHECK_ID_TOKEN": await self.clients.tokens.token(service_url)}
        except StageError:  # the probes already proved minting works; a smoke command then sees no token
            return {}

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
    such a write answered 503 "database is locked" cost ~2 s of client back-off (see README, Performance)."""
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
