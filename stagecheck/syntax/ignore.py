"""`.gitignore` pattern semantics, pure: used by the non-git walker and for --exclude globs.

Supported: comments, `\\#`/`\\!` escapes, trailing-space trimming, `!negation`, `dir/` (directories
only), anchoring (a `/` at the start or in the middle), `*`, `?`, `[...]`, and `**` as a leading
`**/`, trailing `/**` or inner `/**/`. As in git, the last matching rule wins, rules of deeper
`.gitignore` files override shallower ones, and nothing below an ignored directory is re-included
(callers prune ignored directories).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool

    def matches(self, rel_path: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(rel_path) is not None


def _translate_segment(glob: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            while i + 1 < n and glob[i + 1] == "*":  # a non-special `**` is a plain `*`
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(glob[i]))
        elif c == "[":
            start = i + 1
            if glob[start : start + 1] in ("!", "^"):
                start += 1
            if glob[start : start + 1] == "]":
                start += 1
            end = glob.find("]", start)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _translate(pattern: str, anchored: bool) -> str:
    """Regex source for a pattern (without `!` and trailing `/`), matched against a relative path."""
    parts = pattern.split("/")
    regex: list[str] = []
    if not anchored:
        regex.append("(?:.*/)?")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex.append(".*" if last else "(?:.*/)?")
            continue
        regex.append(_translate_segment(part))
        if not last:
            regex.append("/")
    return "".join(regex)


def compile_rule(line: str) -> IgnoreRule | None:
    """One `.gitignore` line -> a rule (None for blanks and comments)."""
    line = line.rstrip("\n").rstrip("\r")
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):  # "foo\ " keeps one escaped space
        stripped += " "
    if not stripped or stripped.startswith("#"):
        return None
    negate = stripped.startswith("!")
    if negate:
        stripped = stripped[1:]
    elif stripped.startswith(("\\!", "\\#")):
        stripped = stripped[1:]
    dir_only = stripped.endswith("/")
    body = stripped.rstrip("/")
    if not body:
        return None
    anchored = "/" in body
    body = body.lstrip("/") if body.startswith("/") else body
    if body.startswith("**/"):
        anchored = True  # `(?:.*/)?` already leads the regex
    return IgnoreRule(stripped, re.compile(_translate(body, anchored), re.DOTALL), negate, dir_only)


def parse_ignore_file(text: str) -> tuple[IgnoreRule, ...]:
    return tuple(rule for line in text.splitlines() if (rule := compile_rule(line)) is not None)


@dataclass(frozen=True)
class IgnoreSet:
    """The rules of one ignore file, relative to its directory (`base`, "" for the root)."""

    base: str
    rules: tuple[IgnoreRule, ...]

    def verdict(self, rel_path: str, is_dir: bool) -> bool | None:
        """True ignored / False re-included / None no rule matches."""
        if self.base:
            if not rel_path.startswith(self.base + "/"):
                return None
            rel_path = rel_path[len(self.base) + 1 :]
        result: bool | None = None
        for rule in self.rules:
            if rule.matches(rel_path, is_dir):
                result = not rule.negate
        return result


def is_ignored(rel_path: str, is_dir: bool, sets: Iterable[IgnoreSet]) -> bool:
    """`sets` ordered shallow to deep; the last verdict wins."""
    ignored = False
    for ignore_set in sets:
        verdict = ignore_set.verdict(rel_path, is_dir)
        if verdict is not None:
            ignored = verdict
    return ignored


class PathFilter:
    """Patterns applied to a path and each of its ancestor directories (so `build/` or `legacy/**`
    excludes everything below). Ancestor verdicts are cached: files share directories."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._set = IgnoreSet("", tuple(r for p in patterns if (r := compile_rule(p.removeprefix("./")))))
        self._dir_cache: dict[str, bool] = {}

    def dir_excluded(self, rel_dir: str) -> bool:
        cached = self._dir_cache.get(rel_dir)
        if cached is None:
            parent, _, _ = rel_dir.rpartition("/")
            cached = (bool(parent) and self.dir_excluded(parent)) or bool(self._set.verdict(rel_dir, True))
            self._dir_cache[rel_dir] = cached
        return cached

    def excluded(self, rel_path: str) -> bool:
        parent, _, _ = rel_path.rpartition("/")
        return (bool(parent) and self.dir_excluded(parent)) or bool(self._set.verdict(rel_path, False))
