"""A Prefect progress artifact for one long wait (the deploy waiting for Ready, a canary hold, the bake),
so the UI shows how far the wait has got. Best effort: a wait never fails because the artifact could
not be written (no API, an older server): the artifact is then simply not there."""

from __future__ import annotations

import logging
import re
import time
from uuid import UUID

logger = logging.getLogger(__name__)


def progress_key(service: str, wait: str) -> str:
    """Pure: `stagecheck-wait-SERVICE-WAIT` in the characters artifact keys allow (lowercase, digits, dashes)."""
    key = re.sub(r"[^a-z0-9]+", "-", f"stagecheck-wait-{service}-{wait}".lower())
    return key.strip("-")


def percent(elapsed_s: float, planned_s: float) -> float:
    """Pure: how far a wait of `planned_s` is after `elapsed_s`, 0-100 (a wait with no length is done)."""
    if planned_s <= 0:
        return 100.0
    return round(min(100.0, max(0.0, elapsed_s / planned_s * 100.0)), 1)


class WaitProgress:
    """One progress artifact: `start`, `update` as the wait advances (at most every `min_interval_s`),
    `finish` at 100 when the wait is over."""

    def __init__(self, key: str, description: str, *, min_interval_s: float = 1.0) -> None:
        self.key = key
        self.description = description
        self.min_interval_s = min_interval_s
        self.artifact_id: UUID | None = None
        self.last = -1.0
        self._last_sent_at = 0.0

    async def start(self) -> None:
        from prefect.artifacts import acreate_progress_artifact
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return  # no run to attach it to
        try:
            self.artifact_id = await acreate_progress_artifact(progress=0.0, key=self.key,
                                                               description=self.description)
            self.last, self._last_sent_at = 0.0, time.monotonic()
        except Exception as exc:
            logger.debug("progress artifact %s not created: %s", self.key, exc)

    async def update(self, value: float, description: str | None = None, *, force: bool = False) -> None:
        from prefect.artifacts import aupdate_progress_artifact

        if self.artifact_id is None or (value == self.last and description is None):
            return
        if not force and time.monotonic() - self._last_sent_at < self.min_interval_s:
            return
        try:
            await aupdate_progress_artifact(self.artifact_id, progress=value, description=description)
            self.last, self._last_sent_at = value, time.monotonic()
        except Exception as exc:
            logger.debug("progress artifact %s not updated: %s", self.key, exc)

    async def finish(self, description: str | None = None) -> None:
        await self.update(100.0, description, force=True)

    async def stop(self, description: str) -> None:
        """The wait ended early (a failure): the progress stays where it got, the description says why."""
        await self.update(self.last, description, force=True)
