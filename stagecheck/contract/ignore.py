"""Accepted changes, in oasdiff's ignore-file format (`--err-ignore` / `--warn-ignore`,
docs/BREAKING-CHANGES.md "Ignoring Specific Breaking Changes", checker/ignore.go): one change per line,
case-insensitive; the line names the method and path (the first word that starts with `/` is the path)
and contains the change's text; anything else on the line (dates, bullets, comments) is free text.
One file serves every level here (oasdiff keeps one per level)."""

from __future__ import annotations

from collections.abc import Iterable

from stagecheck.contract.findings import Finding


def _line_path(line: str) -> str:
    return next((word for word in line.split() if word.startswith("/")), "")


def matches(line: str, item: Finding) -> bool:
    """oasdiff's `ApiChange.MatchIgnore`: the path word equals the change's path, the line contains
    `<method> <path>` and the change's text."""
    line = line.lower()
    path = _line_path(line)
    if not path or path != item.path.lower():
        return False
    return f"{item.method} {item.path}".lower() in line and item.text.lower() in line


def apply_ignore(findings: Iterable[Finding], lines: Iterable[str]) -> list[Finding]:
    """The findings, those an ignore line matches marked `ignored` (kept: the report lists them)."""
    rules = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [f.model_copy(update={"ignored": True}) if any(matches(line, f) for line in rules) else f
            for f in findings]
