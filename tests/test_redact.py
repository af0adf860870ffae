from __future__ import annotations

import pytest

from stagecheck.redact import MASK, is_sensitive_key, redact, redact_obj

JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98zZ0sA1Qx\nmore+key/material==\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Bearer abc.def-ghi_jkl123", "abc.def-ghi_jkl123"),
        ('headers={"Authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
        ("token ya29.a0AfH6SMBx-very_secret.token in cache", "ya29.a0AfH6SMBx"),
        (f"id token {JWT} rejected", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
        ("aws key AKIAIOSFODNN7EXAMPLE found", "AKIAIOSFODNN7EXAMPLE"),
        (f"loaded key:\n{PEM}\ndone", "MIIEowIBAAKCAQEA7bq98zZ0sA1Qx"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg truncated", "MIIEvQIBADANBg"),
        ("GET /cb?code=1&access_token=s3cr3tv4lue&x=1", "s3cr3tv4lue"),
        ("DB_PASSWORD=hunter22 started", "hunter22"),
        ('{"client_secret": "GOCSPX-abcdef", "user": "bob"}', "GOCSPX-abcdef"),
        ("api_key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890"),
        ("connect postgres://app:pa55word@db.local:5432/app", "pa55word"),
        ("X-Api-Key: 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
    ],
)
def test_masks_credential_shapes(text: str, leaked: str) -> None:
    out = redact(text)
    assert leaked not in out
    assert MASK in out


def test_keeps_context_around_masked_values() -> None:
    assert redact("Authorization: Bearer abcdefgh12345") == f"Authorization: Bearer {MASK}"
    assert redact("postgres://app:pa55word@db:5432/x") == f"postgres://app:{MASK}@db:5432/x"
    assert redact("GET /x?token=abc123&page=2") == f"GET /x?token={MASK}&page=2"


def test_masks_given_secret_values_and_their_url_encoding() -> None:
    secret = "p@ss w0rd!"
    text = f"value {secret} and encoded p%40ss%20w0rd%21 in a URL"
    out = redact(text, [secret])
    assert secret not in out and "p%40ss%20w0rd%21" not in out
    assert out.count(MASK) == 2


def test_short_secret_values_are_not_masked() -> None:
    # masking "abc" would shred ordinary words; values under 4 characters are ignored
    assert redact("abc is here", ["abc"]) == "abc is here"
    assert redact("abcd is here", ["abcd"]) == f"{MASK} is here"


@pytest.mark.parametrize(
    "text",
    [
        "pushed europe-west1-docker.pkg.dev/p/r/checkout@sha256:" + "a" * 64,
        "digest sha256:9b2f4c1e0d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1",
        "revision checkout-00003-xyz is Ready",
        "GET https://checkout-abc123-ew.a.run.app/health -> 200",
        "the token bucket refilled; max_tokens=100 tokenizer=bert",
        "Bearer of bad news",
        "failed to read secret: permission denied",
        "PWD=/workspace HOME=/root",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_obj_walks_structures_without_changing_the_input() -> None:
    evidence = {
        "summary": "call failed with token=abcd1234",
        "headers": {"Authorization": "Bearer zzzzzzzzzzzz", "Accept": "application/json"},
        "password": "plain",
        "attempts": [{"body": "key AKIAIOSFODNN7EXAMPLE"}, 503, None],
        "pair": ("ok", "my-secret-value"),
        "count": 3,
    }
    out = redact_obj(evidence, ["my-secret-value"])
    assert out["summary"] == f"call failed with token={MASK}"
    assert out["headers"]["Authorization"] == MASK
    assert out["headers"]["Accept"] == "application/json"
    assert out["password"] == MASK
    assert out["attempts"] == [{"body": f"key {MASK}"}, 503, None]
    assert out["pair"] == ("ok", MASK)
    assert out["count"] == 3
    assert evidence["password"] == "plain"  # input untouched


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("DB_PASSWORD", True),
        ("api-key", True),
        ("Authorization", True),
        ("client_secret", True),
        ("tokens_used", False),
        ("digest", False),
        ("revision", False),
    ],
)
def test_sensitive_keys(key: str, sensitive: bool) -> None:
    assert is_sensitive_key(key) is sensitive
