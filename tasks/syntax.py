"""Stage `syntax`: the repository parses (Python, YAML/JSON/TOML, no merge-conflict markers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.settings import SyntaxSettings
from stagecheck.stages import Stage
from stagecheck.syntax import SyntaxReport, check_repository
from tasks.common import gate, guarded

MAX_LISTED = 50


def syntax_stage_result(report: SyntaxReport) -> StageResult:
    """Pure: the stage result for a syntax report."""
    checked = sum(report.files_checked.values())
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(report.files_checked.items()) if n)
    lines = [str(f) for f in report.findings]
    if report.ok:
        cached = f", {report.from_cache} remembered by content" if report.from_cache else ""
        status, summary = Status.PASS, f"{checked} files parse ({by_kind}) in {report.duration_s:.2f}s{cached}"
    else:
        status = Status.FAIL
        summary = f"{len(lines)} syntax error(s) in {checked} files; first: {lines[0]}"
    evidence = [Evidence(kind="syntax", summary=summary,
                         data={"files_checked": dict(report.files_checked), "skipped": report.skipped,
                               "duration_s": round(report.duration_s, 3), "from_cache": report.from_cache,
                               "findings": lines[:MAX_LISTED],
                               "findings_total": len(lines)})]
    evidence += [Evidence(kind="syntax", summary=line) for line in lines[:MAX_LISTED]]
    criterion = Criterion(name="Repository parses (Python, YAML/JSON/TOML, no conflict markers)", stage=Stage.SYNTAX,
                          status=status, expected="0 syntax errors",
                          observed=f"{len(lines)} error(s) in {checked} files",
                          evidence=lines[:5])
    return StageResult(name=Stage.SYNTAX, status=status, summary=summary, evidence=evidence, criteria=[criterion])


@task(name="syntax", cache_policy=NO_CACHE, task_run_name=Stage.SYNTAX)
async def check_syntax(repo_root: Path, config: SyntaxSettings) -> StageResult:
    """Syntax-check the repository's Python and config files (once per run) for the configured Python version."""
    async def body() -> tuple[StageResult, None]:
        if not config.enabled:
            return StageResult(name=Stage.SYNTAX, status=Status.SKIP, summary="syntax validation turned off in config"), None
        report = await asyncio.to_thread(check_repository, repo_root, target_version=config.version_tuple(),
                                         exclude=config.exclude)
        return syntax_stage_result(report), None

    result, _ = await guarded(Stage.SYNTAX, body, None)
    return gate(result, result)
