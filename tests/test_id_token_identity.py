"""Probe ID tokens come from the identity of the API calls, impersonation included (stagecheck.clients.identity)."""

from __future__ import annotations

import pytest


def test_id_tokens_follow_an_impersonated_identity_and_refuse_a_persons_own() -> None:
    """`gcloud auth application-default login --impersonate-service-account SA`: the ID token is SA's, minted
    through the IAM Credentials API by google-auth's own class (not called here: no Google API is reachable)."""
    from google.auth import exceptions as auth_exc
    from google.auth import impersonated_credentials
    from google.oauth2 import credentials as user_credentials

    from stagecheck.clients.identity import id_token_source

    person = user_credentials.Credentials(token="t", refresh_token="r", client_id="c", client_secret="s",
                                          token_uri="https://oauth2.googleapis.com/token")
    impersonated = impersonated_credentials.Credentials(
        source_credentials=person, target_principal="deployer@acme-staging.iam.gserviceaccount.com",
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"])
    source = id_token_source(impersonated, "https://shop.example")
    assert isinstance(source, impersonated_credentials.IDTokenCredentials)
    assert source._target_audience == "https://shop.example" and source._include_email
    assert source._target_credentials is impersonated
    with pytest.raises(auth_exc.DefaultCredentialsError, match="--impersonate-service-account"):
        id_token_source(person, "https://shop.example")
