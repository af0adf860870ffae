"""The merge event: what CI emits after a merge (`stagecheck notify-merge`) and what the deployments'
trigger listens for. One vocabulary for both sides, pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MERGE_EVENT = "stagecheck.git.merged"
RESOURCE_PREFIX = "git.repo."
REF_LABEL = "stagecheck.git.ref"

SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9._-]{1,100})?$")
REF_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,255}$")


class MergeEventError(ValueError):
    """A merge event field is unusable; the message says which and why."""


@dataclass(frozen=True)
class MergeEvent:
    sha: str
    ref: str
    repo: str

    @classmethod
    def parse(cls, sha: str, ref: str, repo: str) -> MergeEvent:
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
        return cls(sha=sha, ref=ref, repo=repo)

    @property
    def branch(self) -> str:
        return self.ref.removeprefix("refs/heads/")

    def resource(self) -> dict[str, str]:
        return {"prefect.resource.id": resource_id(self.repo), "prefect.resource.name": self.repo,
                REF_LABEL: self.branch}

    def payload(self) -> dict[str, Any]:
        return {"sha": self.sha, "ref": self.ref, "repo": self.repo}


def resource_id(repo: str) -> str:
    """`git.repo.<name>`; a `/` (owner/name) becomes `.` so the id stays one dotted path."""
    return f"{RESOURCE_PREFIX}{repo.replace('/', '.')}"
