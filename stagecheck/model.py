"""The vocabulary of a validation run: stages, gates, criteria, evidence, verdict.

Plain pydantic models, JSON-serialisable; the report (markdown, table, JSON) is rendered from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from stagecheck.contract.findings import ContractAudit


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"  # reported, does not fail the verdict
    FAIL = "FAIL"
    SKIP = "SKIP"  # not run (an earlier gate failed, or turned off)


class Evidence(BaseModel):
    """One observed fact a status rests on: an HTTP answer, a log entry, a timing, a build log tail."""

    kind: str  # "http" | "log" | "timing" | "docker" | "traffic" | "syntax" | "command" | "note"
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class Criterion(BaseModel):
    """A row of the success-criteria table."""

    name: str
    stage: str
    status: Status
    expected: str
    observed: str
    evidence: list[str] = Field(default_factory=list)  # short pointers: "GET /health -> 200 in 12 ms"


class StageResult(BaseModel):
    name: str
    status: Status
    summary: str
    duration_s: float = 0.0
    evidence: list[Evidence] = Field(default_factory=list)
    criteria: list[Criterion] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)
    # what the revision logged around a failure (crash / new ERROR signatures, one line each): the report's reasons
    causes: list[str] = Field(default_factory=list)
    # failed by a transient API answer (not reported; Prefect's retry condition reads it: stagecheck.retry_policy)
    _transient: bool = PrivateAttr(default=False)

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL


class ImageInfo(BaseModel):
    reference: str  # repo:tag
    digest: str | None = None  # sha256:...
    pinned: str | None = None  # repo@sha256:...
    image_id: str | None = None
    local_size_bytes: int | None = None  # uncompressed, as built
    size_bytes: int | None = None  # compressed, in the registry (what Cloud Run pulls)
    previous_reference: str | None = None
    previous_size_bytes: int | None = None  # compressed, of the image serving before
    tags: list[str] = Field(default_factory=list)
    platform: str | None = None  # os/arch read back from the built image
    build_key: str | None = None  # content key of the build's inputs (stagecheck.pushed_images.build_key)
    reused: bool = False  # not built: the digest an earlier run pushed for the same build key

    @property
    def size_change_bytes(self) -> int | None:
        if self.size_bytes is None or self.previous_size_bytes is None:
            return None
        return self.size_bytes - self.previous_size_bytes


class TrafficTarget(BaseModel):
    revision: str | None  # None means LATEST
    percent: int
    tag: str | None = None

    @property
    def latest(self) -> bool:
        return self.revision is None


class RevisionInfo(BaseModel):
    name: str
    tag: str | None = None
    tag_url: str | None = None
    created_at: datetime | None = None
    ready_at: datetime | None = None
    image: str | None = None
    memory: str | None = None
    cpu: str | None = None
    min_instances: int | None = None
    max_instances: int | None = None
    log_url: str | None = None
    timeout_s: float | None = None  # the revision's request timeout (template.timeout)

    @property
    def startup_s(self) -> float | None:
        if self.created_at is None or self.ready_at is None:
            return None
        return (self.ready_at - self.created_at).total_seconds()


class Rollback(BaseModel):
    needed: bool = False
    performed: bool = False
    ok: bool | None = None
    restored: list[TrafficTarget] = Field(default_factory=list)
    message: str = ""


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"


class ServiceReport(BaseModel):
    """Everything one service's validation found; the JSON report is this, serialised."""

    service: str
    project: str
    region: str
    verdict: Verdict
    decided_by: str | None = None  # the stage whose gate failed, None on pass
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    stages: list[StageResult] = Field(default_factory=list)
    criteria: list[Criterion] = Field(default_factory=list)
    image: ImageInfo | None = None
    revision: RevisionInfo | None = None
    previous_revision: RevisionInfo | None = None
    traffic_before: list[TrafficTarget] = Field(default_factory=list)
    traffic_after: list[TrafficTarget] = Field(default_factory=list)
    rollback: Rollback = Field(default_factory=Rollback)
    urls: dict[str, str] = Field(default_factory=dict)
    git_sha: str | None = None
    git_ref: str | None = None  # where the commit came from (a merge event's ref), when known
    started_at: datetime
    finished_at: datetime
    flow_run_url: str | None = None
    estimated_monthly_cost_usd: float | None = None
    previous_estimated_monthly_cost_usd: float | None = None
    contract: ContractAudit | None = None  # the breaking-changes audit (stage `contract`), when it compared

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)
