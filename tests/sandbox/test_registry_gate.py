"""The registry gate's credential rule (Artifact Registry: `oauth2accesstoken` + an access token, or the token as
a Bearer), as a pure function; the HTTP path runs in tests/pipeline/test_registry_login.py."""

from __future__ import annotations

import base64

from sandbox.registry_gate import caller_of


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def verify(token: str) -> str | None:
    return "serviceAccount:deployer@p.iam.gserviceaccount.com" if token == "ya29.good" else None


def test_only_oauth2accesstoken_with_a_valid_access_token_or_that_bearer_passes() -> None:
    assert caller_of(_basic("oauth2accesstoken", "ya29.good"), verify) == "serviceAccount:deployer@p.iam.gserviceaccount.com"
    assert caller_of("Bearer ya29.good", verify) == "serviceAccount:deployer@p.iam.gserviceaccount.com"
    assert caller_of(_basic("_json_key", "ya29.good"), verify) is None  # another user name
    assert caller_of(_basic("oauth2accesstoken", "ya29.bad"), verify) is None
    assert caller_of(_basic("oauth2accesstoken", ""), verify) is None
    assert caller_of("Basic !!!", verify) is None
    assert caller_of("", verify) is None
    assert caller_of("Bearer ", verify) is None
