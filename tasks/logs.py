"""Stage `logs`: the new revision's Cloud Logging entries, compared with the previous revision's."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.errors import StageError
from stagecheck.log_analysis import (
    LogRecord,
    SignatureGroup,
    compare,
    judge_logs,
    judge_logs_unavailable,
    previous_window,
    record_from_entry_dict,
    summarise,
)
from stagecheck.log_analysis.explanation import cause_evidence, cause_lines, failure_causes
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.settings import LogRules, ProbePolicy
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name

if TYPE_CHECKING:  # the Logging client module loads google.api_core: imported where first used
    from stagecheck.clients.cloudlogging import LogReader


def _records(entries: list[dict[str, Any]], severity_fields: tuple[str, ...] = ()) -> list[LogRecord]:
    return [record_from_entry_dict(e, severity_fields) for e in entries]


def ingested_since(records: list[LogRecord], since: datetime) -> bool:
    """Pure: has Cloud Logging caught up with our last probe (its request log is visible)?"""
    return any(r.stream == "requests" and r.timestamp >= since for r in records)


async def read_settled(reader: LogReader, *, service: str, revision: str, start: datetime, last_probe_at: datetime | None,
                       rules: LogRules) -> tuple[list[LogRecord], bool, bool]:
    """Read until the request log of our last probe is visible or `settle_s` passes (ingestion lag).

    Reads newest first, so the last probe's request log is inside the `max_entries` cap even on a busy
    revision; (records, settled, truncated), truncated when older entries were left out by the cap.
    Each poll costs entries.list requests from the project's read budget, so the polls back off; the
    pause between polls counts from when a poll was asked for, so the time a poll already waited for
    its budget slot (other services of the project reading) is not waited again."""
    from stagecheck.clients.cloudlogging import PAGE_SIZE_MAX

    deadline = time.monotonic() + rules.settle_s
    interval = 0.5
    page = min(PAGE_SIZE_MAX, rules.max_entries)  # one entries.list request per poll
    while True:
        asked = time.monotonic()
        end = datetime.now(UTC)
        read = await reader.read_revision(service=service, revision=revision, start=start, end=end,
                                          max_entries=page, newest_first=True)
        records = _records(read.entries, rules.severity_fields)
        settled = last_probe_at is None or ingested_since(records, last_probe_at - timedelta(seconds=1))
        if settled or time.monotonic() >= deadline:
            if read.truncated and rules.max_entries > page:  # the rest, up to max_entries, newest first
                read = await reader.read_revision(service=service, revision=revision, start=start, end=end,
                                                  max_entries=rules.max_entries, newest_first=True)
                records = _records(read.entries, rules.severity_fields)
            return records, settled, read.truncated
        pause = interval - (time.monotonic() - asked)
        await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        interval = min(interval * 2, 4.0)


@task(name="logs", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.LOGS))
async def analyse_logs(reader: LogReader, *, service: str, revision: str, previous_revision: str | None,
                       start: datetime, last_probe_at: datetime | None, rules: LogRules,
                       probes: ProbePolicy) -> StageResult:
    """Read the new revision's logs (until the last probe's request log is visible) and the previous
    revision's, and judge them: new ERROR signatures, crashes, 5xx rate. Logs it cannot see FAIL."""
    async def body() -> tuple[StageResult, None]:
        try:
            records, settled, truncated = await read_settled(reader, service=service, revision=revision, start=start,
                                                  last_probe_at=last_probe_at, rules=rules)
            window = (start, datetime.now(UTC))
            current = summarise(records, revision=revision, window=window, retry_statuses=probes.retry_statuses)
            previous = None
            if previous_revision:
                prev_window = previous_window(window)
                prev = await reader.read_revision(service=service, revision=previous_revision,
                                                  start=prev_window[0], end=prev_window[1],
                                                  max_entries=rules.max_entries, newest_first=True)
                previous = summarise(_records(prev.entries, rules.severity_fields), revision=previous_revision,
                                     window=prev_window,
                                     retry_statuses=probes.retry_statuses)
        except StageError as exc:
            return judge_logs_unavailable(str(exc)), None
        result = judge_logs(current, compare(current, previous, rules), rules, truncated=truncated)
        if not settled:  # fail closed: logs we could not see might hold the errors
            note = (f"the last probe's request log was not visible after {rules.settle_s:g}s: "
                    "log ingestion incomplete, cannot judge (raise logs.settle_s?)")
            result.evidence.append(Evidence(kind="note", summary=note))
            result.criteria.append(Criterion(name="Logs ingested up to the last probe", stage=Stage.LOGS,
                                             status=Status.FAIL, expected="request log of the last probe visible",
                                             observed=note))
            result.status, result.summary = Status.FAIL, note
        return result, None

    result, _ = await guarded(Stage.LOGS, body, None)
    return gate(result, result)


async def read_until_explained(reader: LogReader, *, service: str, revision: str, previous_revision: str | None,
                               start: datetime, failed_at: datetime, rules: LogRules,
                               probes: ProbePolicy) -> tuple[list[SignatureGroup], int]:
    """The new crash / ERROR signatures the revision logged up to shortly after `failed_at` (new: not on the
    previous revision), and the entries.list requests it took. Reads newest first, again (backing off) until
    a signature is found, an entry stamped after the failure shows ingestion has caught up, or
    `rules.settle_s` passes; every read takes a slot of the project's read budget like any other."""
    from stagecheck.clients.cloudlogging import PAGE_SIZE_MAX

    deadline = time.monotonic() + rules.settle_s
    interval, requests = 0.5, 0
    page = min(PAGE_SIZE_MAX, rules.max_entries)
    previous = None
    if previous_revision:
        window = previous_window((start, failed_at))
        prev = await reader.read_revision(service=service, revision=previous_revision, start=window[0],
                                          end=window[1], max_entries=rules.max_entries, newest_first=True,
                                          deadline=deadline)
        requests += prev.requests
        previous = summarise(_records(prev.entries), revision=previous_revision, window=window,
                             retry_statuses=probes.retry_statuses)
    while True:
        asked = time.monotonic()
        end = datetime.now(UTC)
        read = await reader.read_revision(service=service, revision=revision, start=start, end=end,
                                          max_entries=page, newest_first=True, deadline=deadline)
        requests += read.requests
        records = _records(read.entries)
        current = summarise(records, revision=revision, window=(start, end), retry_statuses=probes.retry_statuses)
        causes = failure_causes(compare(current, previous, rules), failed_at)
        caught_up = any(r.timestamp >= failed_at for r in records)
        if causes or caught_up or read.declined or time.monotonic() >= deadline:
            return causes, requests
        pause = interval - (time.monotonic() - asked)
        await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        interval = min(interval * 2, 4.0)


@task(name="failure-logs", cache_policy=NO_CACHE, task_run_name="failure-logs: {revision}")
async def explain_failure(reader: LogReader, *, service: str, revision: str, previous_revision: str | None,
                          start: datetime, failed_at: datetime, rules: LogRules,
                          probes: ProbePolicy) -> tuple[list[str], list[Evidence]]:
    """After a gate failed once the candidate had served: read its logs once more (within the project's read
    budget) and name the crash or new ERROR signatures it logged around the failure, for the failing stage's
    evidence and the report's reasons. A read that fails names itself as the only evidence."""
    try:
        causes, requests = await read_until_explained(
            reader, service=service, revision=revision, previous_revision=previous_revision, start=start,
            failed_at=failed_at, rules=rules, probes=probes)
    except StageError as exc:  # the failure stands as it is; the report says the logs could not be read
        return [], [Evidence(kind="note", summary=f"the revision's logs could not be read after the failure: {exc}")]
    if not causes:
        return [], [Evidence(kind="note", summary=f"no new crash or {rules.severity_threshold}+ signature in "
                                                  f"{revision}'s logs up to the failure ({requests} read(s))")]
    return cause_lines(causes), cause_evidence(causes)
