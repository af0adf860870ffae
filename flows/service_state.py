"""What one service's walk holds while it runs: the stage results so far, the snapshot, the split now,
the rollback and the rollout record; `record` keeps a result and says whether its gate passed."""

from __future__ import annotations

from datetime import UTC, datetime

from stagecheck.contract.findings import ContractAudit
from stagecheck.errors import StageError
from stagecheck.log_analysis.explanation import failure_time
from stagecheck.model import (
    Rollback,
    StageResult,
    Status,
    TrafficTarget,
)
from stagecheck.progress import progress
from stagecheck.retry_policy import TaskT, with_api_retries
from stagecheck.rollout import RolloutRecord
from stagecheck.settings import (
    ServiceConfig,
    Settings,
    TrafficPlan,
)
from tasks.common import Clients
from tasks.control import Control
from tasks.inspect import ServiceSnapshot


class ServiceRun:
    """One service's run state. Holds what the run learned; every decision it makes is
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
        self.control: Control | None = None  # `[analysis] baseline = "fresh"`: the control revision deployed

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
