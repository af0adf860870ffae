"""The sandbox's Cloud Run control plane: services, revisions, rollouts and long-running operations.

Handlers validate and record the new spec synchronously (so errors come back on the call), then a
rollout task starts the new revision, waits for it to be ready and applies the traffic; the
operation completes when that rollout settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random
from typing import Any, Protocol

from sandbox import model
from sandbox.errors import ApiError
from sandbox.instances import DEFAULT_MAX_INSTANCES, RevisionInstance, StartFailure
from sandbox.runlog import RunLog
from sandbox.runtime import DockerRuntime


@dataclass
class Behavior:
    """Per-service sandbox behaviour (not part of the Cloud Run API)."""

    cold_start_hold_s: float = 10.0
    scale_to_zero_after_s: float | None = None
    # after an update, traffic_statuses (and the proxies) keep the old split this long while `reconciling`
    reconcile_delay_s: float = 0.2
    warm_instances: int = 2  # instances a rollout starts per revision (capped by maxInstanceCount)
    queue_timeout_s: float = 60.0  # a request waits this long for a free instance, then 429


@dataclass(frozen=True)
class SandboxConfig:
    project: str = "stagecheck-sandbox"
    region: str = "europe-west1"
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    startup_timeout_s: float = 240.0
    cold_start_hold_s: float = 10.0
    reap_interval_s: float = 0.2


class Listeners(Protocol):
    """The proxy side: per-service and per-tag URLs."""

    async def open_service(self, service: str) -> str: ...
    async def open_tag(self, service: str, tag: str) -> str: ...
    async def close_tag(self, service: str, tag: str) -> None: ...
    async def close_service(self, service: str) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class Orchestrator:
    def __init__(
        self,
        config: SandboxConfig,
        runtime: DockerRuntime,
        log: RunLog,
        listeners: Listeners,
        rng: Random | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.log = log
        self.listeners = listeners
        self.rng = rng or Random()
        self.clock = clock
        self.services: dict[str, model.Service] = {}
        self.revisions: dict[str, dict[str, model.Revision]] = {}
        self.instances: dict[tuple[str, str], RevisionInstance] = {}
        self.operations: dict[str, model.Operation] = {}
        self.behaviors: dict[str, Behavior] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ lookups

    def check_location(self, project: str, location: str) -> None:
        if project != self.config.project:
            raise ApiError(403, f"Permission denied on project '{project}' (this sandbox serves project "
                           f"'{self.config.project}').")
        if location != self.config.region:
            raise ApiError(404, f"Location '{location}' is not served by this sandbox (region "
                           f"'{self.config.region}').")

    def service(self, project: str, location: str, service_id: str) -> model.Service:
        self.check_location(project, location)
        svc = self.services.get(service_id)
        if svc is None:
            raise ApiError(404, f"Resource '{service_id}' of kind 'SERVICE' in region '{location}' in project "
                           f"'{project}' does not exist.")
        return svc

    def revision(self, project: str, location: str, service_id: str, name: str) -> model.Revision:
        self.service(project, location, service_id)
        rev = self.revisions[service_id].get(name)
        if rev is None:
            raise ApiError(404, f"Resource '{name}' of kind 'REVISION' in region '{location}' in project "
                           f"'{project}' does not exist.")
        return rev

    def behavior(self, service_id: str) -> Behavior:
        return self.behaviors.setdefault(service_id, Behavior(cold_start_hold_s=self.config.cold_start_hold_s))

    def instance(self, service_id: str, revision: str) -> RevisionInstance | None:
        return self.instances.get((service_id, revision))

    def log_uri(self, svc: model.Service, revision: str) -> str:
        return (f"https://console.cloud.google.com/logs/viewer?project={svc.project}&resource=cloud_run_revision"
                f"/service_name/{svc.service_id}/revision_name/{revision}")

    def service_json(self, svc: model.Service) -> dict[str, Any]:
        return model.service_to_json(svc)

    def revision_json(self, svc: model.Service, rev: model.Revision) -> dict[str, Any]:
        return model.revision_to_json(svc, rev, self.log_uri(svc, rev.name))

    def operation(self, project: str, location: str, op_id: str) -> model.Operation:
        self.check_location(project, location)
        op = self.operations.get(self._op_name(op_id))
        if op is None:
            raise ApiError(404, f"Operation '{op_id}' not found.")
        return op

    def _op_name(self, op_id: str) -> str:
        return f"projects/{self.config.project}/locations/{self.config.region}/operations/{op_id}"

    def _new_operation(self, metadata: dict[str, Any] | None) -> model.Operation:
        op = model.Operation(self._op_name(str(uuid.uuid4())), metadata=metadata)
        self.operations[op.name] = op
        return op

    # ------------------------------------------------------------ services

    async def create_service(self, project: str, location: str, service_id: str, body: dict[str, Any]) -> model.Operation:
        self.check_location(project, location)
        model.validate_service_id(service_id)
        if service_id in self.services:
            raise ApiError(409, f"Resource '{service_id}' already exists.")
        spec = model.service_spec_from_json(body)
        now = self.clock()
        svc = model.Service(project, location, service_id, str(uuid.uuid4()), spec, now, now, generation=1)
        self._validate_spec(svc, spec)
        revision = self._plan_revision(svc, spec["template"], set())
        model.validate_traffic(model.parse_traffic(spec.get("traffic")), {revision.name}, service_id)
        svc.uri = await self.listeners.open_service(service_id)
        self.services[service_id] = svc
        self.revisions[service_id] = {}
        self._add_revision(svc, revision)
        self.log.system(service_id, None, "INFO", f"Service {service_id} created.")
        return self._launch_rollout(svc, revision)

    async def update_service(
        self, project: str, location: str, service_id: str, body: dict[str, Any], update_mask: str | None,
        allow_missing: bool,
    ) -> model.Operation:
        self.check_location(project, location)
        if service_id not in self.services and allow_missing:
            return await self.create_service(project, location, service_id, body)
        svc = self.service(project, location, service_id)
        etag = body.get("etag")
        if etag and etag != svc.etag:
            raise ApiError(409, f"The service '{service_id}' was modified since it was read (etag mismatch).",
                           status="ABORTED")
        incoming = model.service_spec_from_json(body)
        spec = model.apply_update_mask(svc.spec, incoming, update_mask)
        self._validate_spec(svc, spec, previous=svc.spec)
        existing = self.revisions[service_id]
        # A template naming an existing revision must carry that revision's configuration, whatever the
        # mask says (google-cloud-python#14259 got this 409 with a scaling-only mask); the same name with
        # the same configuration makes no new revision.
        for tpl in (incoming["template"], spec["template"]):
            named = tpl.get("revision")
            if named and named in existing and existing[named].template != tpl:
                raise model.revision_conflict(named)
        revision: model.Revision | None = None
        requested_name = spec["template"].get("revision")
        if (requested_name not in existing) if requested_name else model.template_changed(
            svc.spec.get("template") or {}, spec["template"]
        ):
            revision = self._plan_revision(svc, spec["template"], set(existing), generation=svc.generation + 1)
        known = set(existing) | ({revision.name} if revision is not None else set())
        targets = model.parse_traffic(spec.get("traffic"))
        model.validate_traffic(targets, known, service_id)
        for i, target in enumerate(targets):
            if target.revision in existing and existing[target.revision].phase == "FAILED":
                # a stale target to a failed revision (e.g. a tag left by a failed deploy) fails every later
                # update with that revision's error, as on Cloud Run
                failed = existing[target.revision]
                raise ApiError(400, model.revision_not_ready_message(target.revision, failed.ready.message),
                               field=f"service.traffic[{i}].revision", status="FAILED_PRECONDITION")
        svc.spec = spec
        svc.generation += 1
        svc.update_time = self.clock()
        if revision is not None:
            self._add_revision(svc, revision)
        return self._launch_rollout(svc, revision)

    async def delete_service(self, project: str, location: str, service_id: str) -> model.Operation:
        svc = self.service(project, location, service_id)
        del self.services[service_id]
        revisions = self.revisions.pop(service_id, {})
        instances = [self.instances.pop((service_id, name)) for name in revisions if (service_id, name) in self.instances]
        await asyncio.gather(*(inst.stop("service deleted") for inst in instances))
        for tag in list(svc.tag_uris):
            await self.listeners.close_tag(service_id, tag)
        await self.listeners.close_service(service_id)
        self.log.system(service_id, None, "INFO", f"Service {service_id} deleted.")
        op = self._new_operation(model.with_type(model.SERVICE_TYPE, self.service_json(svc)))
        op.done = True
        op.response = model.with_type(model.SERVICE_TYPE, self.service_json(svc))
        return op

    def list_services(self, project: str, location: str) -> list[model.Service]:
        self.check_location(project, location)
        return sorted(self.services.values(), key=lambda s: s.service_id)

    # ------------------------------------------------------------ revisions

    def list_revisions(self, project: str, location: str, service_id: str) -> list[model.Revision]:
        self.service(project, location, service_id)
        return sorted(self.revisions[service_id].values(), key=lambda r: (r.generation, r.create_time), reverse=True)

    async def delete_revision(self, project: str, location: str, service_id: str, name: str) -> model.Operation:
        rev = self.revision(project, location, service_id, name)
        svc = self.services[service_id]
        if name in model.serving_revisions(svc.traffic_statuses) or any(
            t.revision == name for t in svc.traffic
        ):
            raise ApiError(400, f"Revision '{name}' is receiving traffic (or holds a tag) and cannot be deleted.",
                           status="FAILED_PRECONDITION")
        if rev.phase == "PENDING":
            raise ApiError(400, f"Revision '{name}' is still being deployed.", status="FAILED_PRECONDITION")
        inst = self.instances.pop((service_id, name), None)
        if inst is not None:
            await inst.stop("revision deleted")
        del self.revisions[service_id][name]
        if svc.latest_ready == name:
            svc.latest_ready = ""
        payload = model.with_type(model.REVISION_TYPE, self.revision_json(svc, rev))
        op = self._new_operation(payload)
        op.done = True
        op.response = payload
        return op

    # ------------------------------------------------------------ planning (synchronous, validating)

    def _validate_spec(self, svc: model.Service, spec: dict[str, Any],
                       previous: dict[str, Any] | None = None) -> None:
        """Raises ApiError naming the field. Service annotations in reserved namespaces are rejected
        "in new resources": ones the stored service already carries may stay."""
        model.validate_metadata(spec.get("labels") or {}, "service.labels")
        model.validate_annotations(spec.get("annotations") or {}, "service.annotations",
                                allowed=set((previous or {}).get("annotations") or {}))
        model.validate_template(spec["template"])
        model.container_spec(spec["template"])
        if "ingress" in spec:
            spec["ingress"] = model.parse_ingress(spec["ingress"])

    def _plan_revision(
        self, svc: model.Service, template: dict[str, Any], existing: set[str], generation: int | None = None
    ) -> model.Revision:
        gen = generation or svc.generation
        counter = svc.revision_counter + 1
        requested = template.get("revision")
        if requested:
            model.validate_revision_name(svc.service_id, requested)
            name = requested
        else:
            name = model.new_revision_name(svc.service_id, counter, self.rng)
            while name in existing:
                name = model.new_revision_name(svc.service_id, counter, self.rng)
        now = self.clock()
        return model.Revision(name, svc.service_id, str(uuid.uuid4()), gen, template, now, now)

    def _add_revision(self, svc: model.Service, rev: model.Revision) -> None:
        svc.revision_counter += 1
        svc.latest_created = rev.name
        self.revisions[svc.service_id][rev.name] = rev
        scaling = rev.template.get("scaling") or {}
        self.instances[(svc.service_id, rev.name)] = RevisionInstance(
            service=svc.service_id, revision=rev.name, spec=model.container_spec(rev.template), runtime=self.runtime,
            log=self.log, startup_timeout_s=self.config.startup_timeout_s,
            max_instances=model.as_int(scaling.get("maxInstanceCount"), "scaling.maxInstanceCount")
            or DEFAULT_MAX_INSTANCES,
            concurrency=model.as_int(rev.template.get("maxInstanceRequestConcurrency"),
                                     "maxInstanceRequestConcurrency") or 80,
            warm_instances=self.behavior(svc.service_id).warm_instances,
            request_timeout_s=model.parse_duration_s(rev.template.get("timeout", "300s"), "timeout"),
        )
        self.log.system(svc.service_id, rev.name, "INFO", f"Created revision {rev.name}.")

    def _launch_rollout(self, svc: model.Service, revision: model.Revision | None) -> model.Operation:
        svc.reconciling = True
        svc.terminal = model.Condition("Ready", "CONDITION_RECONCILING", last_transition=self.clock())
        self._pending[svc.service_id] = self._pending.get(svc.service_id, 0) + 1
        op = self._new_operation(model.with_type(model.SERVICE_TYPE, self.service_json(svc)))
        task = asyncio.create_task(self._rollout(svc, revision, svc.generation, op))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op

    # ------------------------------------------------------------ rollout (background)

    async def _rollout(self, svc: model.Service, revision: model.Revision | None, generation: int, op: model.Operation) -> None:
        lock = self._locks.setdefault(svc.service_id, asyncio.Lock())
        try:
            async with lock:
                failure = await self._settle(svc, revision)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the sandbox is shutting down
            failure = "The rollout was cancelled (its revision was stopped)."  # e.g. the service was deleted
        except Exception as exc:  # never leave an operation hanging
            failure = f"Internal sandbox error: {exc}"
        finally:
            self._pending[svc.service_id] -= 1
        if self.services.get(svc.service_id) is not svc:
            op.done, op.error = True, ApiError(409, f"Service '{svc.service_id}' was deleted during the rollout.",
                                                status="ABORTED")
            return
        now = self.clock()
        svc.observed_generation = max(svc.observed_generation, generation)
        svc.reconciling = self._pending[svc.service_id] > 0
        svc.update_time = now
        if failure is None:
            svc.terminal = model.Condition("Ready", "CONDITION_SUCCEEDED", last_transition=now)
            op.response = model.with_type(model.SERVICE_TYPE, self.service_json(svc))
        else:
            svc.terminal = model.Condition("Ready", "CONDITION_FAILED", failure, "REVISION_FAILED", last_transition=now)
            op.error = ApiError(400, failure, status="FAILED_PRECONDITION")
        op.done = True

    async def _settle(self, svc: model.Service, revision: model.Revision | None) -> str | None:
        if revision is not None:
            inst = self.instances[(svc.service_id, revision.name)]
            failure = await inst.start()
            now = self.clock()
            revision.update_time = now
            if failure is not None:
                revision.phase = "FAILED"
                revision.ready = model.Condition("Ready", "CONDITION_FAILED", failure.message, failure.reason,
                                                 "revisionReason", now)
                self.log.ready_changed(svc.service_id, revision.name, False, failure.message)
                return model.revision_not_ready_message(revision.name, failure.message)
            revision.phase = "READY"
            revision.ready = model.Condition("Ready", "CONDITION_SUCCEEDED", last_transition=now)
            took = (now - revision.create_time).total_seconds()
            self.log.ready_changed(svc.service_id, revision.name, True, f"Deploying revision succeeded in {took:.2f}s.")
            svc.latest_ready = revision.name
        return await self._apply_traffic(svc)

    async def _apply_traffic(self, svc: model.Service) -> str | None:
        if self.services.get(svc.service_id) is not svc:
            return "The service was deleted during the rollout."
        statuses = model.resolve_traffic(svc.traffic, svc.latest_ready or None)
        serving = model.serving_revisions(statuses)
        starts = [self.instances[(svc.service_id, name)].start() for name in sorted(serving)
                  if (svc.service_id, name) in self.instances]
        failures: list[StartFailure | None] = list(await asyncio.gather(*starts))
        failed = next((f for f in failures if f is not None), None)
        if failed is not None:
            return f"A revision in the traffic split could not be started: {failed.message}"
        # the modelled propagation delay itself (not a wait for a condition): until it passes, the service
        # reports `reconciling` with the old traffic_statuses and the proxies route by the old split
        await asyncio.sleep(self.behavior(svc.service_id).reconcile_delay_s)
        if self.services.get(svc.service_id) is not svc:
            return "The service was deleted during the rollout."
        svc.traffic_statuses = statuses
        wanted_tags = {s.tag for s in statuses if s.tag}
        for tag in sorted(set(svc.tag_uris) - wanted_tags):
            await self.listeners.close_tag(svc.service_id, tag)
            del svc.tag_uris[tag]
        for tag in sorted(wanted_tags - set(svc.tag_uris)):
            svc.tag_uris[tag] = await self.listeners.open_tag(svc.service_id, tag)
        retired = [inst for (sid, name), inst in self.instances.items()
                   if sid == svc.service_id and name not in serving and inst.state != "STOPPED"]
        for inst in retired:  # drained in the background: SIGTERM and up to 10 s of grace each
            task = asyncio.create_task(inst.stop("revision no longer serves traffic"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def scale_in(self, service_id: str, revision: str | None, count: int) -> int:
        """Stop up to `count` idle ready instances of the service (of one revision, when named), as Cloud
        Run's autoscaler may at any time: SIGTERM, 10 s of grace. Returns how many were stopped."""
        stopped = 0
        for (sid, name), inst in list(self.instances.items()):
            if sid == service_id and (revision is None or name == revision) and stopped < count:
                stopped += await inst.scale_in(count - stopped)
        return stopped

    # ------------------------------------------------------------ scale to zero

    async def reap_idle(self) -> None:
        now = time.monotonic()
        for svc in list(self.services.values()):
            after = self.behavior(svc.service_id).scale_to_zero_after_s
            if after is None or svc.min_instances() > 0:
                continue
            for (sid, _), inst in list(self.instances.items()):
                # only a READY instance with nothing in flight is idle (a starting one is not: with
                # scale_to_zero_after_s=0 it would be stopped before it ever got ready)
                if sid == svc.service_id:
                    await inst.stop_idle(after, now, f"scaled to zero after {after:g} s without requests")

    async def run_reaper(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            with contextlib.suppress(Exception):
                await self.reap_idle()

    # ------------------------------------------------------------ shutdown

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(inst.stop("sandbox shutting down", grace_s=0) for inst in self.instances.values()),
                             return_exceptions=True)
        self.instances.clear()
        await self.runtime.remove_all()

    def describe(self) -> dict[str, Any]:
        return {
            "services": {
                sid: {
                    "uri": svc.uri,
                    "generation": svc.generation,
                    "latest_ready": svc.latest_ready,
                    "latest_created": svc.latest_created,
                    "reconciling": svc.reconciling,
                    "terminal": svc.terminal.to_json(),
                    "traffic": [s.to_json() for s in svc.traffic_statuses],
                    "tags": dict(svc.tag_uris),
                    "behavior": vars(self.behavior(sid)),
                    "revisions": {name: rev.phase for name, rev in self.revisions.get(sid, {}).items()},
                }
                for sid, svc in self.services.items()
            },
            "instances": [inst.describe() for inst in self.instances.values()],
        }
