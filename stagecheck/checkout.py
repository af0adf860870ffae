"""The tree a run validates: the requested commit, checked out for this run alone.

A worker's clone (the deployment's code, e.g. what Prefect's `git_clone` pull step cloned, or a
developer's working copy) is rarely at the commit a merge event names. So:

* no SHA requested: HEAD of the clone, in place; uncommitted changes to the build contexts are
  refused (`gitinfo.resolve_sha`): an image tagged with a SHA must be built from exactly that commit.
* the requested SHA is HEAD of the clone and the build contexts are clean: in place (same tree).
* any other requested SHA: a *per-run checkout*. The commit is taken from the clone's own objects,
  else fetched (`git fetch <remote> <sha>`; the remote is the clone's `origin`, or
  $STAGECHECK_GIT_REMOTE: a remote name or URL), then `git worktree add --detach --lock` into
  `<cache dir>/checkouts/<sha12>-<token>`. The run reads everything from that tree and `remove`s it
  at the end. Its lock reason names the owner (host, pid, process start), so the next run on the
  machine removes the checkouts of a run that crashed (and any checkout whose clone was deleted). Fetch, add and remove hold a file lock in the
  clone's git dir: runs at different commits on one worker never race on git's own lock files.
* a repository that is not git with a SHA given: the SHA is taken as given (no commit to check).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stagecheck.errors import StageError
from stagecheck.gitinfo import SHA_RE, resolve_sha

REMOTE_ENV = "STAGECHECK_GIT_REMOTE"
CHECKOUTS_DIR = "checkouts"
LOCK_PREFIX = "stagecheck-checkout"
FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
GIT_TIMEOUT_S = 300.0


class CheckoutError(StageError):
    """The requested commit could not be checked out; the message says why."""


@dataclass(frozen=True)
class Checkout:
    """Where a run reads the repository from."""

    sha: str  # the full commit id (or the SHA as given, outside git)
    tree: Path  # the directory holding the commit's files
    clone: Path  # the clone's top level (`tree` is `clone` unless per_run)
    per_run: bool  # a worktree made for this run, to be removed with `remove`
    how: str  # one line for the report

    def relocate(self, path: Path) -> Path:
        """Pure: `path` inside the clone, mapped into the checkout (other paths unchanged)."""
        if not self.per_run:
            return path
        try:
            return self.tree / Path(path).resolve().relative_to(self.clone)
        except ValueError:
            return path


def _run(repo: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})


def _git(repo: Path, *args: str, timeout: float = 60.0) -> str:
    proc = _run(repo, *args, timeout=timeout)
    if proc.returncode != 0:
        raise CheckoutError(f"git {' '.join(args[:2])} failed in {repo}: {_first_line(proc.stderr)}")
    return proc.stdout.strip()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return ((fatal or lines or ["no output"])[0])[:300]


def toplevel(path: Path) -> Path | None:
    """The git top level holding `path`, or None when it is not in a work tree."""
    try:
        proc = _run(path, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def default_root() -> Path:
    """`<cache dir>/checkouts` (the cache dir: $STAGECHECK_CACHE_DIR, $XDG_CACHE_HOME/stagecheck, ~/.cache/stagecheck)."""
    from stagecheck.syntax.cache import default_cache_dir

    return default_cache_dir() / CHECKOUTS_DIR


# ------------------------------------------------------------------ owners of per-run checkouts


def _start_ticks(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_reason(pid: int | None = None) -> str:
    """The lock reason of a checkout: who made it (host, pid, process start), to tell a crashed owner."""
    pid = os.getpid() if pid is None else pid
    return f"{LOCK_PREFIX} host={socket.gethostname()} pid={pid} start={_start_ticks(pid) or 0}"


def owner_alive(reason: str) -> bool:
    """Whether the run that locked a checkout with `reason` may still use it (unknown hosts: yes)."""
    fields = dict(part.split("=", 1) for part in reason.split()[1:] if "=" in part)
    if fields.get("host") != socket.gethostname():
        return True
    try:
        pid, start = int(fields["pid"]), int(fields["start"])
    except (KeyError, ValueError):
        return True
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    return start == 0 or ticks == start


@dataclass(frozen=True)
class WorktreeEntry:
    path: Path
    head: str
    locked: str | None


def worktrees(clone: Path) -> list[WorktreeEntry]:
    """The clone's linked worktrees (`git worktree list --porcelain`)."""
    out: list[WorktreeEntry] = []
    path: Path | None = None
    head, locked = "", None
    for line in (_git(clone, "worktree", "list", "--porcelain") + "\n\n").splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line.startswith("HEAD "):
            head = line.removeprefix("HEAD ")
        elif line.startswith("locked"):
            locked = line.removeprefix("locked").strip()
        elif not line and path is not None:
            out.append(WorktreeEntry(path=path, head=head, locked=locked))
            path, head, locked = None, "", None
    return out


@contextlib.contextmanager
def repo_lock(clone: Path) -> Iterator[None]:
    """An exclusive lock on the clone for fetch/add/remove (released by the kernel if the process dies)."""
    common = Path(_git(clone, "rev-parse", "--git-common-dir"))
    common = common if common.is_absolute() else clone / common
    with open(common / f"{LOCK_PREFIX}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_worktree(clone: Path, path: Path) -> None:
    proc = _run(clone, "worktree", "remove", "--force", "--force", str(path))
    if proc.returncode != 0:  # a half-made or already deleted directory: unlock, delete, prune
        _run(clone, "worktree", "unlock", str(path))
        shutil.rmtree(path, ignore_errors=True)
        _run(clone, "worktree", "prune")


def prune_stale(clone: Path, root: Path) -> list[Path]:
    """Remove the per-run checkouts under `root` whose owning run is gone (crashed); returns them."""
    removed = []
    with repo_lock(clone):
        for entry in worktrees(clone):
            if entry.locked is None or not entry.locked.startswith(LOCK_PREFIX):
                continue
            if not entry.path.resolve().is_relative_to(root.resolve()) or owner_alive(entry.locked):
                continue
            _remove_worktree(clone, entry.path)
            removed.append(entry.path)
        _run(clone, "worktree", "prune")
    return removed


def prune_orphans(root: Path) -> list[Path]:
    """Remove per-run checkouts under `root` whose clone is gone (a worker deletes a run's clone, e.g. the
    `git_clone` pull step's, also when the run crashed): their `.git` file points to a missing git dir."""
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        pointer = path / ".git"
        try:
            text = pointer.read_text().strip()
        except OSError:  # not a worktree, or one still being created: not ours to judge
            continue
        gitdir = Path(text.removeprefix("gitdir:").strip())
        if text.startswith("gitdir:") and not gitdir.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# ------------------------------------------------------------------ checking out


def _local_commit(clone: Path, sha: str) -> str | None:
    proc = _run(clone, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
    return proc.stdout.strip() if proc.returncode == 0 else None


def _remote(clone: Path, remote: str | None, sha: str) -> str:
    if remote:
        return remote
    if _run(clone, "remote", "get-url", "origin").returncode != 0:
        raise CheckoutError(f"commit {sha} not found in the clone at {clone}, which has no remote 'origin' to "
                            f"fetch it from; set {REMOTE_ENV} to a remote name or URL")
    return "origin"


def fetch_commit(clone: Path, sha: str, remote: str | None = None) -> tuple[str, str | None]:
    """The commit's full id and the remote it was fetched from (None: the clone had it); CheckoutError
    when the remote does not have it."""
    found = _local_commit(clone, sha)
    if found:
        return found, None
    source = _remote(clone, remote, sha)
    shallow = _git(clone, "rev-parse", "--is-shallow-repository") == "true"
    if FULL_SHA_RE.match(sha):  # fetch exactly that commit (servers allow wants of reachable commits)
        args = ["fetch", "--no-tags", "--quiet", *(["--depth", "1"] if shallow else []), source, sha]
    else:  # an abbreviated id cannot be fetched by name: fetch the branches, then look it up
        args = ["fetch", "--no-tags", "--quiet", *(["--unshallow"] if shallow else []), source,
                "+refs/heads/*:refs/stagecheck/fetched/*"]
    proc = _run(clone, *args, timeout=GIT_TIMEOUT_S)
    if proc.returncode != 0:
        raise CheckoutError(f"commit {sha} not found: git fetch from {source} failed: {_first_line(proc.stderr)}")
    found = _local_commit(clone, sha)
    if not found:
        raise CheckoutError(f"commit {sha} not found in {clone} nor on its remote {source}")
    return found, source


def _clean(clone: Path, paths: tuple[Path, ...]) -> bool:
    return not _git(clone, "status", "--porcelain", "--untracked-files=no", "--", *(str(p) for p in paths))


def _resolve(repo: Path, requested: str | None, paths: tuple[Path, ...]) -> str:
    try:
        return resolve_sha(repo, requested, paths)
    except CheckoutError:
        raise
    except StageError as exc:
        raise CheckoutError(str(exc)) from None


def prepare(repo_root: Path, requested: str | None, paths: tuple[Path, ...] = (), *, root: Path | None = None,
            remote: str | None = None, token: str | None = None) -> Checkout:
    """The tree to validate `requested` from (see the module docstring); CheckoutError with the reason."""
    if requested is not None and not SHA_RE.match(requested):
        raise CheckoutError(f"git SHA {requested!r} is not a hex commit id (7 to 40 lowercase hex digits)")
    clone = toplevel(repo_root)
    if clone is None:
        sha = _resolve(repo_root, requested, paths)  # refuses a missing SHA; otherwise taken as given
        return Checkout(sha=sha, tree=repo_root, clone=repo_root, per_run=False,
                        how=f"{repo_root} is not a git repository: the commit id is taken as given")
    root = (root or default_root()).resolve()
    prune_orphans(root)
    prune_stale(clone, root)
    head = _git(clone, "rev-parse", "HEAD")
    if requested is None or (head.startswith(requested) and _clean(clone, paths)):
        sha = _resolve(clone, requested, paths)  # keeps the refusal of uncommitted changes
        return Checkout(sha=sha, tree=clone, clone=clone, per_run=False, how=f"HEAD of {clone}, clean")
    root.mkdir(parents=True, exist_ok=True)
    remote = remote or os.environ.get(REMOTE_ENV) or None
    with repo_lock(clone):
        sha, fetched_from = fetch_commit(clone, requested, remote)
        path = root / f"{sha[:12]}-{token or secrets.token_hex(4)}"
        proc = _run(clone, "worktree", "add", "--detach", "--lock", "--reason", owner_reason(), str(path), sha,
                    timeout=GIT_TIMEOUT_S)
        if proc.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            _run(clone, "worktree", "prune")
            raise CheckoutError(f"could not check out {sha[:12]} into {path}: {_first_line(proc.stderr)}")
    where = f"fetched from {fetched_from}" if fetched_from else "from the clone's objects"
    return Checkout(sha=sha, tree=path, clone=clone, per_run=True,
                    how=f"{sha[:12]} checked out for this run at {path} ({where}; the clone is at {head[:12]})")


def remove(checkout: Checkout) -> None:
    """Delete a per-run checkout and its worktree entry (no-op for an in-place one)."""
    if not checkout.per_run:
        return
    with repo_lock(checkout.clone):
        _remove_worktree(checkout.clone, checkout.tree)
