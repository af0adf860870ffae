"""The rollout bookkeeping: recover a killed release's record first, write the record before traffic
moves, shift traffic step by step with probes, canary holds and the bake, settle the record at the end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prefect import get_run_logger

from flows.endings import Endings
from flows.gates import gate_value
from stagecheck.analysis.windows import analyses_window
from stagecheck.concurrency import (
    ensure_service_limits,
    limit_name,
    this_flow_run,
)
from stagecheck.errors import StageError
from stagecheck.evidence import BakeData
from stagecheck.liveness import this_process
from stagecheck.model import (
    Criterion,
    Evidence,
    Rollback,
    StageResult,
    Status,
    TrafficTarget,
)
from stagecheck.probe_auth import probe_audience
from stagecheck.probe_targets import serving_targets, websocket_target
from stagecheck.prober import ProbeTarget
from stagecheck.rollout import RecoveryAction, RolloutRecord
from stagecheck.settings import (
    UrlKind,
)
from stagecheck.stages import Stage
from stagecheck.traffic import describe, plan_steps
from tasks.bake import watch_release
from tasks.inspect import ServiceSnapshot
from tasks.probe import probe_urls
from tasks.rollout import clear_rollout_record, record_annotation, recover_service, write_rollout_record
from tasks.traffic import shift_traffic


class RolloutSteps(Endings):
    """The traffic steps of a walk and the durable rollout record that makes them recoverable."""

    async def _ensure_limit(self) -> None:
        """Create the service's concurrency limit when it is missing (an existing one is left as its owner
        set it). When the API refuses, the lock gate that follows fails the run with what to do."""
        try:
            await ensure_service_limits([self.svc.name], repair=False)
        except Exception as exc:  # the lock gate reports it; no traceback here
            get_run_logger().warning("could not create the concurrency limit %s: %s", limit_name(self.svc.name), exc)

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
            sent_from = datetime.now(UTC)  # request logs are stamped at arrival (a held request: long before its end)
            result = await gate_value(await probe_urls(
                                      self.clients.http, Stage.PROBE_SERVING, targets, self.settings.probes,
                                      websocket=websocket, label=f"[{percent} %] ", tokens=self.clients.tokens,
                                      service=self.svc.name, unprobed=missing))
            self.last_probe_at = sent_from
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
        """The `analysis` stage (tasks/analysis.py): candidate vs the revision that served before (or its fresh
        copy, `self.control`), under load (the last bake, and canary holds long enough to decide:
        stagecheck.analysis.windows.analyses_window)."""
        from tasks.analysis import analyse_release  # scipy: loaded only when a run analyses

        assert self.settings.analysis is not None
        service_url = self.urls.get("service")
        return await gate_value(await analyse_release(
            self.clients.cloudrun, self.clients.http, service=self.svc.name,
            baseline_revision=self.control.revision if self.control else
            snapshot.previous.name if snapshot.previous else None, control=self.control,
            candidate_url=self.urls.get("tagged"), audience=probe_audience(UrlKind.SERVICE, service_url,
                                                                         self.settings.probes),
            settings=self.settings.analysis, duration_s=seconds, timeout_s=self.settings.deploy_timeout_s,
            label=label, tokens=self.clients.tokens, stop=stop, reader=self.clients.logs, candidate_revision=revision))

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
