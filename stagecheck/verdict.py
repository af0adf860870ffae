"""The verdict: pass or fail, decided from the stage results alone, failing closed.

PASS only when every required stage ran and ended PASS or WARN and no stage at all (optional ones such
as "smoke" or the "rollback" stage included) FAILed. The first FAIL, in the order the stages ran,
decides; a required stage that is missing or SKIPped fails the verdict too.
"""

from __future__ import annotations

from collections.abc import Sequence

from stagecheck.model import Criterion, StageResult, Status, Verdict
from stagecheck.settings import ProbeMode, ServiceConfig, Settings
from stagecheck.stages import Stage

REQUIRED_STAGES: tuple[Stage, ...] = (
    Stage.SYNTAX,
    Stage.BUILD,
    Stage.PUSH,
    Stage.DEPLOY,
    Stage.PROBE_TAGGED,
    Stage.TRAFFIC,
    Stage.PROBE_SERVING,
    Stage.LOGS,
)
DRY_RUN_STAGES: tuple[Stage, ...] = (Stage.SYNTAX, Stage.BUILD)
# not required: `contract` (it SKIPs by design when the serving revision has no API document or on a first
# deployment; when it runs, a FAIL fails the verdict like any stage's)


def required_stages(*, dry_run: bool) -> tuple[Stage, ...]:
    return DRY_RUN_STAGES if dry_run else REQUIRED_STAGES


def required_for(settings: Settings, svc: ServiceConfig, *, bake: bool = False) -> tuple[Stage, ...]:
    """The stages whose PASS/WARN a service's verdict needs: a probe kind turned off is not required, the
    inspect stage only when the run talks to Cloud Run, the bake only when the plan bakes (`bake`)."""
    stages = list(required_stages(dry_run=settings.dry_run))
    if not settings.dry_run:
        stages.insert(1, Stage.INSPECT)
    if svc.health.tagged.mode == ProbeMode.OFF:
        stages = [s for s in stages if s != Stage.PROBE_TAGGED]
    if svc.health.service.mode == ProbeMode.OFF and (svc.health.lb.mode == ProbeMode.OFF or not settings.lb_url):
        stages = [s for s in stages if s != Stage.PROBE_SERVING]
    if bake and not settings.dry_run:  # the bake window must have watched
        stages.append(Stage.BAKE)
    return tuple(stages)


def decide(
    stages: Sequence[StageResult], required: Sequence[str]
) -> tuple[Verdict, str | None, list[str], list[str]]:
    """(verdict, the stage that decided a failure, reasons, warnings).

    `stages` are in pipeline order (the order they ran). Reasons are "<stage>: <summary>" for every
    FAILed stage (each followed by "<stage>: the revision logged <cause>" for its `causes`), then "stage X did not run: ..." for each required stage missing or skipped.
    Warnings are "<stage>: <summary>" for WARN stages and "<stage>: <criterion>: <observed>" for WARN
    criteria of stages that did not WARN themselves.
    """
    reasons: list[str] = []
    warnings: list[str] = []
    decided_by: str | None = None

    for stage in stages:
        if stage.status is Status.FAIL:
            decided_by = decided_by or stage.name
            reasons.append(f"{stage.name}: {stage.summary}")
            reasons.extend(f"{stage.name}: the revision logged {cause}" for cause in stage.causes)
        elif stage.status is Status.WARN:
            warnings.append(f"{stage.name}: {stage.summary}")
        if stage.status is not Status.WARN:
            for criterion in stage.criteria:
                if criterion.status is Status.WARN:
                    warnings.append(f"{stage.name}: {criterion.name}: {criterion.observed}")

    ran = {s.name for s in stages if s.status is not Status.SKIP}
    failed_gate = decided_by
    for name in required:
        if name in ran:
            continue
        skipped = next((s for s in stages if s.name == name), None)
        if skipped is not None and skipped.summary:
            why = skipped.summary
        elif failed_gate is not None:
            why = f"the run stopped at the failed {failed_gate} gate"
        else:
            why = "no result recorded"  # nothing failed, yet a required stage is missing: fail closed
        reasons.append(f"stage {name} did not run: {why}")
        decided_by = decided_by or name

    if not stages:
        reasons.append("no stage ran")
        decided_by = decided_by or (required[0] if required else None)

    verdict = Verdict.FAIL if reasons else Verdict.PASS
    return verdict, decided_by if verdict is Verdict.FAIL else None, reasons, _unique(warnings)


def collect_criteria(stages: Sequence[StageResult]) -> list[Criterion]:
    """Every stage's criteria, in pipeline order."""
    return [criterion for stage in stages for criterion in stage.criteria]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
