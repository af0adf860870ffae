"""The `[traffic]` section: straight or canary, holds, bake, what a passed release leaves."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from stagecheck.settings.rules import Strict


class AfterPass(StrEnum):
    LATEST = "latest"  # LATEST=100 after a passed release: the next `gcloud run deploy` serves its revision
    PINNED = "pinned"  # the validated revision stays pinned at 100 % (a later deploy gets 0 % until shifted)


class DegradedPolicy(StrEnum):
    WARN = "warn"
    FAIL = "fail"


class TrafficPlan(Strict):
    """How traffic moves to the candidate: straight or canary steps, watched holds, the bake, what a pass leaves."""

    steps: tuple[int, ...] = Field((100,), description="percent to the new revision per step; last is 100")
    hold_s: float = Field(0.0, ge=0, description="wait (and watch) this long after each canary step")
    after_pass: AfterPass = Field(AfterPass.LATEST, description="traffic after a passed release: latest | pinned")
    keep_tags: int = Field(3, ge=1, description="stagecheck's own sc-* tags kept (newest); older ones are removed")
    bake_s: float = Field(60.0, ge=0, description="watch the release this long after the last step (0: no bake)")
    bake_interval_s: float = Field(2.0, gt=0, description="pause between bake probes of the serving URLs")

    @field_validator("steps")
    @classmethod
    def _valid_steps(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("needs at least one step")
        if any(not 0 < s <= 100 for s in v):
            raise ValueError("each step is a percent in 1..100")
        if list(v) != sorted(set(v)):
            raise ValueError("steps must strictly increase")
        if v[-1] != 100:
            raise ValueError("the last step must be 100")
        return v
