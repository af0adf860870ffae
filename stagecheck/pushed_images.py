"""Which pushed image a build would reproduce: the content key of a build's inputs, and the record of
the digest a run pushed for it.

A run that failed after the push (at `logs`, say) and is run again for the same commit must not build
again: the image is already in the registry. The key is made of what determines the image — the
repository, the commit, the Dockerfile's content, the build args, the build context's git tree, the
platform and the labels stagecheck sets — never of client objects or absolute paths (a per-run checkout
lives somewhere else each time)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

KEY_VERSION = "1"


class PushedImage(BaseModel):
    """What a run pushed for a build key (kept in Prefect result storage)."""

    key: str
    repository: str
    git_sha: str
    digest: str  # sha256:...
    pinned: str  # repository@digest
    image_id: str | None = None
    image_platform: str = ""  # os/arch read back from the built image
    local_size_bytes: int | None = None
    tags: list[str] = []
    flow_run_id: str | None = None  # the run that built and pushed it


def context_identity(context: Path) -> str:
    """The build context's git tree id at HEAD (what the commit holds there; cheap, path independent),
    or its absolute path outside git."""
    try:
        out = subprocess.run(["git", "-C", str(context), "rev-parse", "HEAD:./"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return f"tree:{out.stdout.strip()}"
    return f"path:{context.resolve()}"


def build_key(*, repository: str, git_sha: str, dockerfile: bytes, build_args: Mapping[str, str],
              context: str, platform: str, labels: Mapping[str, str]) -> str:
    """Pure: the content key of a build (hex sha256 of its inputs, canonical JSON)."""
    body = json.dumps({
        "v": KEY_VERSION, "repository": repository, "git_sha": git_sha,
        "dockerfile": hashlib.sha256(dockerfile).hexdigest(), "build_args": dict(sorted(build_args.items())),
        "context": context, "platform": platform, "labels": dict(sorted(labels.items())),
    }, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def record_path(key: str) -> str:
    """Where the record of `key` lives in the result storage."""
    return f"stagecheck-images/{key}.json"
