"""The rollback decision, pure: after a failed gate, whether traffic is to be restored and to which split,
and what the report says about it. The flow acts on the answer (tasks.traffic.rollback_traffic) and
records what the rollback stage did with `rolled_back` / `cleaned_up`.

    traffic never moved                      -> nothing to do ("traffic never moved: <split now>")
    moved, nothing served before (first      -> nothing to restore: the report says so, not ok
      deployment)
    moved, a split served before             -> restore it (the previous revisions pinned, the candidate's
                                                tag kept at 0 %)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagecheck.model import Rollback, StageResult, Status, TrafficTarget
from stagecheck.stages import Stage
from stagecheck.traffic import describe, rollback_split


@dataclass(frozen=True)
class RestoreSplit:
    """Traffic moved and a split served before: put this split back."""

    split: list[TrafficTarget]


def decide_rollback(*, moved: bool, serving_before: Sequence[TrafficTarget], candidate: str, tag: str,
                    failed_stage: str, traffic_now: Sequence[TrafficTarget]) -> Rollback | RestoreSplit:
    """What a failed `failed_stage` does to traffic. `serving_before`: the split (LATEST pinned) that
    served before the run, empty on a first deployment; `traffic_now`: the split as it stands."""
    if not moved:
        return Rollback(needed=False, message=f"traffic never moved: {describe(list(traffic_now))}")
    if not serving_before:
        if failed_stage == Stage.DEPLOY:  # the candidate of a failed first deploy may never have served
            message = "first deployment: nothing served before, nothing to restore"
        else:
            message = (f"{failed_stage} failed on a first deployment: nothing served before, nothing to restore; "
                       "the new revision keeps serving")
        return Rollback(needed=True, performed=False, ok=False, message=message)
    return RestoreSplit(split=rollback_split(list(serving_before), candidate, tag))


def rolled_back(result: StageResult, applied: list[TrafficTarget]) -> Rollback:
    """The rollback as the report shows it, from the rollback stage's result and the split it applied."""
    ok = result.status is Status.PASS
    message = result.summary if ok else (f"rollback FAILED: {result.summary}; where traffic is now is unknown: "
                                         "check the service before the next release")
    return Rollback(needed=True, performed=True, ok=ok, restored=applied, message=message)


def cleaned_up(result: StageResult, applied: list[TrafficTarget]) -> Rollback:
    """After a failed deploy that moved no traffic: the failed candidate's target was removed (or not)."""
    return Rollback(needed=False, performed=True, ok=result.status is Status.PASS, restored=applied,
                    message=f"traffic never moved; {result.summary}")
