"""A run whose identity cannot mint ID tokens (Workload Identity Federation's external_account credentials, as a
CI job gets them) deploys through the APIs with them and probes a private service with ID tokens of a service
account minted through IAM Credentials' generateIdToken (probes.id_token_account); without
roles/iam.serviceAccountTokenCreator on that account the release fails, naming the role. End to end against the
sandbox's STS and IAM Credentials endpoints through google-auth and the real Google clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_sandbox import RunClients
from tests.pipeline.test_e2e import created, run_flow, serving  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


@pytest.fixture
def federated(sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              run_clients: RunClients) -> Iterator[dict[str, str]]:
    """A state dir whose sandbox.json names the external_account file as the run's credentials (what a CI job
    with Workload Identity Federation has), and probes.id_token_account = the deployer service account."""
    info = json.loads((Path(sandbox.state_dir) / "sandbox.json").read_text())
    assert json.loads(Path(sandbox.external_account_file).read_text())["type"] == "external_account"
    state = tmp_path / "federated-state"
    state.mkdir()
    (state / "sandbox.json").write_text(json.dumps({**info, "credentials_file": sandbox.external_account_file}))
    account = json.loads(Path(sandbox.credentials_file).read_text())["client_email"]
    monkeypatch.setenv("STAGECHECK_PROBES__ID_TOKEN_ACCOUNT", account)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    member = run_clients.admin("GET", "/sandbox/v1/iam/generated-id-tokens")["federated_member"]
    yield {"state_dir": str(state), "account": account, "member": member}
    run_clients.admin("PUT", f"/sandbox/v1/iam/service-accounts/{account}/token-creators", {"members": []})


def _generated(run_clients: RunClients) -> list[dict[str, str]]:
    return list(run_clients.admin("GET", "/sandbox/v1/iam/generated-id-tokens")["generated"])


async def test_a_federated_identity_probes_a_private_service_with_tokens_from_generate_id_token(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any,  # noqa: F811
        federated: dict[str, str]) -> None:
    run_clients.admin("PUT", f"/sandbox/v1/iam/service-accounts/{federated['account']}/token-creators",
                      {"members": [federated["member"]]})
    before = len(_generated(run_clients))
    service = created("wif")
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
    scenario.commit("a release from a CI job with Workload Identity Federation")
    run = await run_flow(scenario, config, state_dir=federated["state_dir"])
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    assert serving(run_clients, service) == {report["revision"]["name"]: 100}
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert not svc.invoker_iam_disabled  # private: every probe carried an ID token
    minted = _generated(run_clients)[before:]
    assert minted, "no ID token came from generateIdToken"
    assert {m["caller"] for m in minted} == {federated["member"]}
    assert {m["service_account"] for m in minted} == {federated["account"]}
    assert svc.uri in {m["audience"] for m in minted}


async def test_without_the_token_creator_role_the_release_fails_naming_it(
        prefect_api: None, scenario: Any, run_clients: RunClients, created: Any,  # noqa: F811
        federated: dict[str, str]) -> None:
    service = created("wifnorole")
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]")
    scenario.commit("no binding")
    run = await run_flow(scenario, config, state_dir=federated["state_dir"])
    report = run.report(service)
    assert report["verdict"] == "fail"
    text = " ".join(report["reasons"])
    assert TOKEN_CREATOR in text and federated["account"] in text, report["reasons"]
    assert "generateIdToken answered 403" in text
    assert report["decided_by"] == "probe-tagged"  # the first stage that needs a token
