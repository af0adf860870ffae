"""The shipped example builds from a per-run checkout of any commit: its build context needs no ignored or
generated file (a worker's clone is at another commit and has nothing but committed files). Real git, a real
Docker build."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import docker
import pytest

from localenv.infra import InfraInfo
from stagecheck.checkout import prepare, remove
from stagecheck.clients.images import Images

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path("examples/sample-service")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def committed_copy(dest: Path) -> None:
    """A clone of this repository's files as a user gets them: tracked and new files, never ignored ones."""
    for name in filter(None, git(REPO_ROOT, "ls-files", "-co", "--exclude-standard", "-z").split("\0")):
        if (REPO_ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, dest / name)


def test_a_per_run_checkout_of_an_earlier_commit_builds_the_example(
        tmp_path: Path, docker_env: InfraInfo, docker_client: docker.DockerClient) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    committed_copy(clone)
    git(clone, "init", "-q", "-b", "main")
    git(clone, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A")
    git(clone, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "first")
    first = git(clone, "rev-parse", "HEAD")
    (clone / "NEWS").write_text("a later commit\n")
    git(clone, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A")
    git(clone, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "second")
    # the worker's clone ran the setup: its own ignored leftovers must not matter to a per-run tree
    (clone / EXAMPLE / "bin").mkdir()
    (clone / EXAMPLE / "bin" / "busybox").write_text("not a binary\n")

    checkout = prepare(clone, first, root=tmp_path / "checkouts")
    tag = f"127.0.0.1:5000/stagecheck-checkout-build:test-{uuid.uuid4().hex[:10]}"
    images = Images(docker_env.docker_host)
    try:
        assert checkout.per_run and checkout.sha == first
        assert not (checkout.tree / EXAMPLE / "bin").exists()  # nothing ignored reaches the run's tree
        result = images.build(checkout.tree / EXAMPLE, "Dockerfile", tag)
        assert result.image_arch == "amd64"
        container = docker_client.containers.run(tag, entrypoint=["/bin/busybox", "echo", "ran"], remove=True,
                                                 network_mode="host")
        assert container.decode().strip() == "ran"  # busybox came from the BUSYBOX_IMAGE stage
    finally:
        remove(checkout)
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
