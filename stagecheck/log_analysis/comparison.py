"""Comparison: each signature group of the new revision is new, pre-existing (seen on the previous
revision over an equal window), tolerated (configured) or below the severity threshold."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from stagecheck.log_analysis.records import severity_rank
from stagecheck.log_analysis.signatures import LogSummary, SignatureGroup
from stagecheck.settings import LogRules

# ----------------------------------------------------------------------------------------- comparison


@dataclass
class LogComparison:
    new: list[SignatureGroup]  # at/above threshold (or a crash), not seen on the previous revision
    pre_existing: list[SignatureGroup]  # at/above threshold (or a crash), seen on the previous revision
    tolerated: list[SignatureGroup]  # matched rules.tolerated_signatures
    below_threshold: list[SignatureGroup]
    previous_revision: str | None = None

    @property
    def new_crashes(self) -> list[SignatureGroup]:
        return [g for g in self.new if g.crash]


def _regex_match(regex: re.Pattern[str], text: str) -> bool:
    return regex.search(text) is not None


def _substring_match(needle: str, text: str) -> bool:
    return needle in text


def compile_tolerated(patterns: Iterable[str]) -> list[Callable[[str], bool]]:
    """`/regex/` patterns are regular expressions (searched), anything else a case-sensitive substring."""
    matchers: list[Callable[[str], bool]] = []
    for pattern in patterns:
        if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
            try:
                regex = re.compile(pattern[1:-1])
            except re.error as exc:
                raise ValueError(
                    f"tolerated signature {pattern!r} is not a valid regular expression: {exc}"
                ) from None
            matchers.append(partial(_regex_match, regex))
        elif pattern:
            matchers.append(partial(_substring_match, pattern))
    return matchers


def compare(current: LogSummary, previous: LogSummary | None, rules: LogRules) -> LogComparison:
    """Classify each group of `current`. Crash groups are gated whatever their severity.

    With no previous revision (a first deploy) everything at/above the threshold is new.
    A tolerated pattern matches the signature or the (redacted) example.
    """
    matchers = compile_tolerated(rules.tolerated_signatures)
    threshold = severity_rank(rules.severity_threshold)
    known = {g.signature for g in previous.groups} if previous is not None else set()
    out = LogComparison(
        new=[],
        pre_existing=[],
        tolerated=[],
        below_threshold=[],
        previous_revision=previous.revision if previous is not None else None,
    )
    for group in current.groups:
        if severity_rank(group.severity) < threshold and not group.crash:
            out.below_threshold.append(group)
        elif any(m(group.signature) or m(group.example) for m in matchers):
            out.tolerated.append(group)
        elif group.signature in known:
            out.pre_existing.append(group)
        else:
            out.new.append(group)
    return out
