"""The staging report, rendered from a ServiceReport: markdown (the Prefect artifact), table rows, JSON.

Every string that reaches the output passes through `redact` (log lines and probe bodies can carry
credentials); table cells escape `|`, newlines and HTML.
"""

from __future__ import annotations

import html
import json
import re
import statistics
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from stagecheck.analysis.report_section import analysis_lines
from stagecheck.evidence import BakeData, LogsData, ProbeData, SignatureGroupData
from stagecheck.log_query import CONSOLE_BASE, console_logs_url
from stagecheck.model import Criterion, ServiceReport, StageResult, Status, TrafficTarget, Verdict
from stagecheck.redact import redact, redact_obj
from stagecheck.stages import Stage
from stagecheck.verdict import collect_criteria

REPORT_SCHEMA_VERSION = 1
CELL_WIDTH = 60  # characters of text a table cell shows; the rest goes to a note below the table

STATUS_LABEL = {
    Status.PASS: "✅ PASS",
    Status.FAIL: "❌ FAIL",
    Status.WARN: "⚠️ WARN",
    Status.SKIP: "⏭ SKIP",
}
VERDICT_LABEL = {Verdict.PASS: "✅ PASS", Verdict.FAIL: "❌ FAIL"}
_NOT_RUN = re.compile(r"^stage (\S+) did not run: (.*)$", re.S)


# ----------------------------------------------------------------------------------------- console links


def console_service_url(*, project: str, region: str, service: str, console_base: str = CONSOLE_BASE) -> str:
    """The service's revisions page in the Cloud Run console."""
    return (
        f"{console_base.rstrip('/')}/run/detail/{quote(region, safe='')}/{quote(service, safe='')}"
        f"/revisions?project={quote(project, safe='')}"
    )


# --------------------------------------------------------------------------------------------- escaping


class _Out:
    """Renders text with redaction applied; `cell` for table cells, `code` for inline code."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        self.secrets = tuple(secret_values)

    def text(self, value: Any) -> str:
        return html.escape(redact(str(value), self.secrets), quote=False)

    def cell(self, value: Any) -> str:
        text = self.text(value).replace("\r\n", "\n").replace("\r", "\n").strip()
        return text.replace("|", "\\|").replace("\n", "<br>") or "—"

    def short(self, value: Any, notes: list[str]) -> str:
        """A table cell that stays narrow: text wider than CELL_WIDTH is cut at a word, marked `(note N)`,
        and kept whole in `notes` for `_notes` to print below the table (the UI's artifact pane is narrow)."""
        text = " ".join(self.text(value).split())
        if len(text) <= CELL_WIDTH:
            return self.cell(value)
        notes.append(str(value))
        cut = text[:CELL_WIDTH].rsplit(" ", 1)[0].rstrip(",;:")
        return f"{cut.replace('|', chr(92) + '|')}… *(note {len(notes)})*"

    def code(self, value: Any, *, in_table: bool = False) -> str:
        text = " ".join(redact(str(value), self.secrets).split())
        if not text:
            return "—"
        if in_table:
            text = text.replace("|", "\\|")
        fence = "`"
        while fence in text:
            fence += "`"
        pad = " " if text.startswith("`") or text.endswith("`") else ""
        return f"{fence}{pad}{text}{pad}{fence}"

    def link(self, label: str, url: str | None) -> str:
        if not url:
            return "—"
        safe = redact(url, self.secrets).replace(" ", "%20").replace(")", "%29").replace("|", "%7C")
        return f"[{self.text(label)}]({safe})"


def _notes(notes: Sequence[str], out: _Out) -> list[str]:
    """The whole text of each cut table cell, below its table, one paragraph each."""
    return [line for n, note in enumerate(notes, start=1)
            for line in ("", f"**Note {n}.** " + "<br>".join(out.text(note).strip().splitlines()))]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


# ---------------------------------------------------------------------------------------------- helpers


def _mb(size: int | None) -> str:
    return "—" if size is None else f"{size / 1e6:.1f} MB"


def _traffic(targets: Sequence[TrafficTarget]) -> str:
    if not targets:
        return "none"
    parts = []
    for t in targets:
        name = t.revision or "LATEST"
        tag = f" (tag {t.tag})" if t.tag else ""
        parts.append(f"{name} {t.percent}%{tag}")
    return ", ".join(parts)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _signed(value: float, unit: str, digits: int = 1) -> str:
    return f"{value:+.{digits}f} {unit}".strip()


def _percent_change(new: float, old: float) -> str:
    return f" ({(new - old) / old * 100:+.1f} %)" if old else ""


def _criteria(report: ServiceReport) -> list[Criterion]:
    return list(report.criteria) or collect_criteria(report.stages)


def _stage_pointer(report: ServiceReport, line: str) -> str | None:
    """A short pointer at the evidence behind an issue line ("<stage>: ..." or "stage X did not run")."""
    name = line.split(":", 1)[0].strip()
    stage = report.stage(name)
    if stage is None:
        return None
    for criterion in stage.criteria:
        if criterion.status in (Status.FAIL, Status.WARN) and criterion.evidence:
            return criterion.evidence[0]
    if stage.evidence:
        return stage.evidence[0].summary
    return None


# ------------------------------------------------------------------------------------------------ parts


def _title(report: ServiceReport, out: _Out, h: str) -> list[str]:
    if report.verdict is Verdict.PASS:
        head = f"{h} ✅ PASS: {out.text(report.service)} is healthy on staging"
    else:
        gate = f" at {out.text(report.decided_by)}" if report.decided_by else ""
        head = f"{h} ❌ FAIL: {out.text(report.service)} failed staging validation{gate}"
    took = (report.finished_at - report.started_at).total_seconds()
    meta = (
        f"_{out.text(report.project)} / {out.text(report.region)} · started "
        f"{report.started_at.isoformat(timespec='seconds')} · took {took:.1f} s_"
    )
    lines = [head, "", meta]
    if report.flow_run_url:
        lines += ["", f"Flow run: {out.link('open in Prefect', report.flow_run_url)}"]
    return lines


def _deployment(report: ServiceReport, out: _Out, h: str) -> list[str]:
    image, rev = report.image, report.revision
    notes: list[str] = []
    rows: list[tuple[str, str]] = [
        ("Project", out.cell(report.project)),
        ("Region", out.cell(report.region)),
        ("Git SHA", out.code(report.git_sha or "unknown", in_table=True)),
        *([("Git ref", out.cell(report.git_ref))] if report.git_ref else []),
        ("Image", out.code(image.reference, in_table=True) if image else "—"),
        ("Digest", out.code(image.digest, in_table=True) if image and image.digest else "—"),
        ("Image size (registry)", _mb(image.size_bytes) if image else "—"),
    ]
    if image and image.local_size_bytes is not None:
        rows.append(("Image size (local, uncompressed)", _mb(image.local_size_bytes)))
    rows += [
        ("Revision", out.code(rev.name, in_table=True) if rev else "—"),
        ("Revision tag", out.cell(rev.tag) if rev and rev.tag else "—"),
        ("Tag URL", out.cell(rev.tag_url) if rev and rev.tag_url else "—"),
    ]
    for kind, url in report.urls.items():
        rows.append((f"URL ({out.cell(kind)})", out.cell(url)))
    logs_url = rev.log_url if rev and rev.log_url else None
    if logs_url is None and rev is not None:
        logs_url = console_logs_url(
            project=report.project, region=report.region, service=report.service, revision=rev.name
        )
    rows += [
        ("Logs", out.link("Logs Explorer", logs_url)),
        (
            "Console",
            out.link(
                "Cloud Run revisions",
                console_service_url(project=report.project, region=report.region, service=report.service),
            ),
        ),
        (
            "Traffic before → after",
            out.short(f"{_traffic(report.traffic_before)} → {_traffic(report.traffic_after)}", notes),
        ),
    ]
    return [f"{h}# Deployment summary", "", *_table(("Field", "Value"), rows), *_notes(notes, out)]


def _performance(report: ServiceReport, out: _Out, h: str) -> list[str]:
    image, rev, prev = report.image, report.revision, report.previous_revision
    lines = [f"{h}# Performance impact vs previous revision", ""]
    if prev is None and (image is None or image.previous_size_bytes is None):
        lines += ["_First deployment of this service: no previous revision to compare with._", ""]
    rows: list[tuple[str, str, str, str]] = []
    if image is not None:
        change = "—"
        if image.size_change_bytes is not None and image.previous_size_bytes is not None and image.size_bytes:
            change = _signed(image.size_change_bytes / 1e6, "MB", 2) + _percent_change(
                image.size_bytes, image.previous_size_bytes
            )
        rows.append(("Image size (registry)", _mb(image.size_bytes), _mb(image.previous_size_bytes), change))
    new_start = rev.startup_s if rev else None
    old_start = prev.startup_s if prev else None
    start_change = (
        _signed(new_start - old_start, "s") if new_start is not None and old_start is not None else "—"
    )
    rows.append(("Startup (created → Ready)", _seconds(new_start), _seconds(old_start), start_change))
    for label, attr in (
        ("CPU", "cpu"),
        ("Memory", "memory"),
        ("Min instances", "min_instances"),
        ("Max instances", "max_instances"),
    ):
        new = getattr(rev, attr, None) if rev else None
        old = getattr(prev, attr, None) if prev else None
        same = "unchanged" if new is not None and new == old else ("changed" if old is not None else "—")
        rows.append(
            (label, out.cell("—" if new is None else new), out.cell("—" if old is None else old), same)
        )
    cost, old_cost = report.estimated_monthly_cost_usd, report.previous_estimated_monthly_cost_usd
    cost_change = "—"
    if cost is not None and old_cost is not None:
        cost_change = f"{cost - old_cost:+.2f} USD" + _percent_change(cost, old_cost)
    rows.append(
        (
            "Est. monthly cost",
            "—" if cost is None else f"{cost:.2f} USD",
            "—" if old_cost is None else f"{old_cost:.2f} USD",
            cost_change,
        )
    )
    lines += _table(("Metric", "This revision", "Previous", "Change"), rows)
    lines += [
        "",
        "_Cost: rough model (list prices, assumed request volume; see stagecheck.cost), for comparison only._",
    ]
    return lines + analysis_lines(report.stages, report.service, _table, h)


def _probe_row(stage: StageResult, probe: ProbeData, out: _Out) -> tuple[str, ...]:
    codes, latencies = probe.status_codes(), probe.latencies_ms()
    status = Status(probe.status) if probe.status in Status.__members__ else None
    return (
        out.cell(f"{probe.url_kind} ({stage.name})"),
        out.cell(probe.url or "—"),
        STATUS_LABEL[status] if status else out.cell(probe.status or "—"),
        out.cell(", ".join(f"{n}× {code}" for code, n in codes.items()) or "none"),
        str(len(probe.attempts)),
        str("—" if probe.cold_start_retries is None else probe.cold_start_retries),
        f"{statistics.median(latencies):.0f} ms" if latencies else "—",
        f"{max(latencies):.0f} ms" if latencies else "—",
        out.cell(probe.reason),
    )


def _probes(stage: StageResult) -> list[ProbeData]:
    """The stage's HTTP probe evidence, typed."""
    found = (ProbeData.read(ev.data) for ev in stage.evidence if ev.kind == "http" and ev.data.get("url"))
    return [probe for probe in found if probe is not None]


def _health(report: ServiceReport, out: _Out, h: str) -> list[str]:
    lines = [f"{h}# Service health", ""]
    probe_stages = [
        s for s in report.stages if s.name.startswith("probe") or s.name in (Stage.SMOKE, "websocket")
    ]
    rows = [_probe_row(stage, probe, out) for stage in probe_stages for probe in _probes(stage)]
    if rows:
        lines += _table(
            (
                "URL kind",
                "URL",
                "Result",
                "Status codes",
                "Attempts",
                "Cold-start retries",
                "p50",
                "max",
                "Notes",
            ),
            rows,
        )
    elif not probe_stages:
        lines.append("_No health probe ran._")
    notes = [
        f"- **{out.text(stage.name)}** {STATUS_LABEL[stage.status]}: {out.text(stage.summary)}"
        for stage in probe_stages
        if not rows or stage.status in (Status.WARN, Status.FAIL, Status.SKIP)
    ]
    if notes:
        lines += ["", *notes] if rows else notes
    return lines


def _contract(report: ServiceReport, out: _Out, h: str, limit: int = 50) -> list[str]:
    """The breaking-changes audit: what was compared, then one line per finding (rule id, level, operation,
    location, text): a list, not a table, as the texts are long."""
    lines = [f"{h}# Breaking changes audit", ""]
    stage = report.stage(Stage.CONTRACT)
    if stage is None:
        return [*lines, "_Not run: the release stopped before the audit (or it is a dry run)._"]
    lines.append(f"{STATUS_LABEL[stage.status]}: {out.text(stage.summary)}")
    audit = report.contract
    if audit is None:
        return lines
    lines += ["", f"- baseline: {out.code(audit.baseline_url or '—')} ({out.text(audit.baseline_revision or '—')}, "
                  f"serving); candidate: {out.code(audit.candidate_url or '—')}",
              f"- policy: fail_on = {out.code(audit.fail_on.value)}"
              + (f"; ignore file {out.code(audit.ignore_file)}" if audit.ignore_file else "")]
    lines += [f"- ⚠️ {out.text(problem)}" for problem in audit.problems]
    if not audit.findings:
        return [*lines, "", "_No change a client could notice._"]
    ordered = sorted(audit.findings, key=lambda f: (f.ignored, -f.level.rank))
    lines.append("")
    for f in ordered[:limit]:
        ignored = " _(ignored: in the ignore file)_" if f.ignored else ""
        lines.append(f"- **{f.level.value}** {out.code(f.id)} · {out.code(f.operation)} · {out.code(f.location)} — "
                     f"{out.text(f.text)}{ignored}")
    if len(ordered) > limit:
        lines.append(f"- … and {len(ordered) - limit} more in the JSON report (`contract.findings`)")
    return lines


def _bake(report: ServiceReport, out: _Out, h: str) -> list[str]:
    """What the bake window watched, for how long, and when a failure was first seen."""
    stages = [s for s in report.stages if s.name == Stage.BAKE]
    lines = [f"{h}# Bake window (watched while serving)", ""]
    if not stages:
        return [*lines, "_The release was not watched after the traffic shift (no canary hold, bake_s = 0, or "
                        "an earlier gate failed)._"]
    rows = []
    for stage in stages:
        d = BakeData.read(stage.data)
        if d is None:  # the watch never ran (its task crashed): what the stage says instead
            rows.append(("—", STATUS_LABEL[stage.status], "–", "–", "–", "–", "–", "–", out.cell(stage.summary)))
            continue
        detect = d.time_to_detect_s
        rows.append((
            out.cell(d.label),
            STATUS_LABEL[stage.status],
            f"{d.watched_s:.1f} s of {d.planned_s:g} s",
            "<br>".join(out.code(u, in_table=True) for u in d.urls) or "–",
            str(d.probes),
            str(d.log_reads) + (f" ({d.log_retries} retried)" if d.log_retries else ""),
            str(d.log_entries),
            f"{detect:.1f} s ({out.cell(d.detected_by or '')})" if detect is not None else "–",
            out.cell(d.reason or ""),
        ))
    return lines + _table(("Window", "Result", "Watched", "URLs", "Probes", "Log reads", "Log entries",
                           "Time to detect", "Failure"), rows)


def _group_lines(groups: Sequence[SignatureGroupData], out: _Out, limit: int = 15) -> list[str]:
    lines = []
    for g in groups[:limit]:
        crash = f" · crash: {out.text(g.crash)}" if g.crash else ""
        ids = ", ".join(g.insert_ids[:3])
        lines.append(f"- **{out.text(g.severity)} ×{g.count}**{crash}: {out.code(g.signature)}")
        lines.append(
            f"  - example: {out.code(g.example)}"
            + (f" (insert ids: {out.text(ids)})" if ids else "")
        )
    if len(groups) > limit:
        lines.append(f"- … and {len(groups) - limit} more (see the JSON report)")
    return lines



_ORIGINS = {"probe": "stagecheck's probes", "advisory": "probes of advisory URLs (not in the rate)",
            "other": "other traffic"}


def request_origin_lines(data: LogsData) -> list[str]:
    """One line per request origin: stagecheck's own probes apart from other traffic."""
    return [f"  - {_ORIGINS.get(k, k)}: {v[0]} requests, {v[1]} failed" for k, v in data.by_origin.items()
            if len(v) == 2]


def _logs(report: ServiceReport, out: _Out, h: str) -> list[str]:
    lines = [f"{h}# Logs analysis", ""]
    stage = report.stage(Stage.LOGS)
    if stage is None or stage.status is Status.SKIP:
        why = stage.summary if stage is not None else "the stage did not run"
        return [*lines, f"_Logs were not analysed: {out.text(why)}._"]
    data = LogsData.read(stage.data) if "error" not in stage.data else None
    if data is None:  # the logs could not be read: the stage's summary says why
        return [*lines, f"{STATUS_LABEL[stage.status]} {out.text(stage.summary)}"]
    previous = data.previous_revision or "none (first deploy)"
    counts = ", ".join(f"{k} {v}" for k, v in data.by_severity.items()) or "none"
    lines += [
        f"{STATUS_LABEL[stage.status]} {out.text(stage.summary)}",
        "",
        f"- Revision {out.code(data.revision)}, window {out.text(data.window[0])} → {out.text(data.window[1])}; "
        f"compared with {out.code(previous)} over an equal window before it",
        f"- Entries: {data.total}; container/system by severity: {out.text(counts)}; "
        f"gating threshold {out.text(data.threshold)}",
        f"- Requests: {data.requests}, failed (5xx/429): {data.server_errors} of {data.counted_requests} counted "
        f"({data.error_rate_5xx * 100:.2f} %), platform refusals (excused): {data.platform_refusals}",
        *request_origin_lines(data),
    ]
    if data.truncated:
        lines.append("- ⚠️ The read was capped at the entry limit: older entries were not analysed")
    for url, n in sorted(data.server_error_urls.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  - {out.code(url)} ×{n}")
    sections = (
        ("New signatures (gated)", data.new),
        ("Pre-existing signatures (also on the previous revision)", data.pre_existing),
        ("Tolerated signatures (configured)", data.tolerated),
        ("Crash signatures", data.crashes),
    )
    for title, groups in sections:
        lines += ["", f"**{title}:** {len(groups)}"]
        if groups:
            lines += ["", *_group_lines(groups, out)]
    if data.below_threshold:
        lines += ["", f"_{data.below_threshold} signature(s) below {out.text(data.threshold)} not listed._"]
    return lines


def _criteria_table(report: ServiceReport, out: _Out, h: str) -> list[str]:
    rows = criteria_rows(report, out.secrets)
    lines = [f"{h}# Success criteria", ""]
    if not rows:
        return [*lines, "_No criteria were evaluated._"]
    notes: list[str] = []
    table = _table(
        ("Criterion", "Status", "Expected", "Observed", "Evidence"),
        [
            (
                out.cell(r["criterion"]),
                r["status"],
                out.short(r["expected"], notes),
                out.short(r["observed"], notes),
                out.short(r["evidence"], notes),
            )
            for r in rows
        ],
    )
    return lines + table + _notes(notes, out)


def merge_not_run(reasons: Sequence[str]) -> list[str]:
    """ "stage a did not run: X" + "stage b did not run: X" -> "stages a, b did not run: X"."""
    slots: list[tuple[bool, str]] = []  # (is a "did not run" cause, reason or cause)
    names_by_cause: dict[str, list[str]] = {}
    for reason in reasons:
        match = _NOT_RUN.match(reason)
        if match is None:
            slots.append((False, reason))
            continue
        name, cause = match.groups()
        if cause not in names_by_cause:
            names_by_cause[cause] = []
            slots.append((True, cause))
        names_by_cause[cause].append(name)
    out: list[str] = []
    for is_cause, text in slots:
        if not is_cause:
            out.append(text)
            continue
        names = names_by_cause[text]
        head = f"stage {names[0]}" if len(names) == 1 else f"stages {', '.join(names)}"
        out.append(f"{head} did not run: {text}")
    return out


def _issues(report: ServiceReport, out: _Out, h: str) -> list[str]:
    lines = [f"{h}# Issues identified", ""]
    if not report.reasons and not report.warnings:
        return [*lines, "None."]
    for icon, items in (("❌", merge_not_run(report.reasons)), ("⚠️", report.warnings)):
        for item in items:
            pointer = _stage_pointer(report, item)
            evidence = f" (evidence: {out.code(pointer)})" if pointer else ""
            lines.append(f"- {icon} {out.text(item)}{evidence}")
    return lines


def _rollback(report: ServiceReport, out: _Out, h: str) -> list[str]:
    rb = report.rollback
    lines = [f"{h}# Rollback", ""]
    if rb.performed:
        state = "✅ succeeded" if rb.ok else "❌ FAILED" if rb.ok is False else "outcome unknown"
        lines.append(f"Rollback {state}: traffic restored to {out.text(_traffic(rb.restored))}.")
    elif rb.needed:
        lines.append("❌ A rollback was needed but was not performed.")
    elif report.verdict is Verdict.FAIL:
        lines.append(
            f"Not needed: traffic never moved to the new revision (serving: {out.text(_traffic(report.traffic_after or report.traffic_before))})."
        )
    else:
        lines.append("Not needed.")
    if rb.message:
        lines.append(f"\n{out.text(rb.message)}")
    return lines


def _conclusion(report: ServiceReport, out: _Out, h: str) -> list[str]:
    rev = report.revision.name if report.revision else "the new revision"
    digest = report.image.digest if report.image and report.image.digest else None
    what = f"Revision {out.code(rev)} of {out.text(report.service)}" + (
        f" (image {out.code(digest)})" if digest else ""
    )
    gates = [s for s in report.stages if s.status in (Status.PASS, Status.WARN)]
    if report.verdict is Verdict.PASS:
        warn = (
            f" {len(report.warnings)} warning(s) should be reviewed before promotion (see Issues identified)."
            if report.warnings
            else ""
        )
        text = (
            f"✅ {what} passed all {len(gates)} gates on staging and now serves the service's traffic. "
            f"It is ready for production promotion.{warn}"
        )
    else:
        gate = report.decided_by or "an unknown stage"
        why = report.reasons[0] if report.reasons else "no reason recorded"
        why = why.removeprefix(f"{gate}: ")
        if report.rollback.performed:
            after = "traffic was rolled back" + (
                "" if report.rollback.ok else " but the rollback FAILED: check the service now"
            )
        elif report.rollback.needed:
            after = "a rollback was needed and not performed: check the service now"
        else:
            after = "traffic never moved to it"
        text = (
            f"❌ {what} failed the **{out.text(gate)}** gate: {out.text(why)}. "
            f"It is not ready for promotion; {out.text(after)}. Fix the issue above and run the validation again."
        )
    return [f"{h}# Conclusion", "", text]


def _stages_table(report: ServiceReport, out: _Out, h: str) -> list[str]:
    notes: list[str] = []
    rows = [
        (out.cell(s.name), STATUS_LABEL[s.status], f"{s.duration_s:.1f} s", out.short(s.summary, notes))
        for s in report.stages
    ]
    return [f"{h}# Stages", "", *_table(("Stage", "Status", "Duration", "Summary"), rows), *_notes(notes, out)]


# ------------------------------------------------------------------------------------------- public API


def render_markdown(report: ServiceReport, *, secret_values: Iterable[str] = (), level: int = 1) -> str:
    """The staging report of one service. `level` is the title's heading level (sections go one deeper)."""
    out = _Out(secret_values)
    h = "#" * max(1, level)
    parts = [
        _title(report, out, h),
        _deployment(report, out, h),
        _stages_table(report, out, h),
        _performance(report, out, h),
        _health(report, out, h),
        _contract(report, out, h),
        _bake(report, out, h),
        _logs(report, out, h),
        _criteria_table(report, out, h),
        _issues(report, out, h),
        _rollback(report, out, h),
        _conclusion(report, out, h),
    ]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def render_run_markdown(reports: Sequence[ServiceReport], *, secret_values: Iterable[str] = ()) -> str:
    """Several services: a summary table, then each service's report one heading level down."""
    out = _Out(secret_values)
    failed = [r for r in reports if r.verdict is Verdict.FAIL]
    if not reports:
        return "# ❌ Staging validation: no service was validated\n"
    head = (
        f"# ✅ Staging validation: all {len(reports)} service(s) passed"
        if not failed
        else f"# ❌ Staging validation: {len(failed)} of {len(reports)} service(s) failed"
    )
    notes: list[str] = []
    rows = [
        (
            out.cell(r.service),
            VERDICT_LABEL[r.verdict],
            out.cell(r.decided_by or "—"),
            out.code(r.revision.name, in_table=True) if r.revision else "—",
            out.code(r.image.digest, in_table=True) if r.image and r.image.digest else "—",
            out.short(
                r.reasons[0] if r.reasons else (f"{len(r.warnings)} warning(s)" if r.warnings else "none"), notes
            ),
        )
        for r in reports
    ]
    lines = [head, "", *_table(("Service", "Verdict", "Failed at", "Revision", "Digest", "Main issue"), rows),
             *_notes(notes, out)]
    body = [render_markdown(r, secret_values=out.secrets, level=2) for r in reports]
    return "\n".join(lines) + "\n\n" + "\n---\n\n".join(body)


def criteria_rows(report: ServiceReport, secret_values: Iterable[str] = ()) -> list[dict[str, str]]:
    """Rows for `create_table_artifact`: criterion, stage, status, expected, observed, evidence (redacted)."""
    secrets = tuple(secret_values)
    return [
        {
            "criterion": redact(c.name, secrets),
            "stage": redact(c.stage, secrets),
            "status": STATUS_LABEL[c.status],
            "expected": redact(c.expected, secrets),
            "observed": redact(c.observed, secrets),
            "evidence": redact("\n".join(c.evidence), secrets),
        }
        for c in _criteria(report)
    ]


def to_json(report: ServiceReport, *, secret_values: Iterable[str] = ()) -> str:
    """The JSON report: the whole ServiceReport (verdict, stages with evidence, criteria, image, revision,
    rollback, ...), criteria filled from the stages when empty, redacted."""
    data = report.model_dump(mode="json")
    data["criteria"] = [c.model_dump(mode="json") for c in _criteria(report)]
    data = {"schema_version": REPORT_SCHEMA_VERSION, **data}
    return json.dumps(redact_obj(data, secret_values), indent=2, ensure_ascii=False)
