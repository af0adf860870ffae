"""The fresh control of `[analysis] baseline = "fresh"`: a 0 % copy of the serving revision (the same
template, so the same image digest), created just before the candidate so both start cold together
(Spinnaker's canary practice: compare the canary with a baseline deployed beside it, not with the
long-running production revision).

One Cloud Run update creates one revision, so the control's update goes first and the candidate's is the
service's last template (a later `gcloud run deploy` starts from the candidate, as without a control).
The serving split is sent back pinned and untagged: the control never receives traffic. The analysis tags
it `sc-base` for the bake and removes the tag afterwards, as it does for the serving revision; the control
then stays as an inactive revision (no traffic, no tag), like every revision that no longer serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.errors import StageError
from stagecheck.model import Evidence, StageResult, Status, TrafficTarget
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name
from tasks.deploy import run_suffix

if TYPE_CHECKING:
    from google.cloud import run_v2

    from stagecheck.clients.cloudrun import CloudRun

CONTROL_LABELS = {"managed-by": "stagecheck", "stagecheck-role": "control"}


@dataclass(frozen=True)
class Control:
    """The control revision the analysis compares the candidate with, and where it came from."""

    revision: str
    copied_from: str  # the serving revision whose template it repeats
    image: str | None  # the same image reference (a digest) as the serving revision's
    evidence: Evidence


def control_name(service: str, suffix: str) -> str:
    """`SERVICE-control-xyz` (service names are at most 49 characters: within Cloud Run's 63)."""
    return f"{service}-control-{suffix}"


@task(name="deploy-control", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.ANALYSIS, label_param="label"))
async def deploy_control(cloudrun: CloudRun, service: str, *, serving: str, split: list[TrafficTarget],
                         timeout_s: float, label: str = "fresh control") -> tuple[StageResult, Control | None]:
    """Create a copy of the serving revision `serving` (its template, its image digest) under a new name, the
    pinned serving `split` sent back unchanged (no traffic, no tag); wait until the control is Ready."""
    from stagecheck.clients.cloudrun import (
        DEPLOY_MASK,
        ready_condition,
        revision_info,
        template_from_revision,
    )

    name = control_name(service, run_suffix())  # a Prefect retry sends the same name and template again

    async def body() -> tuple[StageResult, Control | None]:
        source = await cloudrun.get_revision(service, serving)
        current = await cloudrun.get_service(service)
        if current is None:
            raise StageError(f"service {service} disappeared since it was inspected")

        def build(cur: run_v2.Service) -> tuple[run_v2.RevisionTemplate, list[TrafficTarget]]:
            tpl = template_from_revision(source, cur.template)
            tpl.revision = name
            tpl.labels = {**dict(tpl.labels), **CONTROL_LABELS}
            return tpl, split

        op, _ = await cloudrun.update_with_retry(current, build, update_mask=DEPLOY_MASK)
        await cloudrun.finish(op, f"deploy the control {name}", timeout_s)
        rev = await cloudrun.get_revision(service, name)
        ready = ready_condition(rev.conditions)
        if ready.ready is not True:
            raise StageError(f"the control {name} (a copy of {serving}) is not Ready: {ready.message}")
        info = revision_info(rev)
        summary = (f"control {name}: a copy of the serving revision {serving}'s template (image {info.image}), "
                   f"no traffic, Ready {info.startup_s:.1f} s after creation" if info.startup_s is not None else
                   f"control {name}: a copy of the serving revision {serving}'s template (image {info.image}), "
                   "no traffic")
        evidence = Evidence(kind="control", summary=summary,
                            data={"revision": name, "copied_from": serving, "image": info.image,
                                  "created_at": str(info.created_at), "ready_at": str(info.ready_at)})
        result = StageResult(name=Stage.ANALYSIS, status=Status.PASS, summary=summary, evidence=[evidence])
        return result, Control(revision=name, copied_from=serving, image=info.image, evidence=evidence)

    result, control = await guarded(Stage.ANALYSIS, body, None)
    if result.status is Status.FAIL:
        result.summary = f"{label}: {result.summary}"
    return gate(result, (result, control))
