"""Stage `bake`: watch the release while it serves — probe the serving URLs at an interval and read
the new revision's logs incrementally — and stop at the first failure (decisions: stagecheck/bake.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.bake import BakeFinding, BakeWatch, bake_result, judge_bake_logs, judge_probe_answer
from stagecheck.clients.progress_artifact import WaitProgress, percent, progress_key
from stagecheck.errors import StageError
from stagecheck.log_analysis import (
    LogRecord,
    LogSummary,
    compare,
    judge_logs,
    record_from_entry_dict,
    summarise,
)
from stagecheck.model import StageResult
from stagecheck.prober import ProbeTarget, probe_once, safe_url
from stagecheck.redact import redact
from stagecheck.settings import LogRules, ProbeMode, ProbePolicy
from stagecheck.stages import Stage
from tasks.common import gate, guarded, stage_run_name
from tasks.probe import with_credentials

if TYPE_CHECKING:  # the Logging client module loads google.api_core: imported where first used
    from stagecheck.clients.cloudlogging import LogReader
    from stagecheck.clients.identity import IdTokens

PAGE = 1000  # entries per incremental read (one entries.list request)
DEFAULT_REQUEST_TIMEOUT_S = 300.0  # Cloud Run's default `timeout`: how late a request entry can be written
# entries arrive in Logging a little after they are written: entries.tail buffers 2 s by default "to prevent
# out of order results due to late arriving log entries" (TailLogEntriesRequest.buffer_window)
INGESTION_MARGIN_S = 2.0


async def _pause(done: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when the watch is over."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), seconds)


@task(name="bake", cache_policy=NO_CACHE, task_run_name=stage_run_name(Stage.BAKE, label_param="label"))
async def watch_release(http: httpx.AsyncClient, reader: LogReader, *, label: str, service: str, revision: str,
                        previous_revision: str | None, since: datetime, targets: list[ProbeTarget],
                        duration_s: float, interval_s: float, probes: ProbePolicy, rules: LogRules,
                        tokens: IdTokens | None = None,
                        overlap_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> StageResult:
    """Watch the serving release for `duration_s`: probes every `interval_s`, log reads as often as the
    project's read budget allows; FAIL at the first failed probe, new ERROR+ signature, crash or 5xx rate.

    A request entry is stamped when the request arrived and written after the answer, so a slow one (a
    504 at the request timeout) lands behind entries already read: each pass of reads starts `overlap_s`
    (the revision's request timeout, plus an ingestion margin) before the previous pass began, and
    entries are de-duplicated on insertId."""
    watched = [t for t in targets if t.mode != ProbeMode.OFF]
    watch = BakeWatch(label=label, planned_s=duration_s, started_at=datetime.now(UTC),
                      urls=[safe_url(t.url) for t in watched])
    started = time.monotonic()
    ends = started + duration_s  # a log read the project's budget cannot start before this is not made
    done = asyncio.Event()

    def found(source: str, reason: str, evidence_at: datetime | None = None) -> None:
        if watch.finding is None and watch.error is None:
            watch.finding = BakeFinding(source=source, reason=reason, at_s=time.monotonic() - started,
                                        detected_at=datetime.now(UTC), first_evidence_at=evidence_at)
        done.set()

    async def probe_loop() -> None:
        while not done.is_set():
            at_s = time.monotonic() - started
            # ID tokens per probes.auth, renewed by IdTokens before they expire (a bake may outlive one)
            credentialed = await with_credentials(watched, probes, tokens, service)
            watch.last_probe_at = datetime.now(UTC)
            attempts = await asyncio.gather(*(probe_once(http, t, probes, at_s=at_s) for t in credentialed))
            for target, attempt in zip(watched, attempts, strict=True):
                watch.probes += 1
                reason = judge_probe_answer(attempt, probes, url=safe_url(target.url), kind=target.kind)
                if reason is None:
                    continue
                watch.probe_failures += 1
                if target.mode == ProbeMode.REQUIRED:
                    found("probe", reason, watch.started_at + timedelta(seconds=attempt.at_s))
                    return
                watch.advisory_failures.append(reason)
            await _pause(done, interval_s)

    async def baseline() -> tuple[LogSummary | None, bool]:
        """The previous revision's summary, and False when the budget had no slot for it before the end."""
        if not previous_revision:
            return None, True
        length = (datetime.now(UTC) - since) + timedelta(seconds=duration_s)
        read = await reader.read_revision(service=service, revision=previous_revision, start=since - length,
                                          end=since, max_entries=rules.max_entries, newest_first=True,
                                          deadline=ends)
        watch.log_reads += read.requests
        watch.log_retries += read.retried
        return summarise([record_from_entry_dict(e, rules.severity_fields) for e in read.entries],
                         revision=previous_revision,
                         window=(since - length, since), retry_statuses=probes.retry_statuses), not read.declined

    async def log_loop() -> None:
        previous, complete = await baseline()
        if not complete:  # without the whole baseline every old signature would look new: the logs stage judges
            return
        records: dict[str, LogRecord] = {}
        lookback = timedelta(seconds=overlap_s + INGESTION_MARGIN_S)
        settled_to = since  # entries stamped before this were all written when the last pass began
        resume: datetime | None = None  # paging through a backlog (the last read was a full page)
        pass_began = datetime.now(UTC)
        while not done.is_set():
            if resume is None:  # a new pass: from the request timeout (and the ingestion margin) back
                pass_began = datetime.now(UTC)
                start = max(since, settled_to)
            else:
                start = resume
            read = await reader.read_revision(service=service, revision=revision, start=start, max_entries=PAGE,
                                              deadline=ends)
            watch.log_reads += read.requests
            watch.log_retries += read.retried
            if read.declined:  # no read slot left before the watch ends: the logs stage reads what follows
                return
            page_last = start
            for entry in read.entries:  # de-duplicated on insertId: the overlap is read again each pass
                record = record_from_entry_dict(entry, rules.severity_fields)
                records.setdefault(record.insert_id or f"{record.timestamp.isoformat()} {record.message}", record)
                page_last = max(page_last, record.timestamp)
            # a full page: read on from its last entry (timestamp >= it); else the pass is over: any request
            # that arrived `overlap_s` before it began has been answered and written (a 504 at the timeout too)
            resume = page_last if read.truncated and page_last > start else None
            if resume is None:
                settled_to = pass_began - lookback
            watch.log_entries = len(records)
            current = summarise(records.values(), revision=revision, window=(since, datetime.now(UTC)),
                                retry_statuses=probes.retry_statuses)
            comparison = compare(current, previous, rules)
            result = judge_logs(current, comparison, rules)
            watch.last_log_status, watch.last_log_summary = result.status, result.summary
            reason = judge_bake_logs(result)
            if reason is not None:
                watch.new_signatures = [g.as_evidence() for g in comparison.new]
                firsts = [g.first_seen for g in comparison.new]
                found("logs", reason, min(firsts) if firsts else None)
                return
            if resume is None:  # after a full page more is waiting: read on at once
                await _pause(done, interval_s)

    async def guard(loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except StageError as exc:  # fail closed: a watch that cannot see is no evidence of health
            if watch.finding is None and watch.error is None:
                watch.error = str(exc)
            done.set()
        except Exception as exc:  # e.g. a malformed log entry
            if watch.finding is None and watch.error is None:
                watch.error = f"unexpected {type(exc).__name__}: {exc}"
            done.set()

    async def body() -> tuple[StageResult, None]:
        shown = WaitProgress(progress_key(service, label), f"{label}: watching {revision} for {duration_s:g} s")
        await shown.start()
        loops = [asyncio.create_task(guard(probe_loop)), asyncio.create_task(guard(log_loop))]
        try:
            step = max(interval_s, duration_s / 50, 1.0)  # the progress artifact moves at most every step
            while not done.is_set() and (left := ends - time.monotonic()) > 0:
                await _pause(done, min(step, left))
                await shown.update(percent(time.monotonic() - started, duration_s))
        finally:
            done.set()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        watch.watched_s = time.monotonic() - started
        result = bake_result(watch)
        if watch.finding is None and watch.error is None:
            await shown.finish(f"{label}: watched {revision} for {watch.watched_s:.0f} s")
        else:
            await shown.stop(redact(f"{label}: stopped after {watch.watched_s:.0f} s: {result.summary}"))
        return result, None

    result, _ = await guarded(Stage.BAKE, body, None)
    return gate(result, result)
