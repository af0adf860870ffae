"""End-to-end pipeline tests: the real flow, against the sandbox, on a temporary Prefect server
(prefect_test_harness), building the sample service from a temporary git repository."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.cleanup import remove_local_repository, remove_repository
from tests.fixtures_docker import infra_state_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "examples" / "sample-service"


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


class Scenario:
    """A throwaway repository with one or more copies of the sample service and a stagecheck.toml."""

    def __init__(self, root: Path, sandbox: Any) -> None:
        self.root = root
        self.sandbox = sandbox
        self.repositories: set[str] = set()  # what the runs push to; removed after the test
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        _git(root, "config", "user.email", "ci@example.com")
        _git(root, "config", "user.name", "ci")

    def add_service(self, directory: str) -> Path:
        dest = self.root / directory
        shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("README.md", "bin"))
        return dest

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def config(self, services: list[dict[str, Any]], *, steps: str = "[50, 100]", extra: str = "",
               bake_s: float = 1.0, successes: int = 2, hold_s: float = 0.0) -> Path:
        # a short bake keeps the scenarios quick; only the bake tests watch longer windows
        lines = [
            'report_dir = "reports"',
            "deploy_timeout_s = 60",
            "[probes]", "deadline_s = 25", f"consecutive_successes = {successes}", "initial_backoff_s = 0.1",
            "max_backoff_s = 0.5", "success_interval_s = 0.05",
            "[traffic]", f"steps = {steps}", f"hold_s = {hold_s}", f"bake_s = {bake_s}", "bake_interval_s = 1",
            "[logs]", "settle_s = 8",
            extra,
        ]
        for svc in services:
            self.repositories.add(str(svc.get("image_name") or svc["name"]))
            lines.append("[[services]]")
            for key, value in svc.items():
                if isinstance(value, dict):
                    inner = ", ".join(f'{k} = "{v}"' for k, v in value.items())
                    lines.append(f"{key} = {{ {inner} }}")
                else:
                    lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
        path = self.root / "stagecheck.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def commit(self, message: str = "change") -> str:
        _git(self.root, "add", "-A")
        _git(self.root, "commit", "-qm", message, "--allow-empty")
        return _git(self.root, "rev-parse", "HEAD")


@pytest.fixture
def scenario(tmp_path: Path, sandbox: Any, sample_image: Any) -> Iterator[Scenario]:
    # sample_image makes sure the sample Dockerfile's base image (BUSYBOX_IMAGE) is in the engine
    scenario = Scenario(tmp_path / "repo", sandbox)
    yield scenario
    # the images the runs pushed and built: one-off repositories, gone with the test
    for repository in scenario.repositories:
        remove_repository(infra_state_dir(), repository)
        remove_local_repository(sandbox.docker_host, f"{sandbox.registry}/{repository}")


@pytest.fixture
def cloudrun(sandbox: Any) -> Any:
    """The pipeline's Cloud Run client (stagecheck.clients.cloudrun.CloudRun) on this worker's sandbox."""
    from stagecheck.clients.cloudrun import CloudRun
    from stagecheck.settings import load_settings

    settings = load_settings(None, environ={}, sandbox_json=Path(sandbox.state_dir) / "sandbox.json",
                             overrides={"services": [{"name": "unused"}]})
    return CloudRun(settings)


@pytest.fixture
def service(run_clients: Any) -> Iterator[str]:
    """A unique service id for one test; the service is deleted after it (when the test created it)."""
    from google.api_core import exceptions as gexc

    from tests.fixtures_sandbox import FAST_POLL, unique_name

    name = unique_name("svc")
    yield name
    try:
        run_clients.services.delete_service(name=run_clients.service_name(name)).result(polling=FAST_POLL, timeout=60)
    except gexc.NotFound:
        pass
