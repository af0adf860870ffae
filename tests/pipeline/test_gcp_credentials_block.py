"""An optional prefect-gcp `GcpCredentials` block (`gcp_credentials_block`) supplies the credentials of
the Cloud Run and Cloud Logging clients and the registry token, ahead of the key file and ADC. Blocks are
saved to the test's Prefect server; the sandbox's token endpoint checks every key's signature, so a block
holding a key the sandbox never issued fails where the deployer's key works."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stagecheck.clients.cloudlogging import LogReader
from stagecheck.clients.cloudrun import CloudRun
from stagecheck.clients.identity import block_access_token
from stagecheck.errors import StageError
from stagecheck.settings import Settings, load_settings

pytest.importorskip("prefect_gcp")

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def _foreign_key(deployer_key: dict[str, Any]) -> dict[str, Any]:
    """The deployer's key file with a private key the sandbox never issued."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {**deployer_key, "private_key": pem, "private_key_id": "f" * 40}


def _read_key(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _settings(sandbox: Any, block: str, credentials_file: str | None) -> Settings:
    base = load_settings(None, environ={}, sandbox_json=Path(sandbox.state_dir) / "sandbox.json",
                         overrides={"services": [{"name": "unused"}], "gcp_credentials_block": block})
    return base.model_copy(update={"endpoints": base.endpoints.model_copy(update={"credentials_file": credentials_file})})


async def test_a_gcp_credentials_block_calls_cloud_run_logging_and_the_registry(
        prefect_api: None, sandbox: Any, run_clients: Any) -> None:
    from prefect_gcp import GcpCredentials

    deployer = _read_key(sandbox.credentials_file)
    await GcpCredentials(service_account_file=Path(sandbox.credentials_file)).save("sc-deployer", overwrite=True)
    await GcpCredentials(service_account_info=_foreign_key(deployer)).save("sc-foreign", overwrite=True)

    # the block alone (no key file): Cloud Run and Logging answer, the registry gets a token
    good = _settings(sandbox, "sc-deployer", None)
    assert await CloudRun(good).get_service("no-such-service") is None  # an authenticated 404
    entries = await LogReader(good).revision_entries(service="no-such-service", revision="r", start=datetime.now(UTC))
    assert entries == []
    assert len(block_access_token("sc-deployer")()) > 20

    # the block wins over a working key file: a foreign key in the block fails every client
    foreign = _settings(sandbox, "sc-foreign", sandbox.credentials_file)
    with pytest.raises(StageError) as run_error:
        await CloudRun(foreign).get_service("no-such-service")
    with pytest.raises(StageError) as log_error:
        await LogReader(foreign).revision_entries(service="no-such-service", revision="r", start=datetime.now(UTC))
    with pytest.raises(StageError, match="registry auth: the GcpCredentials block 'sc-foreign' got no token"):
        block_access_token("sc-foreign")()
    for error in (run_error.value, log_error.value):
        assert "authentication failed" in str(error) or "not authenticated" in str(error), str(error)
        assert deployer["private_key"] not in str(error)

    # a block that does not exist is named, with what to do
    with pytest.raises(StageError, match="no GcpCredentials block named 'sc-missing'"):
        await CloudRun(_settings(sandbox, "sc-missing", None)).get_service("x")


async def test_probe_id_tokens_come_from_the_same_block_as_the_api_calls(
        prefect_api: None, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes' ID tokens are minted by the block's identity, not the key file's or ADC's: a block holding the
    deployer's key mints tokens for the deployer; a foreign key in the block fails although the key file works."""
    from google.auth import jwt
    from prefect_gcp import GcpCredentials

    from stagecheck.clients.identity import IdTokens

    deployer = _read_key(sandbox.credentials_file)
    await GcpCredentials(service_account_file=Path(sandbox.credentials_file)).save("sc-probe-deployer", overwrite=True)
    await GcpCredentials(service_account_info=_foreign_key(deployer)).save("sc-probe-foreign", overwrite=True)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    audience = "https://svc-abc.a.run.app"

    token = await IdTokens(None, block="sc-probe-deployer").token(audience)
    claims = jwt.decode(token, verify=False)
    assert claims["aud"] == audience and claims["email"] == deployer["client_email"]
    with pytest.raises(StageError) as refused:
        await IdTokens(sandbox.credentials_file, block="sc-probe-foreign").token(audience)
    assert "the GcpCredentials block 'sc-probe-foreign'" in str(refused.value)
    assert deployer["private_key"] not in str(refused.value)

    # without a block: Application Default Credentials, read as the API clients read them
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", sandbox.credentials_file)
    adc = jwt.decode(await IdTokens(None).token(audience), verify=False)
    assert adc["email"] == deployer["client_email"]
