"""Shared test setup. Fixtures that need real infrastructure live in their own modules:
tests/fixtures_docker.py (engine, registry, sample image) and tests/fixtures_sandbox.py (the sandbox)."""

from __future__ import annotations

import os

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
