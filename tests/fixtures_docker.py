"""Session fixtures for tests that need the real Docker Engine and registry (see localenv/infra.py).

`docker_env` brings the infrastructure up idempotently (reusing whatever already answers) and
leaves what it started running for `make down`. The state dir is `<repo>/.stagecheck`, or
$STAGECHECK_STATE_DIR; the registry is 127.0.0.1:5000, or $STAGECHECK_REGISTRY.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from localenv.cleanup import SAMPLE_REPOSITORY, remove_local_images, remove_tag
from localenv.infra import DEFAULT_REGISTRY, InfraError, InfraInfo, ensure_up
from sandbox.sample_image import SampleImage, SampleImageError, build_sample_image

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["docker_client", "docker_env", "sample_image"]


@pytest.fixture(scope="session")
def docker_env() -> InfraInfo:
    registry = os.environ.get("STAGECHECK_REGISTRY") or DEFAULT_REGISTRY
    try:
        return ensure_up(infra_state_dir(), registry_addr=registry)
    except InfraError as exc:
        pytest.fail(f"local infrastructure unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def docker_client(docker_env: InfraInfo) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_env.docker_host, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sample_image(docker_env: InfraInfo, docker_client: docker.DockerClient) -> Iterator[SampleImage]:
    """The sample service, built and pushed once per session under a unique tag, untagged at the end
    (in the registry and the engine) so that sessions do not pile up `test-<hex>` tags."""
    tag = f"test-{uuid.uuid4().hex[:12]}"
    try:
        image = build_sample_image(docker_client, docker_env.registry, tag)
    except SampleImageError as exc:
        pytest.fail(f"sample image: {exc}", pytrace=False)
    yield image
    remove_tag(infra_state_dir(), SAMPLE_REPOSITORY, tag)
    remove_local_images(docker_env.docker_host, [image.ref])


def infra_state_dir() -> Path:
    return Path(os.environ.get("STAGECHECK_STATE_DIR") or REPO_ROOT / ".stagecheck")
