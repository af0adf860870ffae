"""`.gitignore` pattern semantics for the non-git walker and for --exclude globs, on `pathspec`'s
`GitIgnoreSpec` (git's wildmatch rules: comments, escapes, trailing-space trimming, `!negation`,
`dir/`, anchoring, `*`, `?`, `[...]`, `**`).

As in git, the last matching rule wins, rules of deeper `.gitignore` files override shallower ones,
and nothing below an ignored directory is re-included (callers prune ignored directories).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pathspec import GitIgnoreSpec


def parse_ignore_file(text: str) -> GitIgnoreSpec:
    """The rules of one `.gitignore` file (blank lines and comments carry none)."""
    return GitIgnoreSpec.from_lines(text.splitlines())


def _spec_path(rel_path: str, is_dir: bool) -> str:
    # pathspec tells directories from files by a trailing slash (`dir/` rules match only those).
    return rel_path + "/" if is_dir else rel_path


@dataclass(frozen=True)
class IgnoreSet:
    """The rules of one ignore file, relative to its directory (`base`, "" for the root)."""

    base: str
    rules: GitIgnoreSpec

    def verdict(self, rel_path: str, is_dir: bool) -> bool | None:
        """True ignored / False re-included / None no rule matches."""
        if self.base:
            if not rel_path.startswith(self.base + "/"):
                return None
            rel_path = rel_path[len(self.base) + 1 :]
        return self.rules.check_file(_spec_path(rel_path, is_dir)).include


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
        lines = [p.removeprefix("./") for p in patterns]
        self._set = IgnoreSet("", GitIgnoreSpec.from_lines(lines))
        self._dir_cache: dict[str, bool] = {}
        # Directory-only patterns (`build/`) never match a file: without negations, files need only
        # the other patterns (the common case, the default skips alone, then costs nothing per file).
        rules = [line.strip() for line in lines]
        file_rules = [r for r in rules if r and not r.startswith("#") and not r.endswith("/")]
        negated = any(r.startswith("!") for r in rules)
        self._file_set = self._set if negated else IgnoreSet("", GitIgnoreSpec.from_lines(file_rules))
        self._files_need_check = negated or bool(file_rules)

    def dir_excluded(self, rel_dir: str) -> bool:
        cached = self._dir_cache.get(rel_dir)
        if cached is None:
            parent, _, _ = rel_dir.rpartition("/")
            cached = (bool(parent) and self.dir_excluded(parent)) or bool(self._set.verdict(rel_dir, True))
            self._dir_cache[rel_dir] = cached
        return cached

    def excluded(self, rel_path: str) -> bool:
        parent, _, _ = rel_path.rpartition("/")
        if bool(parent) and self.dir_excluded(parent):
            return True
        return self.file_excluded(rel_path)

    def file_excluded(self, rel_path: str) -> bool:
        """The file's own verdict, for callers that already pruned excluded directories."""
        return self._files_need_check and bool(self._file_set.verdict(rel_path, False))
