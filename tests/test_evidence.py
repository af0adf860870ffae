"""The typed stage payloads: what the logs and probe stages hand the report reads back as the same model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stagecheck.evidence import LogsData, ProbeAttemptData, ProbeData
from stagecheck.log_analysis import LogRecord, compare, judge_logs, judge_logs_unavailable, summarise
from stagecheck.model import Status
from stagecheck.probe_policy import ProbeAttempt
from stagecheck.prober import ProbeResult
from stagecheck.settings import LogRules, ProbeMode, UrlKind

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _rec(seconds: float, message: str = "", *, status: int | None = None, revision: str = "shop-00002-abc",
         severity: str = "ERROR") -> LogRecord:
    return LogRecord(timestamp=T0 + timedelta(seconds=seconds), severity=severity, message=message,
                     stream="requests" if status else "stderr", revision=revision, http_status=status,
                     insert_id=f"i{seconds:g}", request_url="https://shop.run.app/pay" if status else None)


def test_the_logs_stage_payload_reads_back_as_the_model_it_was_built_from() -> None:
    window = (T0, T0 + timedelta(minutes=2))
    current = summarise([_rec(1, "KeyError: 'price'"), _rec(2, status=500), _rec(3, status=200)],
                        revision="shop-00002-abc", window=window)
    previous = summarise([], revision="shop-00001-xyz", window=(T0 - timedelta(minutes=2), T0))
    result = judge_logs(current, compare(current, previous, LogRules()), LogRules(), truncated=True)

    data = LogsData.read(result.data)
    assert data is not None
    assert data.to_data() == result.data  # nothing lost or renamed on the way
    assert (data.revision, data.previous_revision, data.truncated) == ("shop-00002-abc", "shop-00001-xyz", True)
    assert [g.signature for g in data.new] == ["KeyError: 'price'"]
    assert data.new[0].count == 1 and data.new[0].insert_ids == ["i1"]
    assert data.window == (T0.isoformat(), (T0 + timedelta(minutes=2)).isoformat())
    assert data.server_error_urls == {"500 /pay": 1}


def test_an_unreadable_logs_stage_has_no_analysis_to_read() -> None:
    assert LogsData.read(judge_logs_unavailable("403 from the Logging API").data) is None


def test_probe_evidence_reads_back_and_keeps_only_the_facts_it_has() -> None:
    result = ProbeResult(url="http://127.0.0.1:1/health", kind=UrlKind.TAGGED, mode=ProbeMode.REQUIRED,
                         status=Status.PASS, reason="healthy",
                         attempts=(ProbeAttempt(0.0, None, 0.5, error="connection refused: 127.0.0.1:1"),
                                   ProbeAttempt(0.5, 503, 0.01), ProbeAttempt(1.0, 200, 0.02, health="healthy")),
                         duration_s=1.2345, first_success_s=1.0, cold_start_retries=1)
    evidence = result.evidence()
    probe = ProbeData.read(evidence.data)
    assert probe is not None and probe.to_data() == evidence.data
    assert probe.status_codes() == {"connection refused: 127.0.0.1:1": 1, "503": 1, "200": 1}
    assert probe.latencies_ms() == [10.0, 20.0]
    assert set(evidence.data["attempts"][1]) == {"at_s", "status", "latency_ms", "outcome"}
    assert ProbeAttemptData(at_s=0, status=200, latency_ms=1, cut_by_deadline=True).to_data()["cut_by_deadline"] is True


def test_the_bake_payload_reads_back_with_the_last_probe_the_logs_stage_settles_to() -> None:
    from stagecheck.bake import BakeFinding, BakeWatch, bake_result
    from stagecheck.evidence import BakeData

    window = (T0, T0 + timedelta(minutes=1))
    current = summarise([_rec(5, "KeyError: 'price'")], revision="shop-00002-abc", window=window)
    watch = BakeWatch(label="bake after 100 %", planned_s=60.0, started_at=T0, urls=["http://127.0.0.1:1/h"],
                      watched_s=21.3, probes=20, log_reads=5, last_probe_at=T0 + timedelta(seconds=20),
                      new_signatures=[g.as_evidence() for g in compare(current, None, LogRules()).new],
                      finding=BakeFinding(source="logs", reason="new ERROR", at_s=21.2, detected_at=T0))
    result = bake_result(watch)
    data = BakeData.read(result.data)
    assert data is not None and data.to_data() == result.data
    assert data.last_probe_at == (T0 + timedelta(seconds=20)).isoformat()
    assert [g.signature for g in data.new_signatures] == ["KeyError: 'price'"]
    assert result.evidence[-1].summary == "new ERROR x1: KeyError: 'price'"
    assert BakeData.read({}) is None  # a bake task that crashed before it watched
