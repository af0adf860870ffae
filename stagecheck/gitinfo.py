"""The commit being validated."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from stagecheck.errors import StageError

SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise StageError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()[:200]}")
    return proc.stdout.strip()


def resolve_sha(repo: Path, requested: str | None, paths: tuple[Path, ...] = ()) -> str:
    """The full SHA to tag the image with: HEAD of the repo, checked against `requested`.

    Uncommitted changes to tracked files under `paths` (the build contexts; all of the repo when
    empty) are refused: an image tagged with a SHA must be built from exactly that commit."""
    if requested is not None and not SHA_RE.match(requested):
        raise StageError(f"git SHA {requested!r} is not a hex commit id")
    try:
        head = _git(repo, "rev-parse", "HEAD")
    except (StageError, FileNotFoundError):
        if requested is None:
            raise StageError(f"{repo} is not a git repository with commits; pass git_sha explicitly") from None
        return requested
    if requested is not None and not head.startswith(requested):
        raise StageError(f"the checkout at {repo} is at {head[:12]}, not the requested {requested[:12]}",
                         hint="check out the commit to validate first")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", *(str(p) for p in paths))
    if dirty:
        first = dirty.splitlines()[0]
        raise StageError(f"uncommitted changes in {repo} ({first.strip()} ...): the image would not match {head[:12]}",
                         hint="commit or stash them")
    return head
