"""Which files the syntax stage looks at, and as what kind.

In a git work tree the listing is one `git ls-files -s -m --cached --others --exclude-standard`
(exact `.gitignore` semantics, nested ignore files, `.git/info/exclude`, global excludes; submodules
are not descended into). It also gives each tracked file's blob id: the content key of the result
cache, trusted only for a regular file whose working copy matches the index (a path git lists twice
was modified or deleted; an untracked or unmerged path has no usable id) and only where no
attribute or setting makes the working copy differ from the blob (smudge filters such as Git LFS,
CRLF conversion, working-tree-encoding, `ident`). Files without a trusted id are hashed by the
runner. Elsewhere the tree is walked honouring `.gitignore` files (`pathspec`, see ignore.py).
Either way vendored/generated directories and user `exclude` patterns (`.gitignore` syntax) are
skipped.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
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


# Attribute / config words that can make a checked-out file differ from its blob.
_CONTENT_CHANGING_ATTRIBUTES = re.compile(rb"filter|eol|crlf|working-tree-encoding|ident")
_INDEX_ENTRY = re.compile(r"^([0-7]{6}) ([0-9a-f]{40}|[0-9a-f]{64}) ([0-3])\t(.*)$", re.DOTALL)
_REGULAR_MODES = frozenset(("100644", "100755"))


@dataclass(frozen=True)
class FileListing:
    files: tuple[tuple[str, str], ...]  # (relative POSIX path, file kind), sorted by path
    skipped: int  # listed but excluded (vendored dirs, --exclude)
    source: str  # "git" | "walk"
    blob_ids: dict[str, str] = field(default_factory=dict)  # path -> id of its (unmodified) content


@dataclass(frozen=True)
class GitListing:
    paths: list[str]
    blob_ids: dict[str, str]


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
    git = git_listing(root)
    if git is None:
        listed, source, blob_ids = set(walk_listing(root, path_filter)), "walk", {}
    else:
        listed, source, blob_ids = set(git.paths), "git", git.blob_ids
    # the walk never enters an excluded directory: only git's listing needs the ancestors checked
    excluded = path_filter.excluded if source == "git" else path_filter.file_excluded
    kept = sorted(p for p in listed if not excluded(p))
    chart_dirs = frozenset(posixpath.dirname(p) for p in kept if posixpath.basename(p) == "Chart.yaml")
    files = tuple((p, file_kind(p, chart_dirs)) for p in kept)
    kept_ids = {p: blob_ids[p] for p in kept if p in blob_ids}
    return FileListing(files, len(listed) - len(kept), source, kept_ids)


def _git(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["git", *args],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )


def git_listing(root: Path) -> GitListing | None:
    """Paths relative to `root` (git limits ls-files to the current directory) and the blob ids that
    stand for their working content; None if `root` is not in a git work tree or git is unavailable."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for args in (
            ("ls-files", "-z", "-s", "-m", "--cached", "--others", "--exclude-standard"),
            ("config", "-z", "--get-regexp", r"^core\.(autocrlf|eol|attributesfile)$"),
            ("rev-parse", "--git-path", "info/attributes", "--show-toplevel"),
        ):
            processes.append(_git(root, *args))
        outputs = [process.communicate(timeout=GIT_TIMEOUT_S)[0] for process in processes]
    except (OSError, subprocess.SubprocessError):
        for process in processes:
            process.kill()
            process.wait()
        return None
    listing, settings = processes[0], processes[1]
    if listing.returncode != 0:
        return None
    paths: list[str] = []
    seen: dict[str, int] = {}
    ids: dict[str, str] = {}
    for entry in outputs[0].decode("utf-8", errors="surrogateescape").split("\0"):
        if not entry or entry.endswith("/"):  # an untracked nested repository: not ours to check
            continue
        match = _INDEX_ENTRY.match(entry)
        if match is None:  # untracked: no id
            paths.append(entry)
            continue
        mode, object_id, stage, path = match.groups()
        seen[path] = seen.get(path, 0) + 1
        if seen[path] == 1:
            paths.append(path)
        if stage == "0" and mode in _REGULAR_MODES:
            ids[path] = object_id
    # Listed twice: modified or deleted (-m repeats it); several stages: unmerged. Hash those.
    trusted = {p: i for p, i in ids.items() if seen[p] == 1}
    if trusted and not _blob_ids_match_working_tree(root, paths, outputs[1], outputs[2], settings.returncode):
        trusted = {}
    return GitListing(paths, trusted)


def _blob_ids_match_working_tree(
    root: Path, paths: list[str], config: bytes, info: bytes, config_status: int
) -> bool:
    """False when a setting or attribute could make a checked-out file differ from its blob (then
    every file is hashed: slower, never wrong). Conservative: any mention counts."""
    if config_status not in (0, 1):  # 1: none of the keys is set
        return False
    attribute_files: list[Path] = []
    for item in config.decode("utf-8", errors="surrogateescape").split("\0"):
        key, _, value = item.partition("\n")
        if key == "core.autocrlf" and value.lower() in ("true", "input", "yes", "on", "1"):
            return False
        if key == "core.eol" and value.lower() == "crlf":
            return False
        if key == "core.attributesfile" and value:
            attribute_files.append(Path(os.path.expanduser(value)))
    if not attribute_files:  # git's default global attributes file
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        attribute_files.append(Path(xdg) / "git" / "attributes")
    lines = info.decode("utf-8", errors="surrogateescape").splitlines()
    if len(lines) >= 1 and lines[0]:
        attribute_files.append(root / lines[0] if not os.path.isabs(lines[0]) else Path(lines[0]))
    attribute_files += [root / p for p in paths if posixpath.basename(p) == ".gitattributes"]
    if len(lines) >= 2 and lines[1]:  # .gitattributes above `root` inside the work tree
        top = Path(lines[1])
        directory = root.resolve()
        while directory != top and top in directory.parents:
            directory = directory.parent
            attribute_files.append(directory / ".gitattributes")
    for attributes in attribute_files:
        try:
            text = attributes.read_bytes()
        except OSError:
            continue
        if _CONTENT_CHANGING_ATTRIBUTES.search(text):
            return False
    return True


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
                rules = None
            if rules is not None:
                sets = (*inherited, IgnoreSet(rel_dir, rules))
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if not path_filter.dir_excluded(rel) and not is_ignored(rel, True, sets):
                    stack.append((rel, sets))
            elif not is_ignored(rel, False, sets):
                files.append(rel)  # symlinks and other non-regular files are skipped by the checker
    return files
