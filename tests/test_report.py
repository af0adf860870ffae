from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from stagecheck.log_analysis import LogRecord, compare, judge_logs, previous_window, summarise
from stagecheck.model import (
    Criterion,
    Evidence,
    ImageInfo,
    RevisionInfo,
    Rollback,
    ServiceReport,
    StageResult,
    Status,
    TrafficTarget,
)
from stagecheck.report import (
    CELL_WIDTH,
    console_logs_url,
    console_service_url,
    criteria_rows,
    render_markdown,
    render_run_markdown,
    to_json,
)
from stagecheck.settings import LogRules
from stagecheck.verdict import REQUIRED_STAGES, collect_criteria, decide

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NEW = "checkout-00002-abc"
OLD = "checkout-00001-xyz"
DIGEST = "sha256:" + "9b2f4c1e" * 8
LEAKED_TOKEN = "ya29.a0AfH6SMBxSuperSecretAccessToken"
SECTIONS = [
    "Deployment summary",
    "Stages",
    "Performance impact vs previous revision",
    "Service health",
    "Breaking changes audit",
    "Logs analysis",
    "Success criteria",
    "Issues identified",
    "Rollback",
    "Conclusion",
]


# ------------------------------------------------------------------------------------------- builders


def probe_evidence(
    kind: str, url: str, statuses: list[int], status: str = "PASS", reason: str = ""
) -> Evidence:
    """Shaped like stagecheck.prober.ProbeResult.evidence()."""
    attempts = [{"at_s": i * 0.2, "status": s, "latency_ms": 10.0 + 10 * i} for i, s in enumerate(statuses)]
    return Evidence(
        kind="http",
        summary=f"GET {url}: {len(statuses)} answers",
        data={
            "method": "GET",
            "url": url,
            "url_kind": kind,
            "mode": "required",
            "status": status,
            "reason": reason or "3 consecutive healthy answers",
            "duration_s": 1.2,
            "first_success_s": 0.4,
            "cold_start_retries": sum(1 for s in statuses if s in (503, 429)),
            "attempts": attempts,
        },
    )


def probe_stage(
    name: str,
    kind: str,
    url: str,
    status: Status = Status.PASS,
    statuses: list[int] | None = None,
    reason: str = "",
) -> StageResult:
    statuses = statuses or [503, 200, 200, 200]
    ev = probe_evidence(kind, url, statuses, status=str(status), reason=reason)
    return StageResult(
        name=name,
        status=status,
        summary=ev.summary if status is Status.PASS else reason,
        duration_s=1.2,
        evidence=[ev],
        criteria=[
            Criterion(
                name=f"{kind} URL healthy",
                stage=name,
                status=status,
                expected="3 consecutive healthy answers within 60 s (required)",
                observed=reason or "3 consecutive healthy answers",
                evidence=[ev.summary],
            )
        ],
    )


def logs_stage(current: list[tuple[float, str, str]], previous: list[tuple[float, str, str]]) -> StageResult:
    window = (T0, T0 + timedelta(minutes=3))
    prev_window = previous_window(window)

    def records(rows: list[tuple[float, str, str]], revision: str, start: datetime) -> list[LogRecord]:
        return [
            LogRecord(
                timestamp=start + timedelta(seconds=s),
                severity=sev,
                message=msg,
                stream="stderr",
                revision=revision,
                insert_id=f"id{i}",
            )
            for i, (s, sev, msg) in enumerate(rows)
        ]

    requests = [
        LogRecord(
            timestamp=T0 + timedelta(seconds=1 + i),
            severity="INFO",
            # the 503: Cloud Run's front end refused it (no instance, 0 s, its text), excused
            message="The request was aborted because there was no available instance." if code == 503 else "",
            stream="requests",
            revision=NEW,
            http_status=code,
            request_url="https://tag---checkout.run.app/health",
            latency_s=0.0,
            instance_id="" if code == 503 else "00ab",
            user_agent="stagecheck-probe/0.1",
        )
        for i, code in enumerate([503, 200, 200, 200])
    ]
    cur = summarise(records(current, NEW, T0) + requests, revision=NEW, window=window)
    prev = summarise(records(previous, OLD, prev_window[0]), revision=OLD, window=prev_window)
    rules = LogRules()
    return judge_logs(cur, compare(cur, prev, rules), rules).model_copy(update={"duration_s": 3.1})


def simple(name: str, status: Status = Status.PASS, summary: str | None = None) -> StageResult:
    return StageResult(
        name=name,
        status=status,
        summary=summary or f"{name} ok",
        duration_s=2.0,
        criteria=[]
        if status is Status.SKIP
        else [
            Criterion(
                name=f"{name} succeeds", stage=name, status=status, expected="ok", observed=summary or "ok"
            )
        ],
    )


def make_report(stages: list[StageResult], **overrides: Any) -> ServiceReport:
    verdict, decided_by, reasons, warnings = decide(stages, REQUIRED_STAGES)
    base: dict[str, Any] = {
        "service": "checkout",
        "project": "staging-proj",
        "region": "europe-west1",
        "verdict": verdict,
        "decided_by": decided_by,
        "reasons": reasons,
        "warnings": warnings,
        "stages": stages,
        "criteria": collect_criteria(stages),
        "image": ImageInfo(
            reference="europe-west1-docker.pkg.dev/staging-proj/apps/checkout:abc1234",
            digest=DIGEST,
            size_bytes=120_000_000,
            previous_size_bytes=118_000_000,
            local_size_bytes=300_000_000,
        ),
        "revision": RevisionInfo(
            name=NEW,
            tag="sha-abc1234",
            tag_url="https://sha-abc1234---checkout-xyz.a.run.app",
            created_at=T0,
            ready_at=T0 + timedelta(seconds=4.5),
            cpu="1",
            memory="512Mi",
            min_instances=0,
            max_instances=3,
        ),
        "previous_revision": RevisionInfo(
            name=OLD,
            created_at=T0 - timedelta(days=1),
            ready_at=T0 - timedelta(days=1) + timedelta(seconds=4.0),
            cpu="1",
            memory="512Mi",
            min_instances=0,
            max_instances=3,
        ),
        "traffic_before": [TrafficTarget(revision=OLD, percent=100)],
        "traffic_after": [TrafficTarget(revision=NEW, percent=100)],
        "git_sha": "abc1234def5678",
        "started_at": T0 - timedelta(minutes=2),
        "finished_at": T0 + timedelta(minutes=4),
        "estimated_monthly_cost_usd": 5.45,
        "previous_estimated_monthly_cost_usd": 5.45,
        "urls": {"service": "https://checkout-xyz.a.run.app"},
    }
    base.update(overrides)
    return ServiceReport(**base)


def passing_stages(logs: StageResult | None = None) -> list[StageResult]:
    return [
        simple("syntax"),
        simple("build"),
        simple("push"),
        simple("deploy"),
        probe_stage("probe-tagged", "tagged", "https://sha-abc1234---checkout-xyz.a.run.app/health"),
        simple("traffic"),
        probe_stage(
            "probe-serving", "service", "https://checkout-xyz.a.run.app/health", statuses=[200, 200, 200]
        ),
        logs or logs_stage([(5, "INFO", "started server")], [(5, "INFO", "started server")]),
    ]


@pytest.fixture
def pass_report() -> ServiceReport:
    return make_report(passing_stages())


@pytest.fixture
def deploy_fail_report() -> ServiceReport:
    stages = [
        simple("syntax"),
        simple("build"),
        simple("push"),
        simple(
            "deploy",
            Status.FAIL,
            f"revision {NEW} failed: The user-provided container failed to start and listen on the port",
        ),
        *[
            simple(n, Status.SKIP, "an earlier gate failed")
            for n in ("probe-tagged", "traffic", "probe-serving", "logs")
        ],
    ]
    return make_report(
        stages, traffic_after=[TrafficTarget(revision=OLD, percent=100)], estimated_monthly_cost_usd=None
    )


@pytest.fixture
def logs_fail_report() -> ServiceReport:
    logs = logs_stage(
        [
            (5, "DEFAULT", "ModuleNotFoundError: No module named 'stripe'"),
            (6, "ERROR", f"upstream rejected Authorization: Bearer {LEAKED_TOKEN} | retry\nsecond line"),
            (7, "ERROR", "cache miss storm"),
        ],
        [(5, "ERROR", "cache miss storm")],
    )
    rollback = StageResult(name="rollback", status=Status.PASS, summary=f"traffic restored to {OLD} 100%")
    return make_report(
        [*passing_stages(logs), rollback],
        rollback=Rollback(
            needed=True,
            performed=True,
            ok=True,
            restored=[TrafficTarget(revision=OLD, percent=100)],
            message="restored in 3.2 s",
        ),
        traffic_after=[TrafficTarget(revision=OLD, percent=100)],
    )


@pytest.fixture
def warn_report() -> ServiceReport:
    stages = passing_stages()
    stages[6] = probe_stage(
        "probe-serving",
        "lb",
        "https://lb.example.test/checkout/api/health",
        Status.WARN,
        statuses=[200, 502, 200, 200, 200],
        reason="degraded: 1x 502 between healthy answers",
    )
    return make_report(stages)


# ----------------------------------------------------------------------------------------------- helpers


def section(md: str, title: str) -> str:
    match = re.search(rf"^##+ {re.escape(title)}\n(.*?)(?=^##+ |\Z)", md, re.M | re.S)
    assert match, f"section {title!r} missing"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [re.split(r"(?<!\\)\|", row)[1:-1] for row in rows[2:]]


# ------------------------------------------------------------------------------------------------- tests


def test_git_ref_is_shown_when_known(pass_report: ServiceReport) -> None:
    assert "Git ref" not in section(render_markdown(pass_report), "Deployment summary")
    with_ref = pass_report.model_copy(update={"git_ref": "refs/heads/main"})
    assert "| Git ref | refs/heads/main |" in section(render_markdown(with_ref), "Deployment summary")


def test_pass_report_has_every_section_in_order(pass_report: ServiceReport) -> None:
    md = render_markdown(pass_report)
    assert md.startswith("# ✅ PASS: checkout")
    positions = [md.index(f"## {title}\n") for title in SECTIONS]
    assert positions == sorted(positions)
    deployment = section(md, "Deployment summary")
    for fact in (
        "staging-proj",
        "europe-west1",
        "abc1234def5678",
        DIGEST,
        NEW,
        "120.0 MB",
        "https://sha-abc1234---checkout-xyz.a.run.app",
        f"{OLD} 100% → {NEW} 100%",
    ):
        assert fact in deployment
    assert "ready for production promotion" in section(md, "Conclusion")
    assert "None." in section(md, "Issues identified")
    assert "❌" not in md


def test_performance_section_compares_with_previous(pass_report: ServiceReport) -> None:
    pass_report_md = render_markdown(pass_report)
    perf_rows = table_rows(section(pass_report_md, "Performance impact vs previous revision"))
    perf = {row[0].strip(): row for row in perf_rows}
    assert perf["Image size (registry)"][3].strip() == "+2.00 MB (+1.7 %)"
    assert perf["Startup (created → Ready)"][1].strip() == "4.5 s"
    assert perf["Startup (created → Ready)"][3].strip() == "+0.5 s"
    assert perf["Memory"][1].strip() == "512Mi" and perf["Memory"][3].strip() == "unchanged"
    assert perf["Est. monthly cost"][1].strip() == "5.45 USD"
    assert "First deployment" not in pass_report_md


def test_first_deploy_says_nothing_to_compare(pass_report: ServiceReport) -> None:
    assert pass_report.image is not None
    image = pass_report.image.model_copy(update={"previous_size_bytes": None})
    first = pass_report.model_copy(update={"previous_revision": None, "traffic_before": [], "image": image})
    perf = section(render_markdown(first), "Performance impact vs previous revision")
    assert "First deployment" in perf


def test_health_section_shows_codes_retries_latency(pass_report: ServiceReport) -> None:
    rows = table_rows(section(render_markdown(pass_report), "Service health"))
    assert len(rows) == 2
    tagged = [c.strip() for c in rows[0]]
    assert tagged[0] == "tagged (probe-tagged)"
    assert tagged[2] == "✅ PASS"
    assert tagged[3] == "1× 503, 3× 200"
    assert tagged[4] == "4" and tagged[5] == "1"
    assert tagged[6] == "25 ms" and tagged[7] == "40 ms"  # latencies 10, 20, 30, 40


def test_criteria_table_matches_criteria(pass_report: ServiceReport) -> None:
    md = render_markdown(pass_report)
    rows = table_rows(section(md, "Success criteria"))
    assert len(rows) == len(pass_report.criteria)
    assert all(len(r) == 5 for r in rows)
    assert {r[1].strip() for r in rows} == {"✅ PASS"}
    assert any("No new ERROR signatures" in r[0] for r in rows)


def test_deploy_failure_report(deploy_fail_report: ServiceReport) -> None:
    md = render_markdown(deploy_fail_report)
    assert md.startswith("# ❌ FAIL: checkout failed staging validation at deploy")
    conclusion = section(md, "Conclusion")
    assert "**deploy** gate" in conclusion and "failed to start" in conclusion
    assert "traffic never moved" in conclusion
    assert "traffic never moved" in section(md, "Rollback")
    issues = section(md, "Issues identified")
    assert "❌ deploy: revision" in issues
    assert "stages probe-tagged, traffic, probe-serving, logs did not run: an earlier gate failed" in issues
    assert "Logs were not analysed" in section(md, "Logs analysis")
    statuses = [r[1].strip() for r in table_rows(section(md, "Success criteria"))]
    assert "❌ FAIL" in statuses
    stage_rows = {r[0].strip(): r[1].strip() for r in table_rows(section(md, "Stages"))}
    assert stage_rows["deploy"] == "❌ FAIL" and stage_rows["logs"] == "⏭ SKIP"


def test_logs_failure_with_rollback(logs_fail_report: ServiceReport) -> None:
    assert logs_fail_report.decided_by == "logs"
    md = render_markdown(logs_fail_report)
    assert md.startswith("# ❌ FAIL: checkout failed staging validation at logs")
    logs = section(md, "Logs analysis")
    assert "**New signatures (gated):** 2" in logs
    assert "**Pre-existing signatures (also on the previous revision):** 1" in logs
    assert "No module named 'stripe'" in logs and "crash: import-error" in logs
    assert "platform refusals (excused): 1" in logs
    assert "stagecheck's probes: 4 requests, 0 failed" in logs
    rollback = section(md, "Rollback")
    assert f"succeeded: traffic restored to {OLD} 100%" in rollback
    assert "restored in 3.2 s" in rollback
    conclusion = section(md, "Conclusion")
    assert "**logs** gate" in conclusion and "traffic was rolled back" in conclusion
    crit = {r[0].strip(): r[1].strip() for r in table_rows(section(md, "Success criteria"))}
    assert crit["No new ERROR signatures"] == "❌ FAIL"
    assert crit["No crash signatures"] == "❌ FAIL"


def test_secrets_from_logs_never_reach_any_output(logs_fail_report: ServiceReport) -> None:
    outputs = [
        render_markdown(logs_fail_report),
        to_json(logs_fail_report),
        json.dumps(criteria_rows(logs_fail_report)),
        render_run_markdown([logs_fail_report]),
    ]
    # the secret is in the raw evidence data before rendering (the log example was redacted at
    # summarise time, so plant one more directly in the evidence to test the renderer's own pass)
    planted = logs_fail_report.model_copy(deep=True)
    planted.stages[0].summary = f"used {LEAKED_TOKEN}"
    planted.stages[0].evidence.append(Evidence(kind="note", summary="x", data={"password": "hunter22!"}))
    outputs += [render_markdown(planted), to_json(planted)]
    for out in outputs:
        assert "SuperSecretAccessToken" not in out
        assert "hunter22!" not in out
    assert "[REDACTED]" in render_markdown(planted)


def test_caller_secret_values_are_masked(pass_report: ServiceReport) -> None:
    report = pass_report.model_copy(deep=True)
    report.stages[1].summary = "built with STRIPE key sk_live_51Habc"
    md = render_markdown(report, secret_values=["sk_live_51Habc"])
    js = to_json(report, secret_values=["sk_live_51Habc"])
    rows = criteria_rows(report, secret_values=["sk_live_51Habc"])
    assert "sk_live_51Habc" not in md and "sk_live_51Habc" not in js
    assert "sk_live_51Habc" in render_markdown(report)  # it is not a known shape: only the caller knows it
    assert rows


def test_table_cells_escape_pipes_newlines_and_html(pass_report: ServiceReport) -> None:
    report = pass_report.model_copy(deep=True)
    report.criteria.append(
        Criterion(
            name="Smoke | checkout",
            stage="smoke",
            status=Status.WARN,
            expected="exit 0",
            observed="line one\nline two <script>",
            evidence=["a|b"],
        )
    )
    rows = table_rows(section(render_markdown(report), "Success criteria"))
    last = [c.strip() for c in rows[-1]]
    assert len(rows[-1]) == 5
    assert last[0] == "Smoke \\| checkout"
    assert last[1] == "⚠️ WARN"
    assert last[3] == "line one<br>line two &lt;script&gt;"
    assert last[4] == "a\\|b"


def test_warn_degraded_report(warn_report: ServiceReport) -> None:
    md = render_markdown(warn_report)
    assert md.startswith("# ✅ PASS")
    health = section(md, "Service health")
    assert "⚠️ WARN" in health
    assert "degraded: 1x 502" in health
    issues = section(md, "Issues identified")
    assert "⚠️ probe-serving: degraded" in issues
    assert "1 warning(s) should be reviewed" in section(md, "Conclusion")
    assert "ready for production promotion" in section(md, "Conclusion")


def test_criteria_rows_for_table_artifact(logs_fail_report: ServiceReport) -> None:
    rows = criteria_rows(logs_fail_report)
    assert len(rows) == len(logs_fail_report.criteria)
    assert set(rows[0]) == {"criterion", "stage", "status", "expected", "observed", "evidence"}
    logs_rows = [r for r in rows if r["stage"] == "logs"]
    assert [r["status"] for r in logs_rows] == ["❌ FAIL", "❌ FAIL", "✅ PASS"]


def test_criteria_fall_back_to_stage_criteria(pass_report: ServiceReport) -> None:
    empty = pass_report.model_copy(update={"criteria": []})
    assert len(criteria_rows(empty)) == len(collect_criteria(pass_report.stages))
    assert len(json.loads(to_json(empty))["criteria"]) == len(collect_criteria(pass_report.stages))


def test_json_report_parses_with_required_keys(logs_fail_report: ServiceReport) -> None:
    data = json.loads(to_json(logs_fail_report))
    for key in (
        "schema_version",
        "verdict",
        "decided_by",
        "reasons",
        "warnings",
        "stages",
        "criteria",
        "image",
        "revision",
        "rollback",
        "traffic_before",
        "traffic_after",
        "started_at",
    ):
        assert key in data
    assert data["verdict"] == "fail"
    assert [s["name"] for s in data["stages"]][-2:] == ["logs", "rollback"]
    logs = next(s for s in data["stages"] if s["name"] == "logs")
    assert logs["status"] == "FAIL" and logs["duration_s"] == 3.1
    assert logs["evidence"] and {"signature", "count", "severity"} <= set(logs["evidence"][1]["data"])
    assert data["image"]["digest"] == DIGEST
    assert data["rollback"]["restored"] == [{"revision": OLD, "percent": 100, "tag": None}]


def test_run_markdown_summarises_several_services(
    pass_report: ServiceReport, deploy_fail_report: ServiceReport
) -> None:
    other = pass_report.model_copy(update={"service": "payments"})
    md = render_run_markdown([other, deploy_fail_report])
    assert md.startswith("# ❌ Staging validation: 1 of 2 service(s) failed")
    summary = table_rows(md.split("\n## ", 1)[0])
    assert [r[0].strip() for r in summary] == ["payments", "checkout"]
    assert [r[1].strip() for r in summary] == ["✅ PASS", "❌ FAIL"]
    assert summary[1][2].strip() == "deploy"
    assert "\n## ✅ PASS: payments" in md and "\n## ❌ FAIL: checkout" in md
    assert "\n### Deployment summary" in md
    assert render_run_markdown([pass_report]).startswith("# ✅ Staging validation: all 1 service(s) passed")
    assert render_run_markdown([]).startswith("# ❌")


def test_console_logs_url_selects_the_revision() -> None:
    url = console_logs_url(project="staging-proj", region="europe-west1", service="checkout", revision=NEW)
    assert url.startswith("https://console.cloud.google.com/logs/query;query=")
    assert url.endswith("?project=staging-proj")
    encoded = url.split(";query=", 1)[1].split("?", 1)[0]
    assert " " not in encoded and '"' not in encoded and "=" not in encoded
    query = unquote(encoded)
    assert query.splitlines() == [
        'resource.type="cloud_run_revision"',
        'resource.labels.service_name="checkout"',
        f'resource.labels.revision_name="{NEW}"',
        'resource.labels.location="europe-west1"',
    ]
    local = console_logs_url(
        project="p-123456", region="r", service="s", revision="v", console_base="http://127.0.0.1:9000/"
    )
    assert local.startswith("http://127.0.0.1:9000/logs/query;query=")


def test_console_service_url() -> None:
    assert console_service_url(project="staging-proj", region="europe-west1", service="checkout") == (
        "https://console.cloud.google.com/run/detail/europe-west1/checkout/revisions?project=staging-proj"
    )


def test_markdown_uses_logs_url_link(pass_report: ServiceReport) -> None:
    md = render_markdown(pass_report)
    link = re.search(r"\[Logs Explorer\]\(([^)]+)\)", md)
    assert link is not None
    assert f'revision_name="{NEW}"' in unquote(link.group(1))


def test_issues_merge_stages_that_did_not_run_for_one_cause(pass_report: ServiceReport) -> None:
    report = pass_report.model_copy(
        update={
            "reasons": [
                "build: docker build failed",
                "stage push did not run: an earlier gate failed",
                "stage logs did not run: no result recorded",
                "stage deploy did not run: an earlier gate failed",
            ]
        }
    )
    issues = [line for line in section(render_markdown(report), "Issues identified").splitlines() if line]
    assert [line.split(" (evidence")[0] for line in issues] == [
        "- ❌ build: docker build failed",
        "- ❌ stages push, deploy did not run: an earlier gate failed",
        "- ❌ stage logs did not run: no result recorded",
    ]


def test_bake_section_shows_the_window_counts_and_time_to_detect(pass_report: ServiceReport) -> None:
    from datetime import UTC, datetime

    from stagecheck.bake import BakeFinding, BakeWatch, bake_result

    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    clean = bake_result(BakeWatch(label="canary hold at 50 %", planned_s=30, started_at=start,
                                  urls=["https://checkout.run.app/health"], watched_s=30.0, probes=30, log_reads=6,
                                  log_entries=80))
    failed = BakeWatch(label="bake after 100 %", planned_s=60, started_at=start, urls=["https://lb/checkout/health"],
                       watched_s=12.4, probes=12, log_reads=3, log_retries=1, log_entries=31)
    failed.finding = BakeFinding(source="logs", reason="new crash: traceback", at_s=12.3, detected_at=start)
    report = pass_report.model_copy(update={"stages": [*pass_report.stages, clean, bake_result(failed)]})
    md = render_markdown(report)
    rows = [[cell.strip() for cell in row] for row in table_rows(section(md, "Bake window (watched while serving)"))]
    assert rows[0][0] == "canary hold at 50 %" and rows[0][2] == "30.0 s of 30 s" and rows[0][4] == "30"
    assert rows[0][7] == "–"
    assert rows[1][2] == "12.4 s of 60 s" and rows[1][5] == "3 (1 retried)"
    assert rows[1][7] == "12.3 s (logs)" and rows[1][8] == "new crash: traceback"
    assert md.index("## Service health") < md.index("## Bake window") < md.index("## Logs analysis")
    assert "not watched after the traffic shift" in section(render_markdown(pass_report),
                                                             "Bake window (watched while serving)")


def test_wide_text_goes_below_the_table_and_the_cells_stay_short(pass_report: ServiceReport) -> None:
    long = ("the candidate answered 503 on /health for 60 s while the previous revision answered 200; "
            "the container logged `connection refused` to the database at 10.0.0.5:5432 twelve times")
    report = pass_report.model_copy(deep=True)
    report.stages[0] = report.stages[0].model_copy(update={"summary": long})
    report.criteria.append(Criterion(name="Health", stage="probe-tagged", status=Status.FAIL, expected="200",
                                     observed=long))
    md = render_markdown(report)
    for title in ("Stages", "Success criteria"):
        text = section(md, title)
        cells = [c.strip() for row in table_rows(text) for c in row]
        assert max(len(c) for c in cells) <= CELL_WIDTH + len("… *(note 9)*")
        marked = next(c for c in cells if c.startswith("the candidate answered 503"))
        note = re.fullmatch(r".*… \*\(note (\d+)\)\*", marked)
        assert note, marked
        assert f"**Note {note.group(1)}.** " + long in text  # the whole text, right below its table
    stage_cell = table_rows(section(md, "Stages"))[0][3].strip()
    assert stage_cell.startswith("the candidate answered 503") and stage_cell.endswith("*(note 1)*")
    run = render_run_markdown([report.model_copy(update={"reasons": [long]})])
    head = run.split("\n---\n")[0]
    assert "*(note 1)*" in table_rows(head)[0][5] and "**Note 1.** " + long in head
