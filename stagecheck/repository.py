"""A service repository stagecheck does not live in: checked out at the requested commit, for one run.

A request that names a `repository` (a git URL, or a path) is validated from that repository's tree, not
from the working directory's: the commit is fetched into a bare cache clone of the repository
(`<cache dir>/repos/<hash of the URL>.git`, shared by the runs on the machine and locked while fetching),
and checked out as a detached, locked `git worktree` for this run alone under `<cache dir>/checkouts`
(the same place, locking and crash cleanup as `stagecheck.checkout`). The run's config is that tree's
`stagecheck.toml` (the request's `config`, a path inside the repository).

Credentials never go into the URL (a URL with a user:password part is refused) nor into any output: an
HTTP(S) token is passed to git as an `http.extraHeader` through git's environment configuration
(`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`, never a command-line argument), and the
caller holds the token for redaction (`stagecheck.redact`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stagecheck.checkout import (
    FULL_SHA_RE,
    GIT_TIMEOUT_S,
    Checkout,
    CheckoutError,
    _first_line,
    default_root,
    owner_reason,
    prune_orphans,
    prune_stale,
    repo_lock,
)
from stagecheck.gitinfo import SHA_RE
from stagecheck.settings import Settings

REPOS_DIR = "repos"
TOKEN_USER = "x-access-token"  # GitHub's user name for a token over HTTPS (any user name works on most hosts)
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")  # git@github.com:acme/shop.git
_REF = re.compile(r"^[A-Za-z0-9._/+-]{1,255}$")


class RepositoryError(CheckoutError):
    """The service repository could not be read at the requested commit; the message says why."""


def check_url(url: str) -> str:
    """Pure: the repository URL as given if git can reach it without credentials inside it; else RepositoryError.

    Accepted: https://, http:// (loopback hosts only), ssh://, git@host:path, file:// and absolute paths."""
    url = url.strip()
    if not url:
        raise RepositoryError("repository: empty; a git URL (https://host/owner/name.git) or an absolute path")
    if _SCP_LIKE.match(url) or url.startswith("/"):
        return url
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http", "ssh", "file"}:
        raise RepositoryError(f"repository {url!r}: a git URL (https://, ssh://, git@host:path, file://) or an "
                              "absolute path")
    if parts.password is not None or (parts.username and parts.scheme in {"https", "http"}):
        raise RepositoryError("repository: the URL carries credentials; put them in a Prefect Secret block and "
                              "name it in repository_credentials")
    if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise RepositoryError(f"repository {url!r}: plain http only to a loopback host; use https")
    if parts.scheme != "file" and not parts.hostname:
        raise RepositoryError(f"repository {url!r}: no host")
    return url


def canonical_url(url: str) -> str:
    """Pure: the URL compared between a merge event and a target (no trailing `/` or `.git`)."""
    return url.strip().rstrip("/").removesuffix(".git")


def auth_env(token: str | None) -> dict[str, str]:
    """Pure: git environment configuration sending `token` as HTTP Basic credentials (a `user:password`
    value is sent as is, a bare token with the user name x-access-token); {} without a token."""
    if not token:
        return {}
    pair = token if ":" in token else f"{TOKEN_USER}:{token}"
    header = "Authorization: Basic " + base64.b64encode(pair.encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header}


def secret_forms(token: str | None) -> list[str]:
    """Every form of the token that could reach an output (the token, its Basic header value)."""
    if not token:
        return []
    pair = token if ":" in token else f"{TOKEN_USER}:{token}"
    return [token, base64.b64encode(pair.encode()).decode(), *token.split(":", 1)[1:]]


def cache_clone(url: str, root: Path) -> Path:
    """Pure: where the bare cache clone of `url` lives under `root` (`<root>/<sha256(url)[:16]>.git`)."""
    return root / f"{hashlib.sha256(canonical_url(url).encode()).hexdigest()[:16]}.git"


def _git(repo: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", **(env or {})})


@dataclass(frozen=True)
class RepositoryTree:
    """The service repository at the run's commit."""

    url: str
    checkout: Checkout  # per_run: the worktree to remove at the end

    def config(self, relative: str) -> Path:
        """The stagecheck.toml at `relative` inside the tree (RepositoryError when it is not there)."""
        path = (self.checkout.tree / relative).resolve()
        if not path.is_relative_to(self.checkout.tree.resolve()):
            raise RepositoryError(f"config {relative!r}: a path inside the repository")
        if not path.is_file():
            raise RepositoryError(f"config {relative!r} not found in {self.url} at commit {self.checkout.sha[:12]}")
        return path


def _fetch(clone: Path, url: str, wanted: str, env: dict[str, str]) -> str:
    """Fetch `wanted` (a commit id or a ref) from `url` into the bare clone; the fetched commit's id."""
    if SHA_RE.match(wanted) and not FULL_SHA_RE.match(wanted):  # an abbreviated id: the branches, then look it up
        spec = ["+refs/heads/*:refs/stagecheck/fetched/*"]
    else:  # exactly that commit (or the ref's), without its history
        spec = ["--depth", "1", wanted]
    proc = _git(clone, "fetch", "--no-tags", "--quiet", url, *spec, env=env)
    if proc.returncode != 0:
        raise RepositoryError(f"commit {wanted} not found: git fetch from {url} failed: {_first_line(proc.stderr)}")
    target = wanted if SHA_RE.match(wanted) else "FETCH_HEAD"
    found = _git(clone, "rev-parse", "--verify", "--quiet", f"{target}^{{commit}}")
    if found.returncode != 0:
        raise RepositoryError(f"commit {wanted} not found in {url}")
    return found.stdout.strip()


def check_out(url: str, wanted: str | None, *, token: str | None = None, root: Path | None = None,
              run_token: str | None = None) -> RepositoryTree:
    """The repository at `url` at commit (or ref) `wanted` (None: its HEAD), checked out for this run alone.
    RepositoryError with the reason (the URL is shown, credentials never are)."""
    url = check_url(url)
    if wanted is not None and not (SHA_RE.match(wanted) or (_REF.match(wanted) and ".." not in wanted)):
        raise RepositoryError(f"git SHA {wanted!r} is not a hex commit id (7 to 40 lowercase hex digits)")
    checkouts = (root or default_root()).resolve()
    clone = cache_clone(url, checkouts.parent / REPOS_DIR)
    if not (clone / "HEAD").is_file():
        clone.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["git", "init", "-q", "--bare", str(clone)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RepositoryError(f"could not create the cache clone {clone}: {_first_line(proc.stderr)}")
    checkouts.mkdir(parents=True, exist_ok=True)
    prune_orphans(checkouts)
    prune_stale(clone, checkouts)
    env = auth_env(token)
    with repo_lock(clone):
        local = _git(clone, "rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}") if wanted and \
            SHA_RE.match(wanted) else None
        sha = local.stdout.strip() if local is not None and local.returncode == 0 else \
            _fetch(clone, url, wanted or "HEAD", env)
        path = checkouts / f"{sha[:12]}-{run_token or secrets.token_hex(4)}"
        proc = _git(clone, "worktree", "add", "--detach", "--lock", "--reason", owner_reason(), str(path), sha)
        if proc.returncode != 0:
            _git(clone, "worktree", "prune")
            raise RepositoryError(f"could not check out {sha[:12]} into {path}: {_first_line(proc.stderr)}")
    how = (f"{sha[:12]} of {url} checked out for this run at {path}"
           f" ({'from the cache clone' if local is not None and local.returncode == 0 else 'fetched'})")
    return RepositoryTree(url=url, checkout=Checkout(sha=sha, tree=path, clone=clone, per_run=True, how=how))


def settings_outside(settings: Settings, repo: RepositoryTree | None, workdir: Path | None = None) -> Settings:
    """Pure: a repository tree's settings with the report folder moved out of the tree (which is deleted at the
    end of the run) to the same relative place under the working directory; unchanged without a tree."""
    if repo is None:
        return settings
    tree = repo.checkout.tree.resolve()
    try:
        relative = settings.report_dir.resolve().relative_to(tree)
    except ValueError:
        return settings
    return settings.model_copy(update={"report_dir": (workdir or Path.cwd()) / relative})
