"""The merge event: what CI emits after a merge (`stagecheck notify-merge`) and what the deployments'
trigger listens for. One vocabulary for both sides, pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MERGE_EVENT = "stagecheck.git.merged"
RESOURCE_PREFIX = "git.repo."
REF_LABEL = "stagecheck.git.ref"
URL_LABEL = "stagecheck.git.url"  # the repository's git URL (no trailing / or .git): what a target matches
CONFIG_LABEL = "stagecheck.git.config"  # the path of the stagecheck.toml in it, when the event names one

SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9._-]{1,100})?$")
REF_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,255}$")
CONFIG_RE = re.compile(r"^[A-Za-z0-9._-][A-Za-z0-9._/-]{0,254}\.toml$")


class MergeEventError(ValueError):
    """A merge event field is unusable; the message says which and why."""


@dataclass(frozen=True)
class MergeEvent:
    sha: str
    ref: str
    repo: str
    url: str | None = None  # the repository's git URL, without credentials
    config: str | None = None  # the stagecheck.toml inside it

    @classmethod
    def parse(cls, sha: str, ref: str, repo: str, url: str | None = None, config: str | None = None) -> MergeEvent:
        """Validate CI input (a readable MergeEventError, never a traceback)."""
        sha = sha.strip().lower()
        if not SHA_RE.match(sha):
            raise MergeEventError(f"--sha {sha!r} is not a hex commit id (7 to 40 characters)")
        ref = ref.strip()
        if not REF_RE.match(ref) or ".." in ref:
            raise MergeEventError(f"--ref {ref!r} is not a git ref (e.g. main or refs/heads/main)")
        repo = repo.strip()
        if not REPO_RE.match(repo):
            raise MergeEventError(f"--repo {repo!r} is not a repository name (e.g. shop or acme/shop)")
        if url is not None:
            from stagecheck.repository import RepositoryError, canonical_url, check_url

            try:
                url = canonical_url(check_url(url))
            except RepositoryError as exc:
                raise MergeEventError(f"--url: {str(exc).removeprefix('repository').lstrip(': ')}") from None
        if config is not None:
            config = config.strip()
            if not CONFIG_RE.match(config) or ".." in config.split("/"):
                raise MergeEventError(f"--config {config!r}: a relative path inside the repository, e.g. "
                                      "stagecheck.toml or deploy/stagecheck.toml")
        return cls(sha=sha, ref=ref, repo=repo, url=url, config=config)

    @property
    def branch(self) -> str:
        return self.ref.removeprefix("refs/heads/")

    def resource(self) -> dict[str, str]:
        labels = {"prefect.resource.id": resource_id(self.repo), "prefect.resource.name": self.repo,
                  REF_LABEL: self.branch}
        if self.url:
            labels[URL_LABEL] = self.url
        if self.config:
            labels[CONFIG_LABEL] = self.config
        return labels

    def payload(self) -> dict[str, Any]:
        extra = {k: v for k, v in (("url", self.url), ("config", self.config)) if v}
        return {"sha": self.sha, "ref": self.ref, "repo": self.repo, **extra}


def resource_id(repo: str) -> str:
    """`git.repo.<name>`; a `/` (owner/name) becomes `.` so the id stays one dotted path."""
    return f"{RESOURCE_PREFIX}{repo.replace('/', '.')}"
