"""The registry token (Artifact Registry's `oauth2accesstoken` password) comes from the same credentials as the
API calls: `endpoints.credentials_file` when set (a service-account key or Workload Identity Federation's
external_account), never Application Default Credentials beside it. Minted by the sandbox's token endpoint /
STS and checked by its API authentication; the metadata server is pointed at a closed loopback port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.auth import jwt

from stagecheck.settings import load_settings
from tasks.common import Clients

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def _registry_login(sandbox: Any, tmp_path: Path, credentials_file: str) -> dict[str, str]:
    info = json.loads((Path(sandbox.state_dir) / "sandbox.json").read_text())
    (tmp_path / "sandbox.json").write_text(json.dumps({**info, "credentials_file": credentials_file}))
    settings = load_settings(None, environ={}, sandbox_json=tmp_path / "sandbox.json",
                             overrides={"services": [{"name": "unused"}]})
    auth = Clients.from_settings(settings).images._auth_config("europe-docker.pkg.dev")  # an Artifact Registry host
    assert auth is not None
    return auth


def _api_accepts(sandbox: Any, token: str) -> int:
    url = f"{sandbox.run_api}/v2/projects/{sandbox.project}/locations/{sandbox.region}/services"
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10, trust_env=False).status_code


@pytest.mark.parametrize("identity", ["service_account", "external_account"])
def test_the_registry_token_is_the_api_identitys_not_adc(sandbox: Any, run_clients: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, identity: str) -> None:
    # ADC would be another identity (here: the outsider's key); the metadata server is a closed loopback port
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", sandbox.outsider_credentials_file)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    credentials_file = sandbox.credentials_file if identity == "service_account" else sandbox.external_account_file
    auth = _registry_login(sandbox, tmp_path, credentials_file)
    assert auth["username"] == "oauth2accesstoken"
    assert _api_accepts(sandbox, auth["password"]) == 200  # an access token the sandbox issued
    claims = jwt.decode(auth["password"].removeprefix("ya29."), verify=False)
    if identity == "service_account":
        expected = "serviceAccount:" + json.loads(Path(sandbox.credentials_file).read_text())["client_email"]
    else:
        expected = run_clients.admin("GET", "/sandbox/v1/iam/generated-id-tokens")["federated_member"]
    assert claims["member"] == expected
    assert claims["member"] != "serviceAccount:" + json.loads(
        Path(sandbox.outsider_credentials_file).read_text())["client_email"]
