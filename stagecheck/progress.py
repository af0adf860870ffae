"""Progress of a run, for whoever watches it (the CLI's live display). The flow reports to the
`Progress` found in the current context, if any; nothing is global beyond that context variable."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

from stagecheck.model import ServiceReport, StageResult


class Progress(Protocol):
    def stage_started(self, service: str, stage: str) -> None: ...
    def stage_finished(self, service: str, result: StageResult) -> None: ...
    def service_finished(self, report: ServiceReport, path: Path) -> None: ...


class NoProgress:
    def stage_started(self, service: str, stage: str) -> None:
        pass

    def stage_finished(self, service: str, result: StageResult) -> None:
        pass

    def service_finished(self, report: ServiceReport, path: Path) -> None:
        pass


current_progress: ContextVar[Progress | None] = ContextVar("stagecheck_progress", default=None)


def progress() -> Progress:
    return current_progress.get() or NoProgress()
