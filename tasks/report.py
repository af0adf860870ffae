"""Stage `report`: Prefect artifacts (markdown report, criteria table, links) and the JSON report, in the
worker's `report_dir` and in Prefect result storage (`result_storage`: a block shared by the workers
keeps the reports when a short-lived worker goes)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import acreate_link_artifact, acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from stagecheck.analysis.report_section import SVG_SUFFIX, picture
from stagecheck.model import ServiceReport
from stagecheck.report import criteria_rows, render_markdown, to_json


def artifact_key(prefix: str, service: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]", "-", f"{prefix}-{service}".lower())


def report_path(report_dir: Path, report: ServiceReport) -> Path:
    stamp = report.started_at.strftime("%Y%m%dT%H%M%SZ")
    return report_dir / f"{report.service}-{stamp}.json"


def stored_report_keys(report: ServiceReport) -> tuple[str, str]:
    """Pure: the result-storage keys of a report: `stagecheck-reports/SERVICE/<start>.json` and `.../latest.json`."""
    stamp = report.started_at.strftime("%Y%m%dT%H%M%SZ")
    return f"stagecheck-reports/{report.service}/{stamp}.json", f"stagecheck-reports/{report.service}/latest.json"


async def store_report(report: ServiceReport, result_storage: str | None) -> str | None:
    """Write the JSON report to Prefect result storage; the key, or None when the storage refused (logged:
    the report is still in report_dir and in the artifacts, the verdict stands)."""
    from stagecheck.clients.result_storage import result_store

    key, latest = stored_report_keys(report)
    body = json.loads(to_json(report))
    try:
        store = await result_store(result_storage)
        await store.awrite(obj=body, key=key)
        await store.awrite(obj=body, key=latest)
    except Exception as exc:
        get_run_logger().warning("the report of %s was not stored in result storage %s: %s", report.service,
                                 result_storage or "(default)", exc)
        return None
    return key


@task(name="report", cache_policy=NO_CACHE)
async def publish_report(report: ServiceReport, report_dir: Path, result_storage: str | None = None) -> Path:
    """Publish a service's report: Markdown and criteria-table artifacts, links to the service and its logs,
    the JSON report in report_dir (its path is returned) and the same JSON in Prefect result storage."""
    verdict = report.verdict.value.upper()
    await acreate_markdown_artifact(markdown=render_markdown(report), key=artifact_key("stagecheck-report", report.service),
                                    description=f"{verdict}: staging validation of {report.service}")
    await acreate_table_artifact(table=criteria_rows(report), key=artifact_key("stagecheck-criteria", report.service),
                                 description=f"{verdict}: success criteria of {report.service}")
    if report.urls.get("service"):
        await acreate_link_artifact(link=report.urls["service"], link_text=f"{report.service} service URL",
                                    key=artifact_key("stagecheck-service-url", report.service))
    if report.revision is not None and report.revision.log_url:
        await acreate_link_artifact(link=report.revision.log_url, link_text=f"logs of {report.revision.name}",
                                    key=artifact_key("stagecheck-logs", report.service))
    await store_report(report, result_storage)
    return await asyncio.to_thread(write_json_report, report, report_dir)


def write_json_report(report: ServiceReport, report_dir: Path) -> Path:
    """`SERVICE-<start>.json` plus `SERVICE-latest.json` in report_dir."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_path(report_dir, report)
    body = to_json(report)
    path.write_text(body)
    (report_dir / f"{report.service}-latest.json").write_text(body)
    svg = picture(report.stages, report.service)  # the analysis stage's latency picture, beside the JSON
    if svg is not None:
        path.with_name(path.stem + SVG_SUFFIX).write_text(svg)
        (report_dir / f"{report.service}-latest{SVG_SUFFIX}").write_text(svg)
    return path
