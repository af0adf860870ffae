"""Merge-conflict markers left in a file. Pure.

`<<<<<<<` and `>>>>>>>` (alone on the line or followed by a space) are reported wherever they start a
line: a stray one is a half-resolved conflict. `=======` (exactly) and `|||||||` (diff3 base) are only
reported between an opening and a closing marker, so RST underlines and Markdown rules stay quiet.
"""

from __future__ import annotations

from .model import CONFLICT, SyntaxFinding

MARKER_LEN = 7
OPEN, BASE, SEPARATOR, CLOSE = "<" * MARKER_LEN, "|" * MARKER_LEN, "=" * MARKER_LEN, ">" * MARKER_LEN

_DESCRIPTIONS = {
    OPEN: "start of conflict",
    BASE: "common ancestor, diff3",
    SEPARATOR: "separator",
    CLOSE: "end of conflict",
}


def _marker(line: str) -> str | None:
    head = line[:MARKER_LEN]
    if head not in _DESCRIPTIONS:
        return None
    rest = line[MARKER_LEN:].rstrip("\r")
    if head == SEPARATOR:
        return head if rest == "" else None
    return head if rest == "" or rest.startswith((" ", "\t")) else None


def find_conflict_markers(text: str, path: str) -> list[SyntaxFinding]:
    if OPEN not in text and CLOSE not in text:  # fast path: the separators only count inside a block
        return []
    findings: list[SyntaxFinding] = []
    inside = False
    for number, line in enumerate(text.split("\n"), 1):
        marker = _marker(line)
        if marker is None:
            continue
        if marker in (SEPARATOR, BASE) and not inside:
            continue
        inside = marker != CLOSE and (inside or marker == OPEN)
        findings.append(
            SyntaxFinding(
                path, number, 1, f"merge conflict marker '{marker}' ({_DESCRIPTIONS[marker]})", CONFLICT
            )
        )
    return findings
