"""Stage `logs`: the new revision's Cloud Logging entries, compared with the previous revision's."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.clients.cloudlogging import LogReader
from stagecheck.errors import StageError
from stagecheck.log_analysis import (
    LogRecord,
    compare,
    judge_logs,
    judge_logs_unavailable,
    previous_window,
    record_from_entry_dict,
    summarise,
)
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.settings import LogRules, ProbePolicy
from tasks.common import guarded


def _records(entries: list[dict[str, Any]]) -> list[LogRecord]:
    return [record_from_entry_dict(e) for e in entries]


def ingested_since(records: list[LogRecord], since: datetime) -> bool:
    """Pure: has Cloud Logging caught up with our last probe (its request log is visible)?"""
    return any(r.stream == "requests" and r.timestamp >= since for r in records)


async def read_settled(reader: LogReader, *, service: str, revision: str, start: datetime, last_probe_at: datetime | None,
                       rules: LogRules) -> tuple[list[LogRecord], bool]:
    """Read until the request log of our last probe is visible or `settle_s` passes (ingestion lag)."""
    deadline = time.monotonic() + rules.settle_s
    interval = 0.25
    while True:
        end = datetime.now(UTC)
        records = _records(await reader.revision_entries(service=service, revision=revision, start=start, end=end,
                                                         max_entries=rules.max_entries))
        if last_probe_at is None or ingested_since(records, last_probe_at - timedelta(seconds=1)):
            return records, True
        if time.monotonic() >= deadline:
            return records, False
        await asyncio.sleep(interval)
        interval = min(interval * 2, 2.0)


@task(name="logs", cache_policy=NO_CACHE)
async def analyse_logs(reader: LogReader, *, service: str, revision: str, previous_revision: str | None,
                       start: datetime, last_probe_at: datetime | None, rules: LogRules,
                       probes: ProbePolicy) -> StageResult:
    async def body() -> StageResult:
        try:
            records, settled = await read_settled(reader, service=service, revision=revision, start=start,
                                                  last_probe_at=last_probe_at, rules=rules)
            window = (start, datetime.now(UTC))
            current = summarise(records, revision=revision, window=window, retry_statuses=probes.retry_statuses)
            previous = None
            if previous_revision:
                prev_window = previous_window(window)
                prev_entries = await reader.revision_entries(service=service, revision=previous_revision,
                                                             start=prev_window[0], end=prev_window[1],
                                                             max_entries=rules.max_entries)
                previous = summarise(_records(prev_entries), revision=previous_revision, window=prev_window,
                                     retry_statuses=probes.retry_statuses)
        except StageError as exc:
            return judge_logs_unavailable(str(exc))
        result = judge_logs(current, compare(current, previous, rules), rules)
        if not settled:  # fail closed: logs we could not see might hold the errors
            note = (f"the last probe's request log was not visible after {rules.settle_s:g}s: "
                    "log ingestion incomplete, cannot judge (raise logs.settle_s?)")
            result.evidence.append(Evidence(kind="note", summary=note))
            result.criteria.append(Criterion(name="Logs ingested up to the last probe", stage="logs",
                                             status=Status.FAIL, expected="request log of the last probe visible",
                                             observed=note))
            result.status, result.summary = Status.FAIL, note
        if len(records) >= rules.max_entries:
            result.evidence.append(Evidence(kind="note", summary=f"read capped at {rules.max_entries} entries"))
        return result

    return await guarded("logs", body)
