"""What test sessions leave in the local registry is removed: a tag alone (its digest's other tags
stay), a one-off repository, and old session tags by age."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from localenv.cleanup import SAMPLE_REPOSITORY, prune, remove_repository, remove_tag, repositories_dir
from tests.fixtures_docker import infra_state_dir

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def test_remove_tag_keeps_the_other_tags_of_the_same_digest(docker_env: Any, sample_image: Any) -> None:
    base = f"http://{docker_env.registry}/v2"
    repository, tag = sample_image.ref.rsplit("/", 1)[1].split(":")
    manifest = httpx.get(f"{base}/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, trust_env=False)
    manifest.raise_for_status()
    scratch = f"cleanup-{uuid.uuid4().hex[:8]}"
    body = manifest.json()
    for digest in [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]:
        httpx.post(f"{base}/{scratch}/blobs/uploads/?mount={digest}&from={repository}", trust_env=False).raise_for_status()
    for name in ("keep", "drop"):
        httpx.put(f"{base}/{scratch}/manifests/{name}", content=manifest.content, trust_env=False,
                  headers={"Content-Type": manifest.headers["content-type"]}).raise_for_status()
    try:
        assert remove_tag(infra_state_dir(), scratch, "drop")
        tags = httpx.get(f"{base}/{scratch}/tags/list", trust_env=False).json()["tags"]
        assert tags == ["keep"]
        kept = httpx.get(f"{base}/{scratch}/manifests/keep", headers={"Accept": MANIFEST_TYPES}, trust_env=False)
        assert kept.status_code == 200
    finally:
        assert remove_repository(infra_state_dir(), scratch)
    assert httpx.get(f"{base}/{scratch}/tags/list", trust_env=False).status_code == 404


def _tag(root: Path, repository: str, tag: str, age_s: float) -> None:
    link = root / repository / "_manifests" / "tags" / tag / "current" / "link"
    link.parent.mkdir(parents=True)
    link.write_text("sha256:0")
    when = time.time() - age_s
    for path in (link, link.parent, link.parent.parent):
        os.utime(path, (when, when))


def test_prune_removes_old_session_tags_and_test_repositories_only(tmp_path: Path) -> None:
    root = repositories_dir(tmp_path)
    _tag(root, SAMPLE_REPOSITORY, "test-0123456789ab", age_s=7200)  # an old session's tag
    _tag(root, SAMPLE_REPOSITORY, "test-ba9876543210", age_s=10)  # a session running now
    _tag(root, SAMPLE_REPOSITORY, "v1", age_s=7200)  # the demo's tag
    _tag(root, "pass-1234abcd", "0" * 40, age_s=7200)  # an old test's repository
    _tag(root, "pass-dcba4321", "0" * 40, age_s=10)  # a test running now
    _tag(root, "checkout", "0" * 40, age_s=7200)  # somebody's real repository

    listed = prune(tmp_path, 3600, dry_run=True)
    assert listed.tags == [f"{SAMPLE_REPOSITORY}:test-0123456789ab"]
    assert listed.repositories == ["pass-1234abcd"]
    assert (root / "pass-1234abcd").is_dir()  # dry run: nothing removed

    assert prune(tmp_path, 3600) == listed
    assert sorted(p.name for p in (root / SAMPLE_REPOSITORY / "_manifests" / "tags").iterdir()) == [
        "test-ba9876543210", "v1"]
    assert sorted(p.name for p in root.iterdir()) == ["checkout", "pass-dcba4321", SAMPLE_REPOSITORY]
