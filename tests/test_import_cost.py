"""What a command loads: the dry run and the syntax check never import the Cloud Run / Cloud Logging
client libraries (google.cloud.run_v2 alone is ~0.3 s of start-up); a release loads them on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("google.cloud.run_v2", "google.cloud.logging", "google.api_core.exceptions", "google.auth.jwt")


def loaded_after(code: str) -> dict[str, bool]:
    """Run `code` in a fresh interpreter; which of HEAVY (and prefect, docker) it loaded."""
    probe = ("import json, sys\n" + code + "\nprint(json.dumps({m: m in sys.modules for m in "
             f"{(*HEAVY, 'prefect', 'docker')!r}}}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    loaded: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


DRY_RUN_CLIENTS = """
import cli.commands.validate, flows.validate
from stagecheck.settings import ServiceConfig, Settings
from tasks.common import Clients
clients = Clients.from_settings(Settings(project="import-proj", region="europe-west1", registry="127.0.0.1:5000/x",
                                         services=(ServiceConfig(name="shop"),)))
clients.images  # what a dry run uses: the build
"""


def test_the_validate_command_and_a_dry_runs_clients_load_no_api_library() -> None:
    loaded = loaded_after(DRY_RUN_CLIENTS)
    assert [m for m in HEAVY if loaded[m]] == []
    assert loaded["prefect"]  # the flow itself is imported


def test_a_release_loads_the_api_libraries_when_it_first_uses_them() -> None:
    loaded = loaded_after(DRY_RUN_CLIENTS + "clients.cloudrun; clients.logs; clients.tokens")
    assert all(loaded[m] for m in ("google.cloud.run_v2", "google.api_core.exceptions", "google.auth.jwt"))


def test_the_syntax_check_command_loads_neither_prefect_nor_the_clients() -> None:
    loaded = loaded_after("import cli.commands.check_syntax, cli.main")
    assert [m for m, on in loaded.items() if on] == []


async def test_the_probe_client_is_built_on_first_use_and_closed_only_then() -> None:
    """A dry run never probes: it builds no probes' HTTP client (its TLS context: ~50 ms of CPU)."""
    from stagecheck.settings import ServiceConfig, Settings
    from tasks.common import Clients

    clients = Clients.from_settings(Settings(project="import-proj", region="europe-west1", registry="127.0.0.1:5000/x",
                                             services=(ServiceConfig(name="shop"),)))
    assert clients._http is None
    await clients.aclose()  # nothing built, nothing to close
    again = Clients.from_settings(clients.settings)
    http = again.http
    assert again.http is http and again._http is http and not http.is_closed
    await again.aclose()
    assert http.is_closed
