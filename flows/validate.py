"""The staging validation flow: source -> image -> revision -> traffic -> verdict, per service.

The flow only orchestrates: each stage is a task in `tasks/`, the decisions live in `stagecheck/`
(pure functions), and the outside world is reached through `stagecheck/clients/`. It stops at the
first failed gate, rolls traffic back when it had moved, always reports, and ends Failed when a
verdict fails (fail closed).

Run: `python -m flows.validate --config stagecheck.toml [--sandbox]` or `stagecheck validate`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Annotated, TypeVar, cast
from uuid import UUID

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run
from prefect.states import Failed, State
from pydantic import Field, ValidationError

from flows.params import ValidationRequest
from stagecheck.concurrency import (
    ServiceLockError,
    ensure_service_limits,
    limit_name,
    lock_failed,
    service_slot,
)
from stagecheck.cost import estimate_revision_cost
from stagecheck.errors import StageError
from stagecheck.gitinfo import resolve_sha
from stagecheck.ingress import closed_by_ingress
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
from stagecheck.prober import ProbeTarget
from stagecheck.progress import progress
from stagecheck.redact import hold_secret_values, redact, redact_run_logs
from stagecheck.report import render_run_markdown
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
from stagecheck.traffic import describe, plan_steps, rollback_split
from stagecheck.verdict import collect_criteria, decide, required_stages
from stagecheck.verdict_events import emit, verdict_event
from tasks.bake import watch_release
from tasks.build import build_image
from tasks.common import Clients, FailedGate
from tasks.deploy import deploy_revision
from tasks.inspect import ServiceSnapshot, inspect_service
from tasks.logs import analyse_logs
from tasks.notify import notify_failure
from tasks.probe import probe_urls
from tasks.push import push_image
from tasks.report import publish_report
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


def required_for(settings: Settings, svc: ServiceConfig) -> tuple[str, ...]:
    """Pure: the stages whose PASS/WARN the verdict needs (a probe kind turned off is not required)."""
    stages = list(required_stages(dry_run=settings.dry_run))
    if not settings.dry_run:
        stages.insert(1, "inspect")
    if svc.health.tagged.mode == ProbeMode.OFF:
        stages = [s for s in stages if s != "probe-tagged"]
    if svc.health.service.mode == ProbeMode.OFF and (svc.health.lb.mode == ProbeMode.OFF or not settings.lb_url):
        stages = [s for s in stages if s != "probe-serving"]
    return tuple(stages)


def serving_targets(settings: Settings, svc: ServiceConfig, service_url: str | None,
                    ingress: str = "") -> tuple[list[ProbeTarget], list[Criterion]]:
    """Pure: probe targets for the direct service URL and the LB; a required URL nobody knows is a FAIL row,
    a URL the service's ingress closes is an advisory (WARN) row saying so, not probed."""
    targets: list[ProbeTarget] = []
    missing: list[Criterion] = []
    lb_url = f"{settings.lb_url}{svc.lb_prefix}{svc.health.lb.path}" if settings.lb_url else None
    direct = f"{service_url}{svc.health.service.path}" if service_url else None
    for kind, url in ((UrlKind.SERVICE, direct), (UrlKind.LB, lb_url)):
        check = svc.health.for_kind(kind)
        if check.mode == ProbeMode.OFF:
            continue
        closed = closed_by_ingress(ingress, kind)
        if closed is not None:
            missing.append(Criterion(name=f"{kind} URL healthy", stage="probe-serving", status=Status.WARN,
                                     expected=f"the {kind} URL answers ({check.mode})", observed=closed))
            continue
        if url is None:
            status = Status.FAIL if check.mode == ProbeMode.REQUIRED else Status.WARN
            missing.append(Criterion(name=f"{kind} URL healthy", stage="probe-serving", status=status,
                                     expected=f"a {kind} URL to probe ({check.mode})",
                                     observed="no URL known (lb_url not configured?)" if kind is UrlKind.LB
                                     else "the service has no URL"))
            continue
        targets.append(ProbeTarget(url=url, kind=kind, mode=check.mode,
                                   audience=probe_audience(kind, service_url, settings.probes)))
    return targets, missing


def tagged_targets(settings: Settings, svc: ServiceConfig, tag: str, tag_url: str | None,
                   ingress: str = "", service_url: str | None = None) -> tuple[list[ProbeTarget], list[Criterion]]:
    """Pure: the candidate's tag URL (unless the ingress closes it: an advisory row says so) and, when
    `lb_tag_url` is configured, the same tag through the load balancer (serverless NEG URL mask)."""
    check = svc.health.tagged
    targets: list[ProbeTarget] = []
    notes: list[Criterion] = []
    closed = closed_by_ingress(ingress, UrlKind.TAGGED)
    if closed is not None:
        notes.append(Criterion(name=f"{UrlKind.TAGGED} URL healthy", stage="probe-tagged", status=Status.WARN,
                               expected=f"the tag URL answers ({check.mode})", observed=closed))
    elif tag_url:
        targets.append(ProbeTarget(url=f"{tag_url}{check.path}", kind=UrlKind.TAGGED, mode=check.mode,
                                   audience=probe_audience(UrlKind.TAGGED, service_url, settings.probes)))
    via_lb = settings.lb_tag_target(tag, svc.name)
    if via_lb is not None and closed_by_ingress(ingress, UrlKind.LB) is None:
        url, headers = via_lb
        targets.append(ProbeTarget(url=f"{url}{check.path}", kind=UrlKind.TAGGED, mode=check.mode,
                                   headers=headers or None,
                                   audience=probe_audience(UrlKind.LB, service_url, settings.probes)))
    return targets, notes


def _add_advisories(result: StageResult, notes: list[Criterion], if_nothing: str) -> None:
    """Advisory rows (URLs closed by ingress) join the stage; a stage left with nothing probed WARNs, saying why."""
    if not notes:
        return
    result.criteria.extend(notes)
    if result.status is Status.SKIP:
        result.status = Status.WARN
        result.summary = f"{notes[0].observed}; {if_nothing}"


def websocket_target(svc: ServiceConfig, service_url: str | None, audience: str | None = None) -> ProbeTarget | None:
    """Pure: the WebSocket probe on the direct service URL, when the service has a websocket_path."""
    path = svc.health.websocket_path
    if not path or not service_url or svc.health.service.mode == ProbeMode.OFF:
        return None
    return ProbeTarget(url=f"{service_url}{path}", kind=UrlKind.SERVICE, mode=svc.health.service.mode,
                       audience=audience)


class ServiceValidation:
    """One service's walk through the stages. Holds what the run learned; every decision it makes is
    delegated to the pure functions, every action to a task."""

    def __init__(self, settings: Settings, svc: ServiceConfig, clients: Clients, git_sha: str | StageError,
                 traffic_plan: TrafficPlan, git_ref: str | None = None) -> None:
        self.settings, self.svc, self.clients = settings, svc, clients
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
        self.rollout: RolloutRecord | None = None  # the record on the service while traffic may be moved

    @property
    def tag(self) -> str:
        return f"sc-{self.git_sha[:7]}"

    @property
    def repository(self) -> str:
        return f"{self.settings.registry}/{self.svc.repository}"

    def record(self, result: StageResult) -> bool:
        """Keep a stage result; True when its gate passed."""
        self.stages.append(result)
        progress().stage_finished(self.svc.name, result)
        return result.status is not Status.FAIL

    def starting(self, stage: str) -> None:
        progress().stage_started(self.svc.name, stage)

    async def run(self, syntax: StageResult) -> ServiceReport:
        with tags(f"service:{self.svc.name}"):
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
                self.record(syntax)
                self.record(lock_failed(self.svc.name, exc))
                image, revision = None, None
        return self._report(image, revision)

    async def _recover_first(self) -> bool:
        """Before anything else: a rollout record a killed release left on the service is recovered (the
        recorded split restored), so this run's baseline is the release before the killed one. False when it
        could not be (the run stops: nothing moves over an unknown split)."""
        if self.settings.dry_run:
            return True
        result, plan = await gate_value(await recover_service(self.clients.cloudrun, self.svc.name,
                                                              self.settings.deploy_timeout_s, _current_run()[0]))
        if plan.action is RecoveryAction.NOTHING and result.status is not Status.FAIL:
            return True
        if plan.action is RecoveryAction.UNKNOWN:  # the API failed: the inspect gate reports it; a record this
            return True                           # read missed is never overwritten (write_rollout_record)
        return self.record(result)

    async def _write_rollout_record(self, snapshot: ServiceSnapshot, revision: str) -> bool:
        """The durable record of this release, on the service, before its first traffic change."""
        run_id, run_name_ = _current_run()
        record = RolloutRecord(service=self.svc.name, candidate=revision, tag=self.tag, before=snapshot.serving,
                               step=0, flow_run_id=str(run_id) if run_id else None, flow_run_name=run_name_,
                               started_at=datetime.now(UTC))
        try:
            await write_rollout_record(self.clients.cloudrun, self.svc.name, record, self.settings.deploy_timeout_s)
        except (StageError, ValueError) as exc:
            self.record(StageResult(name="traffic", status=Status.FAIL,
                                    summary=f"could not write the rollout record, so no traffic was moved: {exc}",
                                    criteria=[Criterion(name="Rollout record written", stage="traffic",
                                                        status=Status.FAIL, expected="the record on the service",
                                                        observed=str(exc))]))
            return False
        self.rollout = record
        return True

    async def _settle_rollout_record(self) -> None:
        """Remove the record after a passed release or a verified rollback; otherwise it stays for recovery."""
        if self.rollout is None:
            return
        released = any(s.name == "release" and s.status is Status.PASS for s in self.stages)
        if not (released or (self.rollback.performed and self.rollback.ok)):
            self.record(StageResult(name="rollout-record", status=Status.WARN,
                                    summary=f"the rollout record stays on the service: `stagecheck recover --service "
                                            f"{self.svc.name}` (or the next validation) restores "
                                            f"{describe(self.rollout.before)}"))
            return
        error = await clear_rollout_record(self.clients.cloudrun, self.svc.name, self.settings.deploy_timeout_s)
        if error:
            self.record(StageResult(name="rollout-record", status=Status.WARN,
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
        if not self.record(syntax):
            return None, None
        if self.git_error is not None:
            self.record(StageResult(name="build", status=Status.FAIL, summary=str(self.git_error),
                                    criteria=[Criterion(name="Commit identified", stage="build", status=Status.FAIL,
                                                        expected="a clean checkout of the commit",
                                                        observed=str(self.git_error))]))
            return None, None
        if self.settings.dry_run:  # no API contact at all: build only
            snapshot = ServiceSnapshot(exists=False)
        else:
            self.starting("inspect")
            result, self.snapshot = await gate_value(await inspect_service(self.clients.cloudrun, self.svc.name))
            if not self.record(result) or self.snapshot is None:
                return None, None
            snapshot = self.snapshot
            self.traffic_after = list(snapshot.traffic)

        self.starting("build")
        result, image = await gate_value(await build_image(
            self.clients.images, self.svc, self.repository, self.git_sha, self.settings.extra_tags))
        if not self.record(result) or image is None or self.settings.dry_run:
            return image, None

        self.starting("push")
        pushed = await gate_value(await push_image(self.clients.images, image, self.repository, snapshot.image))
        result, image = pushed
        if not self.record(result) or image.pinned is None:
            return image, None

        self.starting("deploy")
        result, outcome = await gate_value(await deploy_revision(
            self.clients.cloudrun, self.settings, self.svc, image=image.pinned, git_sha=self.git_sha, tag=self.tag, snapshot=snapshot))
        revision = outcome.revision
        if revision is not None:
            self.revision_started = revision.created_at or outcome.started_at
        if outcome.traffic:
            self.traffic_after = outcome.traffic
        if outcome.service_url:
            self.urls["service"] = outcome.service_url
        if outcome.tag_url:
            self.urls["tagged"] = outcome.tag_url
        if self.settings.lb_url:
            self.urls["lb"] = f"{self.settings.lb_url}{self.svc.lb_prefix}"
        if not self.record(result) or revision is None:
            if outcome.traffic_moved:
                self.rollback = Rollback(needed=True, performed=False, ok=False,
                                         message="first deployment: nothing served before, nothing to restore")
            else:
                self.rollback = Rollback(needed=False, message=f"traffic never moved: {describe(self.traffic_after)}")
                if snapshot.exists and outcome.revision is not None:
                    await self._clean_up_failed_deploy(snapshot, outcome.revision.name)
            return image, revision

        moved = outcome.traffic_moved
        if self.svc.health.tagged.mode != ProbeMode.OFF:
            self.starting("probe-tagged")
            tagged, notes = tagged_targets(self.settings, self.svc, self.tag, outcome.tag_url, snapshot.ingress,
                                           outcome.service_url)
            result = await gate_value(await probe_urls(self.clients.http, "probe-tagged", tagged, self.settings.probes,
                                      tokens=self.clients.tokens, service=self.svc.name))
            self.last_probe_at = datetime.now(UTC)
            _add_advisories(result, notes, "the candidate was not probed before traffic (set lb_tag_url to "
                                           "probe its tag through the load balancer)")
            if not self.record(result):
                await self._rollback_if_moved(moved, revision.name, "probe-tagged")
                return image, revision

        gate_ok = await self._shift_and_probe(snapshot, revision.name, outcome.service_url)
        if gate_ok:
            env = {"STAGECHECK_BASE_URL": outcome.service_url or "", "STAGECHECK_TAG_URL": outcome.tag_url or "",
                   "STAGECHECK_LB_URL": self.urls.get("lb", ""), "STAGECHECK_REVISION": revision.name,
                   "STAGECHECK_SERVICE": self.svc.name}
            if self.svc.smoke:
                self.starting("smoke")
                env.update(await self._smoke_token(outcome.service_url))
                gate_ok = self.record(await gate_value(
                    await run_smoke(list(self.svc.smoke), env, self.settings.repo_root)))
        if gate_ok:
            self.starting("logs")
            previous = snapshot.previous.name if snapshot.previous else None
            result = await gate_value(await analyse_logs(
                                        self.clients.logs, service=self.svc.name, revision=revision.name,
                                        previous_revision=previous,
                                        start=revision.created_at or outcome.started_at or self.started_at,
                                        last_probe_at=self.last_probe_at, rules=self.settings.logs,
                                        probes=self.settings.probes))
            gate_ok = self.record(result)
        if not gate_ok:
            failed = next(s.name for s in reversed(self.stages) if s.status is Status.FAIL)
            await self._rollback_if_moved(True, revision.name, failed)
        else:
            await self._finish_release(revision.name)
        return image, revision

    async def _finish_release(self, revision: str) -> None:
        """A passed release leaves the service as a person expects: LATEST=100 (after_pass "latest") or the
        candidate pinned, and only the newest few of stagecheck's own tags."""
        self.starting("release")
        plan = self.traffic_plan
        result, applied = await gate_value(await finish_release(
            self.clients.cloudrun, self.svc.name, self.traffic_after, revision, self.tag, plan.after_pass,
            plan.keep_tags, self.settings.deploy_timeout_s))
        if applied:
            self.traffic_after = applied
        if not self.record(result):
            await self._rollback_if_moved(True, revision, "release")

    async def _clean_up_failed_deploy(self, snapshot: ServiceSnapshot, candidate: str) -> None:
        """The failed candidate must not stay a traffic target: restore the split as it was configured
        (LATEST stays LATEST: the failed revision never becomes Ready), minus targets that are not Ready."""
        self.starting("rollback")
        remembered = snapshot.traffic or snapshot.serving
        result, applied = await gate_value(await restore_after_failed_deploy(
            self.clients.cloudrun, self.svc.name, remembered, candidate, self.tag, self.traffic_plan.keep_tags,
            self.settings.deploy_timeout_s))
        self.record(result)
        if applied:
            self.traffic_after = applied
        self.rollback = Rollback(needed=False, performed=True, ok=result.status is Status.PASS, restored=applied,
                                 message=f"traffic never moved; {result.summary}")

    async def _shift_and_probe(self, snapshot: ServiceSnapshot, revision: str, service_url: str | None) -> bool:
        """Straight or canary: shift a step, probe the serving URLs, hold; stop at the first failure."""
        targets, missing = serving_targets(self.settings, self.svc, service_url, snapshot.ingress)
        try:
            steps = plan_steps(snapshot.serving, revision, self.tag, self.traffic_plan) if snapshot.exists else [
                [TrafficTarget(revision=revision, percent=100, tag=self.tag)]]
        except ValueError as exc:  # a split Cloud Run would reject: decided before anything moves
            self.record(StageResult(name="traffic", status=Status.FAIL, summary=f"no valid traffic plan: {exc}",
                                    criteria=[Criterion(name="Traffic plan", stage="traffic", status=Status.FAIL,
                                                        expected="a valid split per step", observed=str(exc))]))
            await self._rollback_if_moved(False, revision, "traffic")
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
                result, applied = await gate_value(await shift_traffic(
                    self.clients.cloudrun, self.svc.name, split, self.settings.deploy_timeout_s, label,
                    record_annotation(self.rollout) if self.rollout is not None else None))
                if applied:
                    self.traffic_after = applied
                if not self.record(result):
                    await self._rollback_if_moved(True, revision, "traffic")
                    return False
            else:
                self.record(StageResult(name="traffic", status=Status.PASS,
                                        summary=f"{label}: first deployment, the revision serves since creation",
                                        evidence=[Evidence(kind="traffic", summary=describe(split))]))
            self.starting(f"probe {percent}%")
            # the optional WebSocket exchange runs once the new revision serves everything
            websocket = websocket_target(self.svc, service_url, probe_audience(
                UrlKind.SERVICE, service_url, self.settings.probes)) if number == len(steps) else None
            result = await gate_value(await probe_urls(
                                      self.clients.http, "probe-serving", targets, self.settings.probes,
                                      websocket=websocket, label=f"[{percent} %] ", tokens=self.clients.tokens,
                                      service=self.svc.name, unprobed=missing))
            self.last_probe_at = datetime.now(UTC)
            if not self.record(result):
                await self._rollback_if_moved(True, revision, "probe-serving")
                return False
            last = number == len(steps)
            watch_s = self.traffic_plan.bake_s if last else self.traffic_plan.hold_s
            if watch_s:  # the canary holds (and the release bakes) under watch: probes and logs
                label = f"bake after {percent} %" if last else f"canary hold at {percent} %"
                if not await self._bake(snapshot, revision, targets, watch_s, label):
                    return False
        return True

    async def _bake(self, snapshot: ServiceSnapshot, revision: str, targets: list[ProbeTarget], seconds: float,
                    label: str) -> bool:
        """Watch the serving release for `seconds`; a failure seen during the watch rolls back at once."""
        self.starting(label)
        result = await gate_value(await watch_release(
                                     self.clients.http, self.clients.logs, label=label, service=self.svc.name,
                                     revision=revision,
                                     previous_revision=snapshot.previous.name if snapshot.previous else None,
                                     since=self.revision_started or self.started_at, targets=targets,
                                     duration_s=seconds, interval_s=self.traffic_plan.bake_interval_s,
                                     probes=self.settings.probes, rules=self.settings.logs,
                                     tokens=self.clients.tokens))
        # the logs stage settles to the request log of the last probe the bake actually sent
        sent = result.data.get("last_probe_at") if isinstance(result.data, dict) else None
        if sent:
            self.last_probe_at = datetime.fromisoformat(sent)
        if not self.record(result):
            await self._rollback_if_moved(True, revision, "bake")
            return False
        return True

    async def _smoke_token(self, service_url: str | None) -> dict[str, str]:
        """STAGECHECK_ID_TOKEN (audience: the service URL) for smoke commands against a private service."""
        if self.settings.probes.auth != ProbeAuth.ID_TOKEN or not service_url or self.clients.tokens is None:
            return {}
        try:
            return {"STAGECHECK_ID_TOKEN": await self.clients.tokens.token(service_url)}
        except StageError:  # the probes already proved minting works; a smoke command then sees no token
            return {}

    async def _rollback_if_moved(self, moved: bool, revision: str, failed_stage: str) -> None:
        snapshot = self.snapshot
        if self.rollback.performed:
            return
        if not moved:
            self.rollback = Rollback(needed=False, message=f"traffic never moved: {describe(self.traffic_after)}")
            return
        if snapshot is None or not snapshot.exists or not snapshot.serving:
            self.rollback = Rollback(needed=True, performed=False, ok=False,
                                     message=f"{failed_stage} failed on a first deployment: nothing served before, "
                                             "nothing to restore; the new revision keeps serving")
            return
        restore = rollback_split(snapshot.serving, revision, self.tag)
        self.starting("rollback")
        result, applied = await gate_value(await rollback_traffic(self.clients.cloudrun, self.svc.name, restore,
                                                 self.settings.deploy_timeout_s, failed_stage))
        self.record(result)
        if applied:
            self.traffic_after = applied
        ok = result.status is Status.PASS
        message = result.summary if ok else (f"rollback FAILED: {result.summary}; where traffic is now is unknown: "
                                             "check the service before the next release")
        self.rollback = Rollback(needed=True, performed=True, ok=ok, restored=applied, message=message)

    def _report(self, image: ImageInfo | None, revision: RevisionInfo | None) -> ServiceReport:
        required = required_for(self.settings, self.svc)
        if self.traffic_plan.bake_s and not self.settings.dry_run:  # the bake window must have watched
            required = (*required, "bake")
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
        )


def _current_run() -> tuple[UUID | None, str | None]:
    """(id, name) of the flow run this code runs in, or (None, None)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None, None
    return context.flow_run.id, context.flow_run.name


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


def _initial_run_name() -> str:
    """The name a run starts with, from its parameters (renamed once the config and commit are known)."""
    params = flow_run.parameters or {}
    return run_name(list(params.get("services") or []), params.get("git_sha"))


async def _rename_run(name: str) -> None:
    """Give the running flow run its final name (service and resolved SHA) through the API."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.name == name:
        return
    async with get_client() as client:
        await client.update_flow_run(context.flow_run.id, name=name)
    context.flow_run.name = name


@flow(name="stagecheck-validate", log_prints=False, persist_result=False, flow_run_name=_initial_run_name)
async def validate(
    config: str = "stagecheck.toml",
    services: list[str] | None = None,
    git_sha: str | None = None,
    git_ref: str | None = None,
    traffic_steps: list[int] | None = None,
    canary_hold_s: Annotated[float | None, Field(ge=0)] = None,
    bake_s: Annotated[float | None, Field(ge=0)] = None,
    dry_run: bool = False,
    sandbox: bool = False,
    state_dir: str = ".stagecheck",
) -> list[dict[str, str]] | State:
    """Validate a release on Cloud Run staging: build, push, deploy with no traffic, probe, shift
    traffic, read logs, decide with evidence; roll back on a failed gate. Fails when a verdict fails.

    Flat parameters (the UI's run form, `prefect deployment run --param git_sha=...`, and triggers that
    set only `git_sha` and `git_ref`): the fields of `flows.params.ValidationRequest`, described alike.

    Args:
        config: Path of the stagecheck.toml (relative to the working directory)
        services: Cloud Run services to validate; empty means every service in the config
        git_sha: Commit to validate (checked against the checkout); empty means HEAD
        git_ref: Branch or ref the commit came from (shown in the report)
        traffic_steps: Override the traffic plan: percent to the new revision per step, e.g. [10, 50, 100]
        canary_hold_s: Override the wait after each canary step (seconds)
        bake_s: Override the bake window after the last step (seconds)
        dry_run: Check syntax and build the image only; deploy nothing
        sandbox: Target the local sandbox (endpoints from STATE_DIR/sandbox.json)
        state_dir: Where the sandbox writes sandbox.json
    """
    logger = get_run_logger()
    try:
        request = ValidationRequest(config=config, services=services or [], git_sha=git_sha, git_ref=git_ref,
                                    traffic_steps=traffic_steps, canary_hold_s=canary_hold_s, bake_s=bake_s,
                                    dry_run=dry_run, sandbox=sandbox, state_dir=state_dir)
        settings = request.load()
        chosen = [settings.service(name) for name in request.services] or list(settings.services)
        check_sources(settings, chosen)  # the build inputs exist, before any stage
    except (ConfigError, ValidationError) as exc:  # bad input: a Failed run, the readable message, no traceback
        logger.error("%s", exc)
        return Failed(message=str(exc))
    hold_secret_values(secret_values(settings, os.environ))  # every output masks them from here on
    redact_run_logs()
    traffic_override = (request.traffic_steps is not None or request.canary_hold_s is not None
                        or request.bake_s is not None)

    # once per run, recorded per service
    syntax = await gate_value(await check_syntax(settings.repo_root, settings.syntax))
    clients = Clients.from_settings(settings)
    commit: str | StageError
    try:
        commit = resolve_sha(settings.repo_root, settings.git_sha, tuple(s.source_dir for s in chosen))
    except StageError as exc:
        commit = exc
    await _rename_run(run_name([s.name for s in chosen], commit if isinstance(commit, str) else settings.git_sha))
    logger = get_run_logger()  # its lines carry the new name
    try:
        reports = list(await asyncio.gather(*(
            ServiceValidation(settings, svc, clients, commit,
                              settings.traffic if traffic_override else settings.traffic_for(svc),
                              request.git_ref).run(syntax)
            for svc in chosen)))
    finally:
        await clients.aclose()

    paths = []
    for report in reports:
        path = await publish_report(report, settings.report_dir)
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


def main(argv: list[str] | None = None) -> int:
    from stagecheck.commands.validate import main as cli_main

    return cli_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
