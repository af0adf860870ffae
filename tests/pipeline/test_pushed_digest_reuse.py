"""A run retried after a failure past the push does not build again: the digest pushed for the same
build key (repository + commit + Dockerfile + build args + context tree) is found in Prefect result
storage, checked to be still in the registry, and deployed; a digest the registry lost is rebuilt."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from localenv.cleanup import remove_repository
from stagecheck.pushed_images import build_key, context_identity
from tests.fixtures_docker import infra_state_dir
from tests.pipeline.test_e2e import baseline, created, run_flow, serving  # noqa: F401  (created: a fixture)

ERRORS = {"ERROR_RATE": "5", "ERROR_MESSAGE": "ledger write failed after {n} ms ({id})"}


# ------------------------------------------------------------------ the key (pure)


def _key(**change: Any) -> str:
    inputs: dict[str, Any] = {"repository": "r.example/p/web", "git_sha": "a" * 40, "dockerfile": b"FROM scratch\n",
                              "build_args": {"A": "1"}, "context": "tree:abc", "platform": "linux/amd64",
                              "labels": {"dev.stagecheck.service": "web"}}
    return build_key(**{**inputs, **change})


def test_the_build_key_changes_with_every_input_and_only_with_them() -> None:
    base = _key()
    assert base == _key(build_args={"A": "1"}) and len(base) == 64
    changes: tuple[dict[str, Any], ...] = (
        {"repository": "r.example/p/api"}, {"git_sha": "b" * 40}, {"dockerfile": b"FROM busybox\n"},
        {"build_args": {"A": "2"}}, {"build_args": {}}, {"context": "tree:def"},
        {"platform": "linux/arm64"}, {"labels": {"dev.stagecheck.service": "api"}})
    for change in changes:
        assert _key(**change) != base, change


def test_the_context_is_identified_by_its_git_tree_not_by_where_the_checkout_lives(tmp_path: Path) -> None:
    def git(repo: Path, *args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    origin = tmp_path / "origin"
    (origin / "svc").mkdir(parents=True)
    (origin / "svc" / "Dockerfile").write_text("FROM scratch\n")
    git(tmp_path, "init", "-q", str(origin))
    git(origin, "-c", "user.email=a@b", "-c", "user.name=a", "add", "-A")
    git(origin, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True, capture_output=True)
    first = context_identity(origin / "svc")
    assert first.startswith("tree:") and first == context_identity(clone / "svc")
    assert context_identity(tmp_path / "not-git") == f"path:{(tmp_path / 'not-git').resolve()}"


# ------------------------------------------------------------------ against the sandbox, registry and Prefect


def _local_tags(docker_host: str, name: str) -> list[str]:
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        return [t for image in client.images.list() for t in image.tags if t.startswith(f"{name}:")]
    finally:
        client.close()


def _untag(docker_host: str, references: list[str]) -> None:
    """Remove the tags (forced: the sandbox's revision containers still run the image by digest)."""
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        for ref in references:
            client.images.remove(ref, force=True)
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_run_retried_after_failing_at_logs_deploys_the_same_digest_without_building(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("dgst")
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc", "env": ERRORS}], steps="[100]", bake_s=0)
    sha = scenario.commit()
    first = await run_flow(scenario, config, git_sha=sha)
    assert first.report(service)["decided_by"] == "logs"  # failed past the push, and rolled back
    assert serving(run_clients, service) == {before: 100}
    pushed = first.report(service)["image"]["pinned"]
    assert first.stage(service, "build")["data"]["reused"] is False
    # the worker's image is gone (another worker takes the retry): a build would have to make it again
    name = f"{scenario.sandbox.registry}/{service}"
    built = _local_tags(scenario.sandbox.docker_host, name)
    assert f"{name}:{sha}" in built
    _untag(scenario.sandbox.docker_host, built)
    assert _local_tags(scenario.sandbox.docker_host, name) == []

    again = await run_flow(scenario, config, git_sha=sha)
    report = again.report(service)
    build = again.stage(service, "build")
    assert build["status"] == "PASS" and build["data"]["reused"] is True, build["summary"]
    assert build["summary"].startswith(f"not rebuilt: {pushed} was pushed for this commit")
    assert report["image"]["pinned"] == pushed and report["image"]["reused"] is True
    assert "not pushed again" in again.stage(service, "push")["summary"]
    assert report["revision"]["image"] == pushed  # the same digest deployed
    assert report["revision"]["name"] != first.report(service)["revision"]["name"]
    assert _local_tags(scenario.sandbox.docker_host, name) == []  # no docker build happened


@pytest.mark.docker
@pytest.mark.sandbox
async def test_a_recorded_digest_the_registry_no_longer_has_is_rebuilt(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("dgdel")
    baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]", bake_s=0)
    sha = scenario.commit()
    first = await run_flow(scenario, config, git_sha=sha)
    assert first.report(service)["verdict"] == "pass", first.report(service)["reasons"]
    assert remove_repository(infra_state_dir(), service)  # the registry lost the image

    again = await run_flow(scenario, config, git_sha=sha)
    report = again.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    build = again.stage(service, "build")
    assert build["data"]["reused"] is False and build["summary"].startswith("built ")
    assert again.stage(service, "push")["summary"].startswith("pushed ")
    assert report["revision"]["image"] == report["image"]["pinned"]
    assert serving(run_clients, service) == {report["revision"]["name"]: 100}
