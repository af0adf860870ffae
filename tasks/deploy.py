"""Stage `deploy`: a new revision with no traffic and a revision tag, waited for until Ready.

The serving split is remembered first and sent back pinned (LATEST resolved to its revision), so
creating the revision never moves traffic. The first deployment of a service has nothing serving
to protect: the new revision gets 100 % once Ready (and the report says so).

The candidate's template is a copy of the SERVING revision's configuration (read at deploy time; not
the service's template, which after a failed release is the failed candidate's) with only image, env
(stagecheck.managed_env: variables an earlier release set and the config dropped are removed), port,
resources, revision name and labels changed, sent with `update_mask`
"template,traffic" and the service's etag: a concurrent change is re-read and retried, a taken
revision name gets one new suffix (stagecheck/clients/cloudrun.py: build_template, update_with_retry)."""

from __future__ import annotations

import hashlib
import secrets as _random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.progress_artifact import WaitProgress, percent, progress_key
from stagecheck.errors import StageError
from stagecheck.managed_env import managed_names, plan_env
from stagecheck.model import Criterion, Evidence, RevisionInfo, StageResult, Status, TrafficTarget
from stagecheck.redact import redact
from stagecheck.report import console_logs_url
from stagecheck.settings import ServiceConfig, Settings
from stagecheck.stages import Stage
from stagecheck.traffic import describe, with_tagged_candidate
from tasks.common import gate, guarded, stage_run_name
from tasks.inspect import ServiceSnapshot

if TYPE_CHECKING:  # google.cloud.run_v2 is imported where the API is first used (a dry run never does)
    from google.api_core import operation
    from google.cloud import run_v2

    from stagecheck.clients.cloudrun import CloudRun

MAX_REVISION_NAME = 63


def new_suffix() -> str:
    return "".join(_random.choice(string.ascii_lowercase) for _ in range(3))


def run_suffix() -> str:
    """The revision suffix of this deploy task run: derived from the task run's id, so each Prefect retry
    of the run sends the same revision name (the same name and template make no second revision); outside
    a task run, a random one."""
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    if context is None:
        return new_suffix()
    digest = hashlib.sha256(str(context.task_run.id).encode()).digest()
    return "".join(string.ascii_lowercase[b % 26] for b in digest[:3])


def _retried() -> bool:
    """Whether this task run is a Prefect retry (an earlier attempt may have reached the API)."""
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    return context is not None and context.task_run.run_count > 1


def _other_suffix(taken: str) -> str:
    """A fresh suffix, different from the one of the revision name that was taken."""
    suffix = new_suffix()
    while taken.endswith(f"-{suffix}"):
        suffix = new_suffix()
    return suffix


def revision_name(service: str, sha7: str, suffix: str | None = None) -> str:
    """`SERVICE-SHA7-xyz`: prefixed by the service as Cloud Run requires, unique per attempt."""
    suffix = suffix or new_suffix()
    name = f"{service}-{sha7}-{suffix}"
    if len(name) > MAX_REVISION_NAME:
        name = f"{service}-{suffix}"
    return name


@dataclass
class DeployOutcome:
    revision: RevisionInfo | None = None
    service_url: str | None = None
    tag_url: str | None = None
    traffic: list[TrafficTarget] = field(default_factory=list)
    traffic_moved: bool = False
    started_at: datetime | None = None
    revision_name: str = ""  # the candidate's name (a name conflict gets one new suffix)
    log_url: str = ""  # the candidate's logs in the console


def template_evidence(base: run_v2.RevisionTemplate, built: run_v2.RevisionTemplate, service: ServiceConfig, *,
                      serving: str | None, service_template: str) -> Evidence:
    """Where the candidate's template came from and what the release did to the variables."""
    from stagecheck.clients.cloudrun import configured_env, ingress_index, template_facts

    containers = list(base.containers)
    current_env = [e.name for e in containers[ingress_index(containers)].env] if containers else []
    plan = plan_env(current_env, managed_names(dict(base.annotations)), configured_env(service))
    if serving is None:
        origin = f"template copied from the service's (revision {service_template or 'latest'})"
    else:
        origin = f"template copied from the serving revision {serving}"
        if service_template and service_template != serving:
            origin += f" (the service's template is {service_template}'s, not copied)"
    changes = "; changed: image, env, port, resources, revision name, labels"
    if plan.removed:
        changes += f"; variables removed (set by an earlier release, gone from the config): {', '.join(plan.removed)}"
    if plan.kept:
        changes += f"; variables set outside stagecheck kept: {', '.join(plan.kept)}"
    return Evidence(kind="template", summary=origin + changes,
                    data={"kept_from": serving or service_template, "service_template": service_template,
                          "env_removed": list(plan.removed), "env_kept": list(plan.kept),
                          "env_configured": list(plan.configured), "candidate": template_facts(built)})


def _tag_uri(service: object, tag: str) -> str | None:
    for status in getattr(service, "traffic_statuses", []):
        if status.tag == tag and status.uri:
            return str(status.uri)
    return None


@task(name="deploy", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.DEPLOY))
async def deploy_revision(cloudrun: CloudRun, settings: Settings, service: ServiceConfig, *, image: str,
                          git_sha: str, tag: str, snapshot: ServiceSnapshot) -> tuple[StageResult, DeployOutcome]:
    """Create the candidate revision with no traffic and its tag (the serving split sent back pinned; a first
    deployment gets 100 %), from the serving revision's configuration; wait until it is Ready."""
    from stagecheck.clients.cloudrun import (
        DEPLOY_MASK,
        RevisionNameConflict,
        build_template,
        revision_info,
        split_from_proto,
        template_facts,
        template_from_revision,
    )

    first_name = revision_name(service.name, git_sha[:7], run_suffix())
    outcome = DeployOutcome(started_at=datetime.now(UTC), revision_name=first_name,
                            log_url=console_logs_url(project=settings.project, region=settings.region,
                                                     service=service.name, revision=first_name,
                                                     console_base=settings.endpoints.console_base))

    async def body() -> tuple[StageResult, DeployOutcome]:
        name, log_url = outcome.revision_name, outcome.log_url
        labels = {"stagecheck-sha": git_sha[:7], "managed-by": "stagecheck"}
        notes: list[Evidence] = []
        op: operation.Operation | None = None
        if snapshot.exists:
            current = await cloudrun.get_service(service.name)
            if current is None:
                raise StageError(f"service {service.name} disappeared since it was inspected")
            # the release starts from the revision that SERVES, not from the service's template (after a failed
            # release that template is the failed candidate's, and copying it would carry that failure on)
            serving_rev = (await cloudrun.get_revision(service.name, snapshot.previous.name)
                           if snapshot.previous is not None else None)
            for attempt in range(2):  # a revision-name conflict gets one new suffix
                split = with_tagged_candidate(snapshot.serving, name, tag)

                def build(cur: run_v2.Service, rev_name: str = name,
                          split: list[TrafficTarget] = split) -> tuple[run_v2.RevisionTemplate, list[TrafficTarget]]:
                    base = template_from_revision(serving_rev, cur.template) if serving_rev is not None else cur.template
                    built = build_template(service, image=image, revision=rev_name, labels=labels, current=base)
                    notes[:] = [n for n in notes if n.kind != "template"]
                    notes.append(template_evidence(base, built, service, serving=snapshot.previous.name
                                                   if serving_rev is not None and snapshot.previous else None,
                                                   service_template=cur.template.revision))
                    return built, split

                try:
                    op, etag_retries = await cloudrun.update_with_retry(current, build, update_mask=DEPLOY_MASK)
                except RevisionNameConflict as exc:
                    if attempt:
                        raise
                    taken = name
                    name = revision_name(service.name, git_sha[:7], _other_suffix(taken))
                    log_url = console_logs_url(project=settings.project, region=settings.region,
                                               service=service.name, revision=name,
                                               console_base=settings.endpoints.console_base)
                    outcome.revision_name, outcome.log_url = name, log_url
                    notes.append(Evidence(kind="note", summary=f"revision name {taken} was taken ({exc.message}); "
                                                               f"retried as {name}"))
                    continue
                if etag_retries:
                    notes.append(Evidence(kind="note", summary=f"the service changed while deploying; re-read and "
                                                               f"retried {etag_retries} time(s) (etag mismatch)"))
                break
            plan_note = f"no traffic to {name}; serving stays {describe(snapshot.serving)}"
        else:
            template = build_template(service, image=image, revision=name, labels=labels)
            notes.append(Evidence(kind="template", summary="first deployment: template from the config",
                                  data={"candidate": template_facts(template)}))
            split = [TrafficTarget(revision=name, percent=100, tag=tag)]
            existing = await cloudrun.get_service(service.name) if _retried() else None  # a retry re-reads first
            if existing is None:
                op = await cloudrun.create_service(service.name, template, split)
            elif existing.template.revision != name:
                raise StageError(f"service {service.name} appeared since it was inspected, serving "
                                 f"{existing.template.revision or 'another template'}: not a first deployment any more",
                                 hint="run the validation again")
            else:
                notes.append(Evidence(kind="note", summary=f"retried: the earlier attempt created the service with "
                                                           f"{name}; not created again"))
            outcome.traffic_moved = True
            plan_note = f"first deployment: {name} gets 100 % once Ready"
        shown = WaitProgress(progress_key(service.name, Stage.DEPLOY),
                             f"deploy: waiting for {name} to become Ready (deadline {settings.deploy_timeout_s:g} s)")
        await shown.start()

        async def waited(elapsed_s: float) -> None:
            await shown.update(percent(elapsed_s, settings.deploy_timeout_s))

        rev, ready = await cloudrun.wait_revision_ready(service.name, name, timeout_s=settings.deploy_timeout_s,
                                                        on_poll=waited)
        if ready.ready is True:
            await shown.finish(f"deploy: {name} Ready")
        else:
            await shown.stop(redact(f"deploy: {name} not Ready: {ready.message or 'no Ready condition'}"))
        evidence = [*notes, Evidence(kind="traffic", summary=plan_note,
                                     data={"requested_split": [t.model_dump() for t in split]})]
        if ready.ready is not True:
            # settle the operation so the service is not left reconciling; its error repeats the condition
            op_error = ""
            try:
                if op is not None:
                    await cloudrun.finish(op, f"deploy {name}", timeout_s=30)
            except StageError as exc:
                op_error = str(exc)
            after = await cloudrun.get_service(service.name)
            outcome.traffic = split_from_proto(after.traffic) if after else []
            reason = ready.message or op_error or "revision did not become Ready"
            evidence.append(Evidence(kind="deploy", summary=f"revision {name} Ready={ready.ready}: {reason}",
                                     data={"reason": ready.reason, "operation_error": op_error, "logs": log_url}))
            evidence.append(Evidence(kind="traffic", summary=f"traffic after the failed deploy: {describe(outcome.traffic)}",
                                     data={"traffic": [t.model_dump() for t in outcome.traffic]}))
            return StageResult(
                name=Stage.DEPLOY, status=Status.FAIL, summary=f"revision {name} failed: {reason}",
                evidence=evidence,
                criteria=[Criterion(name="New revision becomes Ready", stage=Stage.DEPLOY, status=Status.FAIL,
                                    expected="Ready condition SUCCEEDED", observed=reason, evidence=[log_url])],
                data={"logs_url": log_url},
            ), outcome
        svc = (await cloudrun.finish(op, f"deploy {name}", timeout_s=settings.deploy_timeout_s) if op is not None
               else await cloudrun.wait_served(service.name, timeout_s=settings.deploy_timeout_s))
        outcome.service_url = svc.uri or None
        outcome.tag_url = _tag_uri(svc, tag)
        outcome.traffic = split_from_proto(svc.traffic)
        if rev is None:
            raise StageError(f"revision {name} reported Ready but could not be read back")
        outcome.revision = revision_info(rev).model_copy(update={"tag": tag, "tag_url": outcome.tag_url,
                                                                 "log_url": log_url})
        created = outcome.revision.created_at
        startup = outcome.revision.startup_s
        observed = f"{name} Ready" + (f" {startup:.1f}s after creation" if startup is not None else "")
        evidence.append(Evidence(kind="timing", summary=observed,
                                 data={"created_at": str(created), "ready_at": str(ready.transition_time),
                                       "startup_s": startup, "tag_url": outcome.tag_url}))
        criteria = [Criterion(name="New revision becomes Ready", stage=Stage.DEPLOY, status=Status.PASS,
                              expected="Ready condition SUCCEEDED", observed=observed)]
        if outcome.tag_url is None:
            criteria.append(Criterion(name="Revision tag URL assigned", stage=Stage.DEPLOY, status=Status.FAIL,
                                      expected=f"traffic status with tag {tag} and a URI",
                                      observed="no URI for the tag"))
        status = Status.FAIL if outcome.tag_url is None else Status.PASS
        return StageResult(name=Stage.DEPLOY, status=status, summary=f"{observed}; {plan_note}", evidence=evidence,
                           criteria=criteria, data={"logs_url": log_url}), outcome

    stage, outcome = await guarded(Stage.DEPLOY, body, outcome)
    if outcome.revision is None and stage.status is Status.FAIL:
        outcome.revision = RevisionInfo(name=outcome.revision_name, tag=tag, image=image, log_url=outcome.log_url)
    return gate(stage, (stage, outcome))
