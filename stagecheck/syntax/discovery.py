"""Which files the syntax stage looks at, and as what kind.

In a git work tree the listing is `git ls-files --cached --others --exclude-standard` (exact
`.gitignore` semantics, nested ignore files, `.git/info/exclude`, global excludes; submodules appear
as a directory entry and are not descended into). Elsewhere the tree is walked honouring `.gitignore`
files with `ignore.py`. Either way vendored/generated directories and user `exclude` patterns
(`.gitignore` syntax) are skipped.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .ignore import IgnoreSet, PathFilter, is_ignored, parse_ignore_file
from .model import JSON, PYTHON, TEXT, TOML, YAML

DEFAULT_SKIP_DIRS = (
    ".git", ".hg", ".svn", ".venv", "venv", "node_modules", "vendor", "third_party", "site-packages",
    "__pycache__", ".tox", ".nox", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist",
    "*.egg-info",
)  # fmt: skip

EXTENSION_KINDS = {".py": PYTHON, ".yaml": YAML, ".yml": YAML, ".json": JSON, ".jsonc": JSON, ".toml": TOML}

GIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FileListing:
    files: tuple[tuple[str, str], ...]  # (relative POSIX path, file kind), sorted by path
    skipped: int  # listed but excluded (vendored dirs, --exclude)
    source: str  # "git" | "walk"


def file_kind(rel_path: str, chart_dirs: frozenset[str] = frozenset()) -> str:
    """The checker a path gets. YAML under a Helm chart's templates/ is Go-templated, not YAML."""
    kind = EXTENSION_KINDS.get(posixpath.splitext(rel_path)[1].lower(), TEXT)
    if kind == YAML and chart_dirs:
        parent = posixpath.dirname(rel_path)
        while parent:
            head, name = posixpath.split(parent)
            if name == "templates" and head in chart_dirs:
                return TEXT
            parent = head
    return kind


def discover(root: Path, exclude: Sequence[str] = ()) -> FileListing:
    path_filter = PathFilter([f"{name}/" for name in DEFAULT_SKIP_DIRS] + list(exclude))
    listed = git_listing(root)
    source = "git"
    if listed is None:
        listed, source = walk_listing(root, path_filter), "walk"
    kept = sorted(p for p in set(listed) if not path_filter.excluded(p))
    chart_dirs = frozenset(posixpath.dirname(p) for p in kept if posixpath.basename(p) == "Chart.yaml")
    files = tuple((p, file_kind(p, chart_dirs)) for p in kept)
    return FileListing(files, len(set(listed)) - len(kept), source)


def git_listing(root: Path) -> list[str] | None:
    """Paths relative to `root` (git limits ls-files to the current directory), None if `root` is not
    in a git work tree or git is unavailable."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    entries = result.stdout.decode("utf-8", errors="surrogateescape").split("\0")
    # An untracked nested repository is listed as "dir/": not ours to check.
    return [e for e in entries if e and not e.endswith("/")]


def walk_listing(root: Path, path_filter: PathFilter) -> list[str]:
    """Regular files under `root`, honouring every `.gitignore` on the way down; never follows
    symlinks; prunes ignored and filtered directories without reading them."""
    files: list[str] = []
    stack: list[tuple[str, tuple[IgnoreSet, ...]]] = [("", ())]
    while stack:
        rel_dir, inherited = stack.pop()
        directory = root / rel_dir if rel_dir else root
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        sets = inherited
        gitignore = directory / ".gitignore"
        if any(e.name == ".gitignore" for e in entries):
            try:
                rules = parse_ignore_file(gitignore.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                rules = ()
            if rules:
                sets = (*inherited, IgnoreSet(rel_dir, rules))
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if not path_filter.dir_excluded(rel) and not is_ignored(rel, True, sets):
                    stack.append((rel, sets))
            elif not is_ignored(rel, False, sets):
                files.append(rel)  # symlinks and other non-regular files are skipped by the checker
    return files
