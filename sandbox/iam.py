"""Invoker IAM, service-account keys and tokens, as Google Cloud does them (cloud-run-facts.md §1).

* At start the server generates RSA keys for two service accounts and writes their key files
  (`type: service_account`, `token_uri` = this sandbox's `/token`): the *deployer*, which holds
  `roles/run.admin` on the project (so it deploys and may invoke every service), and the *outsider*,
  which holds no role (it authenticates, but lacks `run.routes.invoke`). google-auth's ordinary code
  uses these files unchanged.
* `/token` is the OAuth 2.0 JWT-bearer grant of `oauth2.googleapis.com/token`: it verifies the signed
  assertion (RS256 against the key's public key, `aud` = https://oauth2.googleapis.com/token, iat/exp,
  at most one hour) and answers `{"id_token"}` for a `target_audience` grant, `{"access_token"}` for a
  `scope` grant. Both tokens are signed by the sandbox's own issuer key and verified where they are used.
* The APIs (`/v2/...`) need credentials: a self-signed service-account JWT (what the run_v2 REST client
  sends, `aud` https://run.googleapis.com/) or an access token from `/token` (the Logging client).
  Missing or invalid: 401 UNAUTHENTICATED in Google's JSON error shape.
* Services are private: a request through a service URL, tag URL or the load balancer needs a Google ID
  token whose `aud` is the service URL (either slash form) or one of its `customAudiences`, of a principal
  with `run.routes.invoke` — unless `invokerIamDisabled` is set or `allUsers` holds `roles/run.invoker`.
  No Authorization header: 403; a bad token, wrong audience or expired token: 401 (an expired one: fidelity
  `expired_token`); a valid token of a principal without the permission: 403. Which audience a tag URL
  accepts is unsure (no source says): the service's (the default URL "always remains an acceptable audience")
  or the tag URL itself, as the fidelity switch `tag_audience` says.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from google.auth import exceptions as auth_exc
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox import model
from sandbox.errors import ApiError
from sandbox.fidelity import EXPIRED_TOKEN_GRACE_S, Fidelity
from sandbox.statefiles import DEPLOYER_KEY_FILE, OUTSIDER_KEY_FILE

OAUTH_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # the assertion's aud: a constant, not token_uri
GOOGLE_ISSUER = "https://accounts.google.com"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
RUN_API_AUDIENCE = "https://run.googleapis.com/"
LOGGING_API_AUDIENCE = "https://logging.googleapis.com/"
IAM_CREDENTIALS_AUDIENCE = "https://iamcredentials.googleapis.com/"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_LIFETIME_S = 3600
MAX_ASSERTION_LIFETIME_S = 3600
ACCESS_TOKEN_PREFIX = "ya29."
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
SANDBOX_IDP = "https://idp.sandbox.stagecheck.invalid"  # the external identity provider federated into the pool
WIF_POOL = "stagecheck-ci"
WIF_SUBJECT = "repo:acme/shop:ref:refs/heads/main"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
GET_OPENID_TOKEN = "iam.serviceAccounts.getOpenIdToken"

INVOKE = "run.routes.invoke"
_VIEW = {"run.services.get", "run.services.list", "run.services.getIamPolicy", "run.revisions.get",
         "run.revisions.list", "run.operations.get", "run.operations.list"}
_DEVELOP = _VIEW | {"run.services.create", "run.services.update", "run.services.delete", "run.revisions.delete"}
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/run.invoker": frozenset({INVOKE}),
    "roles/run.servicesInvoker": frozenset({INVOKE}),
    "roles/run.viewer": frozenset(_VIEW),
    "roles/run.developer": frozenset(_DEVELOP),
    "roles/run.admin": frozenset(_DEVELOP | {INVOKE, "run.services.setIamPolicy"}),
    "roles/viewer": frozenset(_VIEW),
    "roles/editor": frozenset(_DEVELOP | {INVOKE}),
    "roles/owner": frozenset(_DEVELOP | {INVOKE, "run.services.setIamPolicy"}),
}
_MEMBER_RE = re.compile(
    r"^(allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain|principal|principalSet):\S+"
    r"|deleted:(user|serviceAccount|group):\S+)$")
_PERMISSION_RE = re.compile(r"^[a-z]+\.[A-Za-z]+\.[A-Za-z]+$")

API_MISSING = ("Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
               "or other valid authentication credential. See "
               "https://developers.google.com/identity/sign-in/web/devconsole-project.")
API_INVALID = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
               "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")


def _html(status: int, title: str, heading: str, detail: str) -> HTMLResponse:
    """The Google front end's error page (what a Cloud Run URL answers for 401/403)."""
    body = ("<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n"
            f"<title>{status} {title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n"
            f"<h1>Error: {heading}</h1>\n<h2>{detail}</h2>\n<h2></h2>\n</body></html>\n")
    return HTMLResponse(body, status_code=status)


def forbidden(path: str) -> Response:
    return _html(403, "Forbidden", "Forbidden", f"Your client does not have permission to get URL <code>{path}</code> "
                 "from this server.")


def unauthorized(path: str) -> Response:
    response = _html(401, "Unauthorized", "Unauthorized",
                     f"Your client does not have permission to the requested URL <code>{path}</code>.")
    response.headers["www-authenticate"] = 'Bearer error="invalid_token"'
    return response


# ------------------------------------------------------------------ keys and principals


def _new_rsa() -> tuple[str, str]:
    """(private key PEM PKCS#8, public key PEM) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@dataclass(frozen=True)
class Principal:
    """A service account with one key."""

    email: str
    unique_id: str  # the numeric client_id / `sub`
    key_id: str
    private_pem: str = field(repr=False)
    public_pem: str

    @classmethod
    def generate(cls, account: str, project: str) -> Principal:
        private, public = _new_rsa()
        return cls(email=f"{account}@{project}.iam.gserviceaccount.com",
                   unique_id=str(100000000000000000000 + secrets.randbelow(10**20)),
                   key_id=secrets.token_hex(20), private_pem=private, public_pem=public)

    def key_file(self, project: str, token_uri: str) -> dict[str, str]:
        """The JSON key file Google's console hands out, with `token_uri` pointing at the sandbox."""
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.key_id,
            "private_key": self.private_pem,
            "client_email": self.email,
            "client_id": self.unique_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{self.email}",
            "universe_domain": "googleapis.com",
        }


def write_key_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write a key file readable by its owner only (it holds a private key)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    tmp.replace(path)


# ------------------------------------------------------------------ policies


@dataclass
class Policy:
    version: int = 1
    bindings: list[dict[str, Any]] = field(default_factory=list)
    serial: int = 0
    salt: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def etag(self) -> str:
        return base64.b64encode(hashlib.sha1(f"{self.salt}/{self.serial}".encode()).digest()[:8]).decode()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "etag": self.etag}
        if self.bindings:
            out["bindings"] = self.bindings
        return out

    def roles_of(self, member: str) -> set[str]:
        # conditional bindings are not evaluated: they grant nothing here (stricter, never kinder)
        return {b["role"] for b in self.bindings if member in b.get("members", []) and not b.get("condition")}


def _validate_bindings(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ApiError(400, "policy.bindings must be a list.", field="policy.bindings")
    bindings: list[dict[str, Any]] = []
    for i, binding in enumerate(raw):
        if not isinstance(binding, dict):
            raise ApiError(400, f"policy.bindings[{i}] must be an object.", field=f"policy.bindings[{i}]")
        role = binding.get("role")
        if not isinstance(role, str) or not role:
            raise ApiError(400, f"policy.bindings[{i}].role is required.", field=f"policy.bindings[{i}].role")
        if role not in ROLE_PERMISSIONS:
            raise ApiError(400, f"Role {role} is not supported for this resource.", field=f"policy.bindings[{i}].role")
        members = binding.get("members") or []
        if not isinstance(members, list) or not members:
            raise ApiError(400, f"policy.bindings[{i}].members must list at least one principal.",
                           field=f"policy.bindings[{i}].members")
        for member in members:
            if not isinstance(member, str) or not _MEMBER_RE.match(member):
                raise ApiError(400, f"Invalid principal {member!r} in the binding for {role}.",
                               field=f"policy.bindings[{i}].members")
        out = {"role": role, "members": sorted(set(members))}
        if binding.get("condition"):
            out["condition"] = binding["condition"]
        bindings.append(out)
    return bindings


# ------------------------------------------------------------------ the authority


class Iam:
    """Principals, their project roles, per-service policies, and every token check."""

    def __init__(self, project: str, *, clock: Callable[[], float] = time.time) -> None:
        self.project = project
        self.clock = clock
        self.fidelity = Fidelity()  # the server sets it with the orchestrator's (`tag_audience`)
        self.deployer = Principal.generate("stagecheck-deployer", project)
        self.outsider = Principal.generate("stagecheck-outsider", project)
        self.project_roles: dict[str, set[str]] = {
            f"serviceAccount:{self.deployer.email}": {"roles/run.admin"},
            f"serviceAccount:{self.outsider.email}": set(),
        }
        self._by_kid = {p.key_id: p for p in (self.deployer, self.outsider)}
        issuer_private, self._issuer_public = _new_rsa()
        self._issuer_kid = secrets.token_hex(20)
        self._issuer = crypt.RSASigner.from_string(issuer_private, key_id=self._issuer_kid)
        self._policies: dict[str, Policy] = {}  # by service uid: a re-created service starts private again
        # Workload Identity Federation: an external IdP's tokens exchanged at STS for a federated principal's
        # access token; it holds roles/run.admin on the project but is no service account (no ID tokens of its own)
        self.project_number = str(100000000000 + secrets.randbelow(10**11))
        self._wif_pool = pool = f"projects/{self.project_number}/locations/global/workloadIdentityPools/{WIF_POOL}"
        self.wif_audience = f"//iam.googleapis.com/{pool}/providers/sandbox"
        self.wif_member = f"principal://iam.googleapis.com/{pool}/subject/{WIF_SUBJECT}"
        self.project_roles[self.wif_member] = {"roles/run.admin"}
        self.service_agent = f"serviceAccount:service-{self.project_number}@serverless-robot-prod.iam.gserviceaccount.com"
        self.project_roles[self.service_agent] = set()
        # service accounts' own IAM policies: who holds roles/iam.serviceAccountTokenCreator on each (none at first)
        self.token_creators: dict[str, set[str]] = {p.email: set() for p in (self.deployer, self.outsider)}
        self.id_tokens_generated: list[dict[str, str]] = []  # generateIdToken calls that succeeded (tests read them)

    # -- key files

    def write_key_files(self, state_dir: Path, token_uri: str) -> dict[str, str]:
        """Write both key files; returns {"credentials_file": ..., "outsider_credentials_file": ...}."""
        state_dir.mkdir(parents=True, exist_ok=True)
        paths = {"credentials_file": state_dir / DEPLOYER_KEY_FILE,
                 "outsider_credentials_file": state_dir / OUTSIDER_KEY_FILE}
        write_key_file(paths["credentials_file"], self.deployer.key_file(self.project, token_uri))
        write_key_file(paths["outsider_credentials_file"], self.outsider.key_file(self.project, token_uri))
        paths["external_account_file"] = state_dir / "external-account.json"
        subject = state_dir / "external-subject-token"
        write_key_file(subject, {})  # owner-only file, then the token itself
        subject.write_text(self.subject_token())
        write_key_file(paths["external_account_file"], {
            "type": "external_account", "audience": self.wif_audience,
            "subject_token_type": SUBJECT_TOKEN_TYPES[0], "token_url": token_uri.rsplit("/", 1)[0] + "/v1/token",
            "credential_source": {"file": str(subject)}, "universe_domain": "googleapis.com"})
        return {k: str(v) for k, v in paths.items()}

    def subject_token(self, lifetime_s: float = 24 * 3600) -> str:
        """A token of the external identity provider (as a CI system hands its jobs one) for the pool's provider."""
        now = int(self.clock())
        return self._sign({"iss": SANDBOX_IDP, "aud": self.wif_audience, "sub": WIF_SUBJECT, "iat": now,
                           "exp": int(now + lifetime_s)})

    # -- tokens

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(self._issuer, claims, header={"kid": self._issuer_kid}).decode()

    def id_token(self, principal: Principal, audience: str, lifetime_s: float = TOKEN_LIFETIME_S, *,
                 include_email: bool = True) -> str:
        now = int(self.clock())
        email = {"email": principal.email, "email_verified": True} if include_email else {}
        return self._sign({"iss": GOOGLE_ISSUER, "aud": audience, "azp": principal.unique_id,
                           "sub": principal.unique_id, **email, "iat": now, "exp": int(now + lifetime_s)})

    def access_token(self, principal: Principal | str, scopes: list[str]) -> str:
        """An OAuth access token of a service account, or of another member (a federated principal)."""
        now = int(self.clock())
        who = ({"sub": principal.unique_id, "email": principal.email, "member": f"serviceAccount:{principal.email}"}
               if isinstance(principal, Principal) else {"sub": principal, "member": principal})
        return ACCESS_TOKEN_PREFIX + self._sign({"iss": GOOGLE_ISSUER, "aud": "sandbox-access-token", **who,
                                                 "scope": " ".join(scopes), "iat": now,
                                                 "exp": now + TOKEN_LIFETIME_S})

    def exchange(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """STS token exchange (sts.googleapis.com/v1/token): an external IdP's token for the pool's provider
        becomes an access token of the federated principal."""
        if form.get("grant_type") != TOKEN_EXCHANGE:
            return 400, {"error": "invalid_request", "error_description": "Invalid value for \"grant_type\"."}
        if form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
            return 400, {"error": "invalid_request", "error_description": "Invalid value for \"subject_token_type\"."}
        if form.get("audience") != self.wif_audience:
            return 400, {"error": "invalid_target", "error_description": "The target service indicated by the "
                         "\"audience\" parameters is invalid. This might either be because the pool or provider is "
                         "disabled or deleted or because it doesn't exist."}
        claims = self._verify_issued(form.get("subject_token", ""), self.wif_audience, issuer=SANDBOX_IDP)
        if claims is None:
            return 400, {"error": "invalid_grant", "error_description": "The subject token could not be verified "
                         "(signature, issuer, audience or expiry)."}
        scopes = form.get("scope", "").split() or [CLOUD_PLATFORM]
        member = f"principal://iam.googleapis.com/{self._wif_pool}/subject/{claims['sub']}"
        return 200, {"access_token": self.access_token(member, scopes),
                     "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                     "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S - 1}

    def generate_id_token(self, caller: str, account: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """IAM Credentials generateIdToken: the caller needs iam.serviceAccounts.getOpenIdToken (in
        roles/iam.serviceAccountTokenCreator) on the service account; `includeEmail` adds email claims."""
        target = next((p for p in self._by_kid.values() if account in (p.email, p.unique_id)), None)
        if target is None or caller not in self.token_creators.get(target.email, set()):
            raise ApiError(403, f"Permission '{GET_OPENID_TOKEN}' denied on resource (or it may not exist).",
                           status="PERMISSION_DENIED")
        audience = body.get("audience")
        if not isinstance(audience, str) or not audience:
            raise ApiError(400, "Request contains an invalid argument.", field="audience")
        self.id_tokens_generated.append({"caller": caller, "service_account": target.email, "audience": audience})
        return {"token": self.id_token(target, audience, include_email=body.get("includeEmail") is True)}

    def _verify_issued(self, token: str, audience: str | list[str], *,
                       issuer: str = GOOGLE_ISSUER, grace_s: float = 0) -> dict[str, Any] | None:
        """The claims of a token the sandbox issued for `audience`, unexpired (`grace_s` past `exp` allowed)."""
        try:
            claims = jwt.decode(token, certs={self._issuer_kid: self._issuer_public}, audience=audience,
                                clock_skew_in_seconds=int(grace_s))
        except (ValueError, auth_exc.GoogleAuthError):
            return None
        return dict(claims) if claims.get("iss") == issuer and claims.get("exp", 0) + grace_s > self.clock() else None

    def _verify_assertion(self, assertion: str, audience: str | None) -> tuple[Principal, dict[str, Any]] | str:
        """A JWT signed with a service-account key: (its principal, claims), or why it is refused."""
        try:
            header = jwt.decode_header(assertion)
        except (ValueError, auth_exc.GoogleAuthError):
            return "Invalid JWT: malformed."
        if header.get("alg") != "RS256":
            return "Invalid JWT: unsupported algorithm."
        principal = self._by_kid.get(str(header.get("kid", "")))
        if principal is None:
            # google-auth always sends the kid; without it, try the issuer's key (Google accepts both)
            try:
                iss = jwt.decode(assertion, verify=False).get("iss")
            except (ValueError, auth_exc.GoogleAuthError):
                return "Invalid JWT: malformed."
            principal = next((p for p in self._by_kid.values() if p.email == iss), None)
            if principal is None:
                return "Invalid JWT Signature."
        try:
            claims = jwt.decode(assertion, certs=principal.public_pem, audience=audience, clock_skew_in_seconds=10)
        except (ValueError, auth_exc.GoogleAuthError) as exc:
            text = str(exc)
            if "expired" in text.lower() or "too early" in text.lower():
                return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. " \
                       "Check your iat and exp values in the JWT claim."
            if "audience" in text.lower():
                return "Invalid JWT: audience does not match."
            return "Invalid JWT Signature."
        if claims.get("iss") != principal.email:
            return "Invalid JWT: iss does not match the key's service account."
        if int(claims["exp"]) - int(claims["iat"]) > MAX_ASSERTION_LIFETIME_S:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. " \
                   "Check your iat and exp values in the JWT claim."
        return principal, dict(claims)

    def grant(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (HTTP status, JSON body) for a JWT-bearer grant."""
        grant_type = form.get("grant_type", "")
        if grant_type != JWT_BEARER:
            return 400, {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {grant_type}"}
        assertion = form.get("assertion", "")
        if not assertion:
            return 400, {"error": "invalid_request", "error_description": "Missing required parameter: assertion"}
        verified = self._verify_assertion(assertion, OAUTH_TOKEN_AUDIENCE)
        if isinstance(verified, str):
            return 400, {"error": "invalid_grant", "error_description": verified}
        principal, claims = verified
        if claims.get("target_audience"):
            return 200, {"id_token": self.id_token(principal, str(claims["target_audience"]))}
        scopes = str(claims.get("scope", "")).split()
        if scopes:
            return 200, {"access_token": self.access_token(principal, scopes), "expires_in": TOKEN_LIFETIME_S - 1,
                         "token_type": "Bearer"}
        return 400, {"error": "invalid_scope",
                     "error_description": "Invalid OAuth scope or ID token audience provided."}

    def access_member(self, token: str) -> str | None:
        """The member of an OAuth access token the sandbox issued (cloud-platform scope, not expired), or None."""
        if not token.startswith(ACCESS_TOKEN_PREFIX):
            return None
        claims = self._verify_issued(token[len(ACCESS_TOKEN_PREFIX):], "sandbox-access-token")
        if claims is None or CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            return None
        member = str(claims.get("member", ""))
        return member if member in self.project_roles else None

    def service_agent_token(self) -> str:
        """An access token of the Cloud Run service agent, which pulls the revisions' images."""
        return self.access_token(self.service_agent, [CLOUD_PLATFORM])

    def api_caller(self, authorization: str, api_audience: str) -> str | None:
        """The member behind an API call's credentials (self-signed JWT or access token), or None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if token.startswith(ACCESS_TOKEN_PREFIX):
            return self.access_member(token)
        verified = self._verify_assertion(token, None)
        if isinstance(verified, str):
            return None
        principal, claims = verified
        member = f"serviceAccount:{principal.email}"
        if claims.get("sub") != principal.email:
            return None
        if "aud" in claims:
            return member if claims["aud"] == api_audience else None
        return member if CLOUD_PLATFORM in str(claims.get("scope", "")).split() else None

    # -- permissions and policies

    def policy(self, svc: model.Service) -> Policy:
        return self._policies.setdefault(svc.uid, Policy())

    def permissions(self, member: str, svc: model.Service) -> set[str]:
        roles = set(self.project_roles.get(member, set())) | self.policy(svc).roles_of(member)
        roles |= self.policy(svc).roles_of("allAuthenticatedUsers") | self.policy(svc).roles_of("allUsers")
        return set().union(*(ROLE_PERMISSIONS[r] for r in roles)) if roles else set()

    def set_policy(self, svc: model.Service, body: Mapping[str, Any]) -> Policy:
        raw = body.get("policy")
        if not isinstance(raw, dict):
            raise ApiError(400, "policy is required.", field="policy")
        current = self.policy(svc)
        etag = raw.get("etag")
        if etag and etag != current.etag:
            raise ApiError(409, "There were concurrent policy changes. Please retry the whole read-modify-write "
                                "with exponential backoff.", status="ABORTED")
        version = int(raw.get("version") or 1)
        if version not in (0, 1, 3):
            raise ApiError(400, f"Invalid policy version {version}: valid versions are 0, 1 and 3.",
                           field="policy.version")
        bindings = _validate_bindings(raw.get("bindings"))
        if any("condition" in b for b in bindings) and version != 3:
            raise ApiError(400, "Conditional role bindings require policy version 3.", field="policy.version")
        current.version, current.bindings, current.serial = max(version, 1), bindings, current.serial + 1
        return current

    def invoke_gate(self, svc: model.Service, scope: Scope, tag: str | None = None) -> Response | None:
        """None when the request may reach the revision; else the 401/403 the Google front end answers. At a
        tag URL (`tag`) the accepted audience is the service's or the tag URL's, as the fidelity switch
        `tag_audience` says (no source says which)."""
        if svc.spec.get("invokerIamDisabled") is True:
            return None
        policy = self.policy(svc)
        if any(ROLE_PERMISSIONS[r] >= {INVOKE} for r in policy.roles_of("allUsers")):
            return None
        path = scope.get("path", "/")
        authorization = _header(scope, b"authorization")
        if not authorization:
            return forbidden(path)
        scheme, _, token = authorization.partition(" ")
        audiences = accepted_audiences(svc)
        if tag is not None and self.fidelity.tag_audience == "tag_url":
            url = svc.tag_uris.get(tag, "")
            audiences = [url, url + "/"] if url else []
        grace = EXPIRED_TOKEN_GRACE_S if self.fidelity.expired_token == "grace" else 0  # UNSURE: both ways
        claims = self._verify_issued(token, audiences, grace_s=grace) if scheme.lower() == "bearer" and token else None
        if claims is None:
            return unauthorized(path)
        member = f"serviceAccount:{claims.get('email', '')}"
        if INVOKE not in self.permissions(member, svc):
            return forbidden(path)
        return None


def accepted_audiences(svc: model.Service) -> list[str]:
    """The service URL in both slash forms, and the service's custom audiences."""
    out = [svc.uri, svc.uri + "/"] if svc.uri else []
    custom = svc.spec.get("customAudiences") or []
    return out + [a for a in custom if isinstance(a, str) and a]


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


# ------------------------------------------------------------------ HTTP surface


class ApiAuthMiddleware:
    """Every Google API path (/v2/...) needs valid credentials; admin (/sandbox/...) and /token do not."""

    def __init__(self, app: ASGIApp, iam: Iam) -> None:
        self.app = app
        self.iam = iam

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/v2/") or (path.startswith("/v1/projects/") and path.endswith(":generateIdToken")):
            audience = (LOGGING_API_AUDIENCE if path.startswith("/v2/entries") else
                        IAM_CREDENTIALS_AUDIENCE if path.startswith("/v1/") else RUN_API_AUDIENCE)
            authorization = _header(scope, b"authorization")
            caller = self.iam.api_caller(authorization, audience) if authorization else None
            if caller is None:
                error = ApiError(401, API_INVALID if authorization else API_MISSING)
                response = error.response()
                response.headers["www-authenticate"] = 'Bearer realm="https://accounts.google.com/"'
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = caller
        await self.app(scope, receive, send)


ServiceLookup = Callable[[str, str, str], model.Service]
FaultApply = Callable[[str], Awaitable[Response | None]]


def iam_routes(iam: Iam, lookup: ServiceLookup, fault: FaultApply) -> list[BaseRoute]:
    """getIamPolicy / setIamPolicy / testIamPermissions on services, the token endpoint, and an admin
    endpoint minting ID tokens with a chosen lifetime (tests of expiry)."""

    def service_of(request: Request) -> model.Service:
        p = request.path_params
        return lookup(p["project"], p["location"], p["service"])

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"Invalid JSON payload received: {exc.msg}.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received: expected an object.")
        return body

    async def get_policy(request: Request) -> Response:
        if (injected := await fault("Services.GetIamPolicy")) is not None:
            return injected
        version = request.query_params.get("options.requestedPolicyVersion", "0")
        if version not in {"0", "1", "3"}:
            raise ApiError(400, f"Invalid requested policy version {version}: valid versions are 0, 1 and 3.",
                           field="options.requested_policy_version")
        return JSONResponse(iam.policy(service_of(request)).to_json())

    async def set_policy(request: Request) -> Response:
        if (injected := await fault("Services.SetIamPolicy")) is not None:
            return injected
        svc = service_of(request)
        body = await body_of(request)
        caller = request.scope.get("state", {}).get("principal", "")
        if "run.services.setIamPolicy" not in iam.permissions(caller, svc):
            raise ApiError(403, f"Permission 'run.services.setIamPolicy' denied on resource '{svc.name}' "
                                "(or it may not exist).")
        return JSONResponse(iam.set_policy(svc, body).to_json())

    async def test_permissions(request: Request) -> Response:
        svc = service_of(request)
        wanted = (await body_of(request)).get("permissions") or []
        if not isinstance(wanted, list) or not all(isinstance(p, str) and _PERMISSION_RE.match(p) for p in wanted):
            raise ApiError(400, "Permissions must be a list like ['run.routes.invoke'] (no wildcards).",
                           field="permissions")
        held = iam.permissions(request.scope.get("state", {}).get("principal", ""), svc)
        granted = [p for p in wanted if p in held]
        return JSONResponse({"permissions": granted} if granted else {})

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        status, body = iam.grant(form)
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    async def admin_id_token(request: Request) -> Response:
        body = await body_of(request)
        who = iam.outsider if body.get("principal") == "outsider" else iam.deployer
        audience = body.get("audience")
        if not isinstance(audience, str) or not audience:
            raise ApiError(400, "audience is required", field="audience")
        lifetime = float(body.get("lifetime_s", TOKEN_LIFETIME_S))
        return JSONResponse({"id_token": iam.id_token(who, audience, lifetime)})

    async def sts_token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        status, body = iam.exchange(form)
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    async def generate_id_token(request: Request) -> Response:
        if request.path_params["project"] != "-":
            raise ApiError(400, "The - wildcard character is required for the project in the resource name.",
                           field="name")
        caller = request.scope.get("state", {}).get("principal", "")
        return JSONResponse(iam.generate_id_token(caller, request.path_params["account"], await body_of(request)))

    async def put_token_creators(request: Request) -> Response:
        """Sandbox admin: who holds roles/iam.serviceAccountTokenCreator on a service account (its IAM policy)."""
        account = request.path_params["account"]
        members = (await body_of(request)).get("members") or []
        if account not in iam.token_creators or not isinstance(members, list):
            raise ApiError(404, f"Unknown service account {account}.")
        iam.token_creators[account] = {str(m) for m in members}
        return JSONResponse({"role": TOKEN_CREATOR, "members": sorted(iam.token_creators[account])})

    async def get_generated(request: Request) -> Response:
        return JSONResponse({"generated": iam.id_tokens_generated, "federated_member": iam.wif_member,
                             "deployer": iam.deployer.email})

    svc = "/v2/projects/{project}/locations/{location}/services/{service}"
    return [
        Route("/v1/token", sts_token, methods=["POST"]),
        Route("/v1/projects/{project}/serviceAccounts/{account}:generateIdToken", generate_id_token, methods=["POST"]),
        Route("/sandbox/v1/iam/service-accounts/{account}/token-creators", put_token_creators, methods=["PUT"]),
        Route("/sandbox/v1/iam/generated-id-tokens", get_generated, methods=["GET"]),
        Route(svc + ":getIamPolicy", get_policy, methods=["GET"]),
        Route(svc + ":setIamPolicy", set_policy, methods=["POST"]),
        Route(svc + ":testIamPermissions", test_permissions, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/sandbox/v1/iam/id-token", admin_id_token, methods=["POST"]),
    ]
