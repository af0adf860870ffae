"""Credentials of the run's identity: for the API clients, and Google ID tokens for the probes.

One code path for real Google Cloud and the sandbox: a service-account key file when the settings name
one (`endpoints.credentials_file`; the sandbox writes one whose `token_uri` is its own token endpoint),
else Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata server, ...).
ID tokens are minted through google-auth in a worker thread (never on the event loop), once per audience,
and reused until shortly before they expire. A token is never logged, stored or put in evidence.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.auth import exceptions as auth_exc
from google.auth import jwt
from google.auth.credentials import Credentials

from stagecheck.errors import StageError

REFRESH_MARGIN_S = 300.0  # mint a new token when the cached one has less than this left
IAM_CREDENTIALS_API = "https://iamcredentials.googleapis.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


def block_credentials(block: str) -> Credentials:
    """The credentials of a prefect-gcp `GcpCredentials` block (its service-account key, inline or a file;
    a block with neither uses Application Default Credentials, as prefect-gcp does)."""
    try:
        from prefect_gcp import GcpCredentials
    except ImportError:
        raise StageError(f"gcp_credentials_block {block!r} is set but prefect-gcp is not installed",
                         hint="pip install 'stagecheck[gcp]'") from None
    try:
        loaded = GcpCredentials.load(block, _sync=True)  # type: ignore[call-overload]
    except ValueError:
        raise StageError(f"no GcpCredentials block named {block!r} on the Prefect server",
                         hint="create it in the UI (Blocks) or with GcpCredentials(...).save(NAME)") from None
    try:
        creds: Credentials = loaded.get_credentials_from_service_account()
    except (OSError, ValueError, KeyError, auth_exc.GoogleAuthError) as exc:
        raise StageError(f"GcpCredentials block {block!r} holds no usable credentials: {type(exc).__name__}") from None
    return creds


def _access_token(creds: Credentials, source: str) -> str:
    """An OAuth access token of `creds` (a registry password; never logged); StageError naming `source`."""
    from google.auth.transport.requests import Request

    try:
        creds.refresh(Request())  # type: ignore[no-untyped-call]
    except auth_exc.GoogleAuthError as exc:
        raise StageError(f"registry auth: {source} got no token ({type(exc).__name__})") from None
    return str(creds.token)


def block_access_token(block: str) -> Callable[[], str]:
    """A registry token provider: an OAuth access token of the block's credentials (never logged)."""
    def token() -> str:
        return _access_token(block_credentials(block), f"the GcpCredentials block {block!r}")

    return token


def file_access_token(credentials_file: str) -> Callable[[], str]:
    """A registry token provider: an OAuth access token of `endpoints.credentials_file`'s identity — the one the
    API calls use, never a second one (Artifact Registry takes it as the password of `oauth2accesstoken`)."""
    def token() -> str:
        from google.auth.credentials import with_scopes_if_required

        creds = api_credentials(credentials_file)
        assert creds is not None  # a file is named
        return _access_token(with_scopes_if_required(creds, [CLOUD_PLATFORM]),
                             f"the credentials file {credentials_file}")

    return token


def api_credentials(credentials_file: str | None, block: str | None = None) -> Credentials | None:
    """Credentials for the Cloud Run / Logging clients: a prefect-gcp GcpCredentials block when the
    settings name one (`gcp_credentials_block`), else the key file's service account, else None (the
    clients then use Application Default Credentials themselves)."""
    if block is not None:
        return block_credentials(block)
    if credentials_file is None:
        return None
    import google.auth
    from google.auth.credentials import with_scopes_if_required
    from google.oauth2 import service_account

    try:
        if _file_type(credentials_file) == "service_account":
            creds: Credentials = service_account.Credentials.from_service_account_file(credentials_file)
        else:  # external_account (Workload Identity Federation), authorized_user, impersonated_service_account
            # scoped afterwards: loaded with scopes, external_account credentials look their project up at once
            loaded, _ = google.auth.load_credentials_from_file(credentials_file)
            creds = with_scopes_if_required(loaded, [CLOUD_PLATFORM])
    except (OSError, ValueError, KeyError, auth_exc.GoogleAuthError) as exc:
        raise StageError(f"unusable credentials file {credentials_file}: {type(exc).__name__}",
                         hint="point endpoints.credentials_file at a service-account key file or another "
                              "Application Default Credentials file") from None
    return creds


def _file_type(path: str) -> str | None:
    try:
        kind = json.loads(Path(path).read_text()).get("type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(kind) if kind else None


def identity_of(credentials_file: str | None) -> str:
    """Who the probes act as, for messages: the key's service account, else "the ADC identity"."""
    if credentials_file is not None:
        try:
            email = json.loads(Path(credentials_file).read_text()).get("client_email")
        except (OSError, ValueError, AttributeError):
            email = None
        if email:
            return f"serviceAccount:{email}"
        if _file_type(credentials_file):
            return f"the {_file_type(credentials_file)} credentials of {credentials_file}"
    return "the Application Default Credentials identity"


def _mint_with_key(credentials_file: str, audience: str) -> str:
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    creds = service_account.IDTokenCredentials.from_service_account_file(credentials_file, target_audience=audience)
    creds.refresh(Request())
    return str(creds.token)


def id_token_source(creds: Credentials, audience: str) -> Credentials:
    """ID-token credentials of the same identity as the API credentials `creds`: a service-account key signs
    its own; impersonated credentials (`gcloud auth application-default login --impersonate-service-account
    SA`) ask the IAM Credentials API for SA's token; the metadata server's identity asks the metadata server.
    A person's own user credentials cannot mint ID tokens (DefaultCredentialsError saying what to do)."""
    from google.auth import compute_engine, impersonated_credentials
    from google.oauth2 import service_account

    if isinstance(creds, service_account.Credentials):
        return service_account.IDTokenCredentials(
            creds.signer, creds.service_account_email, creds._token_uri, audience)  # the key's token endpoint
    if isinstance(creds, impersonated_credentials.Credentials):
        return impersonated_credentials.IDTokenCredentials(creds, target_audience=audience, include_email=True)
    if isinstance(creds, compute_engine.Credentials):
        from google.auth.transport.requests import Request

        return compute_engine.IDTokenCredentials(Request(), audience, use_metadata_identity_endpoint=True)
    raise auth_exc.DefaultCredentialsError(
        f"{type(creds).__module__}.{type(creds).__name__} cannot mint ID tokens: use a service account "
        "(impersonate one: gcloud auth application-default login --impersonate-service-account SA)")


def mint_id_token(creds: Credentials, audience: str, *, account: str | None = None,
                  iam_api: str = IAM_CREDENTIALS_API) -> str:
    """An ID token for `audience` of the identity of `creds` (blocking: call it in a worker thread). An identity
    that cannot mint one itself (Workload Identity Federation's external_account, a person's credentials) gets
    one of `account` from IAM Credentials' generateIdToken when `account` is set."""
    from google.auth.transport.requests import Request

    try:
        source = id_token_source(creds, audience)
    except auth_exc.DefaultCredentialsError:
        if account is None:
            raise
        return generate_id_token(creds, account, audience, iam_api=iam_api)
    source.refresh(Request())  # type: ignore[no-untyped-call]
    return str(source.token)


def generate_id_token(creds: Credentials, account: str, audience: str, *, iam_api: str = IAM_CREDENTIALS_API) -> str:
    """`POST {iam_api}/v1/projects/-/serviceAccounts/{account}:generateIdToken` {audience, includeEmail} with the
    caller's access token: the request google-auth's impersonated IDTokenCredentials sends, to an endpoint the
    settings name (google-auth's is fixed to iamcredentials.googleapis.com). A 403 means the caller lacks
    iam.serviceAccounts.getOpenIdToken (roles/iam.serviceAccountTokenCreator) on `account`: a StageError
    naming the role and the fix."""
    from google.auth.transport.requests import AuthorizedSession

    session = AuthorizedSession(creds)  # type: ignore[no-untyped-call]
    try:
        response = session.post(f"{iam_api.rstrip('/')}/v1/projects/-/serviceAccounts/{account}:generateIdToken",
                                json={"audience": audience, "includeEmail": True}, timeout=30)
    finally:
        session.close()
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""
    if response.status_code == 403:
        raise StageError(f"could not get an ID token of {account} for audience {audience}: IAM Credentials "
                         f"generateIdToken answered 403 ({message}); the run's identity needs {TOKEN_CREATOR} "
                         f"on {account}",
                         hint=f"gcloud iam service-accounts add-iam-policy-binding {account} "
                              f"--role={TOKEN_CREATOR} --member=<the run's principal>")
    if response.status_code != 200 or not isinstance(body, dict) or "token" not in body:
        raise auth_exc.RefreshError(f"generateIdToken for {account} answered {response.status_code}: {message}")
    return str(body["token"])


def _mint_with_adc(audience: str, account: str | None = None, iam_api: str = IAM_CREDENTIALS_API) -> str:
    """Application Default Credentials, as the API clients read them (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
    application-default file, impersonated or not, the metadata server): the same identity for both."""
    import google.auth
    from google.auth.credentials import with_scopes_if_required

    creds, _ = google.auth.default()
    return mint_id_token(with_scopes_if_required(creds, [CLOUD_PLATFORM]), audience, account=account,
                         iam_api=iam_api)


def token_expiry(token: str) -> float:
    """The `exp` claim (epoch seconds) of a JWT, read without verifying it (only the issuer can)."""
    claims = jwt.decode(token, verify=False)
    return float(claims["exp"])


@dataclass
class _Cached:
    token: str
    expires_at: float


class IdTokens:
    """Google ID tokens per audience, minted once and reused until REFRESH_MARGIN_S before expiry."""

    def __init__(self, credentials_file: str | None, *, block: str | None = None, account: str | None = None,
                 iam_api: str = IAM_CREDENTIALS_API, clock: Callable[[], float] = time.time,
                 mint: Callable[[str], str] | None = None) -> None:
        """The identity is the API clients' (`api_credentials`): the GcpCredentials `block` when set, else the
        credentials file, else Application Default Credentials. When it cannot mint ID tokens itself, `account`
        (probes.id_token_account) mints them through IAM Credentials at `iam_api`."""
        self.credentials_file = credentials_file
        self.identity = f"the GcpCredentials block {block!r}" if block else identity_of(credentials_file)
        self._clock = clock
        if mint is None:
            if block:
                mint = lambda aud: mint_id_token(block_credentials(block), aud, account=account,  # noqa: E731
                                                 iam_api=iam_api)
            elif credentials_file and _file_type(credentials_file) == "service_account":
                mint = lambda aud: _mint_with_key(credentials_file, aud)  # noqa: E731
            elif credentials_file:
                mint = lambda aud: mint_id_token(api_credentials(credentials_file), aud,  # type: ignore[arg-type]  # noqa: E731
                                                 account=account, iam_api=iam_api)
            else:
                mint = lambda aud: _mint_with_adc(aud, account, iam_api)  # noqa: E731
        self._mint = mint
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.minted = 0  # how many tokens were minted (tests check the reuse)

    async def token(self, audience: str) -> str:
        lock = self._locks.setdefault(audience, asyncio.Lock())
        async with lock:  # concurrent probes of one audience wait for one mint
            cached = self._cache.get(audience)
            if cached is not None and cached.expires_at - self._clock() > REFRESH_MARGIN_S:
                return cached.token
            try:
                token = await asyncio.to_thread(self._mint, audience)
                expires_at = token_expiry(token)
            except StageError:  # the block is missing or unusable: its own message
                raise
            except (auth_exc.GoogleAuthError, ValueError, KeyError, OSError) as exc:
                # the exception text may quote the server's answer but never a token we hold
                raise StageError(f"could not get an ID token for audience {audience} as {self.identity}: "
                                 f"{type(exc).__name__}: {exc}",
                                 hint='the probes need an identity that can mint ID tokens (a service account); '
                                      'for a public service set probes.auth = "none"') from None
            self.minted += 1
            self._cache[audience] = _Cached(token, expires_at)
            return token

    async def headers(self, audience: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(audience)}"}
