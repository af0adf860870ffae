"""Shared test setup. Fixtures that need real infrastructure live in their own modules:
tests/fixtures_docker.py (engine, registry, sample image) and tests/fixtures_sandbox.py (the sandbox)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before any Google or Prefect import: no metadata-server probing, no telemetry, offline-safe.
os.environ.pop("GOOGLE_API_USE_MTLS_ENDPOINT", None)
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

try:  # the infrastructure fixtures arrive with their modules
    from tests.fixtures_docker import *  # noqa: F403
except ImportError as exc:  # pragma: no cover - only while a module is missing
    if "fixtures_docker" not in str(exc):
        raise
try:
    from tests.fixtures_sandbox import *  # noqa: F403
except ImportError as exc:  # pragma: no cover
    if "fixtures_sandbox" not in str(exc):
        raise


@pytest.fixture(autouse=True, scope="session")
def _syntax_cache_in_a_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The syntax stage's result cache of a test session lives in a temp dir, never ~/.cache."""
    previous = os.environ.get("STAGECHECK_CACHE_DIR")
    os.environ["STAGECHECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("syntax-cache"))
    yield
    if previous is None:
        os.environ.pop("STAGECHECK_CACHE_DIR", None)
    else:
        os.environ["STAGECHECK_CACHE_DIR"] = previous



@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make pytest` runs `-n N --dist loadgroup`) the tests on the real Prefect server
    (the `prefect_server` session fixture of tests/server: a server, a worker and the deployments, a minute or
    more to set up) share one worker instead of each worker starting its own."""
    for item in items:
        if "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("prefect-server"))
