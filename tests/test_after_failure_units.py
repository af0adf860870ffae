"""Issue 17, the pure parts: what a release does to the serving revision's variables, the template it
starts from, and how a failed gate's reasons name what the revision logged around the failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.cloud import run_v2
from google.protobuf import duration_pb2

from stagecheck.clients.cloudrun import build_template, merge_env, template_from_revision
from stagecheck.evidence import BakeData
from stagecheck.log_analysis import LogRecord, LogSummary, compare, summarise
from stagecheck.log_analysis.explanation import cause_line, failure_causes, failure_time, needs_explaining
from stagecheck.managed_env import MANAGED_ENV_ANNOTATION, is_system_key, managed_names, plan_env
from stagecheck.model import StageResult, Status, Verdict
from stagecheck.settings import LogRules, ServiceConfig
from stagecheck.stages import Stage
from stagecheck.verdict import decide

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
NEW, OLD = "web-00002-new", "web-00001-old"


# ------------------------------------------------------------------------------------------- variables


def test_plan_env_removes_what_an_earlier_release_set_and_keeps_the_rest() -> None:
    plan = plan_env(["OUTSIDE", "FOO_DEBUG", "GREETING"], {"FOO_DEBUG", "GREETING"}, ["GREETING", "NEW"])
    assert plan.removed == ("FOO_DEBUG",)
    assert plan.kept == ("OUTSIDE",)
    assert plan.configured == ("GREETING", "NEW")


def test_without_a_record_nothing_is_removed() -> None:
    plan = plan_env(["A", "B"], frozenset(), [])
    assert (plan.removed, plan.kept) == ((), ("A", "B"))


def test_managed_names_reads_the_annotation() -> None:
    assert managed_names({MANAGED_ENV_ANNOTATION: "A,B, C"}) == {"A", "B", "C"}
    assert managed_names({}) == frozenset()
    assert managed_names({MANAGED_ENV_ANNOTATION: ""}) == frozenset()


def test_merge_env_drops_dropped_managed_variables_keeps_outside_ones_in_order() -> None:
    current = [run_v2.EnvVar(name="OUTSIDE", value="1"), run_v2.EnvVar(name="FOO_DEBUG", value="1"),
               run_v2.EnvVar(name="GREETING", value="old")]
    svc = ServiceConfig(name="web", env={"GREETING": "new"}, secrets={"DB_PASSWORD": "db:3"})
    merged = merge_env(current, svc, {"FOO_DEBUG", "GREETING"})
    assert [(e.name, e.value) for e in merged] == [("OUTSIDE", "1"), ("GREETING", "new"), ("DB_PASSWORD", "")]
    assert merged[2].value_source.secret_key_ref.secret == "db"


def test_build_template_records_the_variables_the_config_set_and_removes_the_dropped_ones() -> None:
    current = run_v2.RevisionTemplate(
        containers=[run_v2.Container(image="old", env=[run_v2.EnvVar(name="FOO_DEBUG", value="1"),
                                                       run_v2.EnvVar(name="OUTSIDE", value="x")])],
        annotations={MANAGED_ENV_ANNOTATION: "FOO_DEBUG", "example.com/owner": "payments"})
    svc = ServiceConfig(name="web", env={"GREETING": "hi"}, secrets={"API_KEY": "key:1"})
    t = build_template(svc, image="new", revision="web-r", labels={}, current=current)
    assert [e.name for e in t.containers[0].env] == ["OUTSIDE", "GREETING", "API_KEY"]
    assert dict(t.annotations) == {MANAGED_ENV_ANNOTATION: "API_KEY,GREETING", "example.com/owner": "payments"}


# ------------------------------------------------------------------------------------------- template


def test_template_from_revision_carries_the_revisions_configuration_not_the_system_keys() -> None:
    rev = run_v2.Revision(
        name="projects/p/locations/r/services/web/revisions/web-00001-old",
        containers=[run_v2.Container(image="img", env=[run_v2.EnvVar(name="KEEP", value="1")])],
        service_account="runtime@p.iam.gserviceaccount.com",
        scaling=run_v2.RevisionScaling(min_instance_count=1, max_instance_count=4),
        timeout=duration_pb2.Duration(seconds=42), max_instance_request_concurrency=7,
        vpc_access=run_v2.VpcAccess(connector="projects/p/locations/r/connectors/c"),
        volumes=[run_v2.Volume(name="tmp", empty_dir=run_v2.EmptyDirVolumeSource())],
        labels={"team": "payments", "cloud.googleapis.com/location": "r"},
        annotations={"example.com/owner": "payments", "run.googleapis.com/operation-id": "x",
                     MANAGED_ENV_ANNOTATION: "KEEP"})
    failed = run_v2.RevisionTemplate(health_check_disabled=True, service_account="other@p.iam.gserviceaccount.com")
    t = template_from_revision(rev, failed)
    assert t.service_account == "runtime@p.iam.gserviceaccount.com"
    assert (t.scaling.min_instance_count, t.scaling.max_instance_count) == (1, 4)
    assert t.timeout.seconds == 42 and t.max_instance_request_concurrency == 7
    assert t.vpc_access.connector.endswith("/connectors/c") and [v.name for v in t.volumes] == ["tmp"]
    assert [(e.name, e.value) for e in t.containers[0].env] == [("KEEP", "1")]
    assert dict(t.labels) == {"team": "payments"}
    assert dict(t.annotations) == {"example.com/owner": "payments", MANAGED_ENV_ANNOTATION: "KEEP"}
    assert t.revision == "" and t.health_check_disabled is True  # not on a Revision: from the service's template


def test_system_keys() -> None:
    assert is_system_key("run.googleapis.com/client-name") and is_system_key("serving.knative.dev/creator")
    assert is_system_key("features.run.googleapis.com/x")
    assert not is_system_key("example.com/owner") and not is_system_key("team")


# ------------------------------------------------------------------------------------------- explanation


def rec(seconds: float, message: str, *, severity: str = "DEFAULT", revision: str = NEW, stream: str = "stderr",
        insert_id: str = "") -> LogRecord:
    return LogRecord(timestamp=T0 + timedelta(seconds=seconds), severity=severity, message=message, stream=stream,
                     revision=revision, insert_id=insert_id or f"id-{seconds}")


CRASH = ["Traceback (most recent call last):", '  File "/app/worker.py", line 42, in run',
         "    conn = pool.acquire(timeout=3.0)", "RuntimeError: connection pool exhausted"]


def summaries(new: list[LogRecord], old: list[LogRecord]) -> tuple[LogSummary, LogSummary]:
    window = (T0 - timedelta(minutes=5), T0 + timedelta(minutes=5))
    return summarise(new, revision=NEW, window=window), summarise(old, revision=OLD, window=window)


def test_failure_causes_name_the_crash_first_with_its_exception_line_and_skip_pre_existing_ones() -> None:
    new = [rec(12.0 + i * 0.001, line) for i, line in enumerate(CRASH)] + [
        rec(12.1, "Container called exit(1).", stream="varlog/system"),
        rec(5, "cache refresh slow", severity="ERROR", stream="stdout"),
        rec(30, "late error after the failure", severity="ERROR", stream="stdout"),
        rec(6, "known flaky dependency", severity="ERROR", stream="stdout")]
    old = [rec(-60, "known flaky dependency", severity="ERROR", revision=OLD, stream="stdout")]
    current, previous = summaries(new, old)
    causes = failure_causes(compare(current, previous, LogRules()), T0 + timedelta(seconds=13))
    assert [(c.crash, c.signature.split(":")[0]) for c in causes] == [
        ("traceback", "Traceback"), ("exit", "Container called exit(<n>)."), (None, "cache refresh slow")]
    assert cause_line(causes[0]).startswith("crash (traceback): RuntimeError: connection pool exhausted (x1, first at "
                                            "12:00:12Z, entry ")
    assert cause_line(causes[2]).startswith("new ERROR: cache refresh slow (x1, first at 12:00:05Z")


def test_needs_explaining_and_failure_time() -> None:
    probe = StageResult(name=Stage.PROBE_SERVING, status=Status.FAIL, summary="x")
    assert needs_explaining(probe)
    assert not needs_explaining(StageResult(name=Stage.LOGS, status=Status.FAIL, summary="x"))
    assert not needs_explaining(StageResult(name=Stage.DEPLOY, status=Status.FAIL, summary="x"))
    data = dict(label="bake", planned_s=30, watched_s=12, started_at=T0.isoformat(), urls=[], probes=3,
                probe_failures=1, last_probe_at=None, log_reads=1, log_retries=0, log_entries=0,
                time_to_detect_s=12, detected_at=(T0 + timedelta(seconds=12)).isoformat(),
                first_evidence_at=None, reason="r", new_signatures=[])
    by_probe = StageResult(name=Stage.BAKE, status=Status.FAIL, summary="x",
                           data=BakeData(detected_by="probe", **data).to_data())  # type: ignore[arg-type]
    by_logs = StageResult(name=Stage.BAKE, status=Status.FAIL, summary="x",
                          data=BakeData(detected_by="logs", **data).to_data())  # type: ignore[arg-type]
    assert needs_explaining(by_probe) and not needs_explaining(by_logs)
    assert failure_time(by_probe) == T0 + timedelta(seconds=12)


def test_the_causes_follow_their_stage_in_the_reasons() -> None:
    failed = StageResult(name=Stage.BAKE, status=Status.FAIL, summary="probe timed out",
                         causes=["crash (traceback): RuntimeError: connection pool exhausted (x1)"])
    rollback = StageResult(name=Stage.ROLLBACK, status=Status.PASS, summary="restored")
    verdict, decided_by, reasons, _ = decide([failed, rollback], [Stage.BAKE])
    assert (verdict, decided_by) == (Verdict.FAIL, Stage.BAKE)
    assert reasons == ["bake: probe timed out",
                       "bake: the revision logged crash (traceback): RuntimeError: connection pool exhausted (x1)"]
