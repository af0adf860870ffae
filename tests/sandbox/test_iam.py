"""Invoker IAM, tokens and credentials: services are private, the proxy wants a Google ID token of an
invoker, the APIs want real credentials (cloud-run-facts.md §1), all through the unmodified clients."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.transport.requests import Request as AuthRequest
from google.cloud import logging as gcl
from google.cloud import run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.oauth2 import id_token as google_id_token
from google.oauth2 import service_account
from google.protobuf import field_mask_pb2

from localenv.control import SandboxInfo
from sandbox.iam import Principal, write_key_file
from tests.fixtures_sandbox import FAST_POLL, RunClients, deploy, id_token, unique_name, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

INVOKER = "roles/run.invoker"


def short(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def get(url: str, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(url, headers=headers, timeout=15, trust_env=False)


def admin_token(clients: RunClients, audience: str, *, lifetime_s: float = 3600, principal: str = "deployer") -> str:
    return str(clients.admin("POST", "/sandbox/v1/iam/id-token",
                             {"audience": audience, "lifetime_s": lifetime_s, "principal": principal})["id_token"])


def set_policy(clients: RunClients, service: str, bindings: dict[str, list[str]]) -> policy_pb2.Policy:
    current = clients.services.get_iam_policy(request={"resource": clients.service_name(service)})
    policy = policy_pb2.Policy(version=1, etag=current.etag,
                               bindings=[policy_pb2.Binding(role=r, members=m) for r, m in bindings.items()])
    result: policy_pb2.Policy = clients.services.set_iam_policy(
        request={"resource": clients.service_name(service), "policy": policy})
    return result


def outsider_email(sandbox: SandboxInfo) -> str:
    return str(json.loads(Path(sandbox.outsider_credentials_file).read_text())["client_email"])


@pytest.fixture(scope="module")
def private_svc(run_clients: RunClients, sample_image) -> Iterator[run_v2.Service]:
    svc = deploy(run_clients, unique_name("iam"), sample_image.ref)
    yield svc
    run_clients.services.delete_service(name=svc.name).result(polling=FAST_POLL, timeout=30)


def test_a_private_service_wants_an_id_token_of_an_invoker(run_clients: RunClients, private_svc: run_v2.Service,
                                                           sandbox: SandboxInfo) -> None:
    uri = private_svc.uri
    no_token = get(f"{uri}/health")
    assert no_token.status_code == 403 and "403 Forbidden" in no_token.text
    assert get(f"{uri}/health", "not-a-jwt").status_code == 401
    assert get(f"{uri}/health", id_token(sandbox.credentials_file, "https://other.example")).status_code == 401
    # google-auth's ordinary code, with GOOGLE_APPLICATION_CREDENTIALS naming the sandbox's key
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", sandbox.credentials_file)
        fetched = google_id_token.fetch_id_token(AuthRequest(), uri)
    assert get(f"{uri}/health", fetched).json()["status"] == "healthy"
    assert get(f"{uri}/health", id_token(sandbox.credentials_file, uri + "/")).status_code == 200  # both slash forms


def test_an_expired_token_is_401(run_clients: RunClients, private_svc: run_v2.Service) -> None:
    uri = private_svc.uri
    assert get(f"{uri}/health", admin_token(run_clients, uri)).status_code == 200
    assert get(f"{uri}/health", admin_token(run_clients, uri, lifetime_s=-5)).status_code == 401


def test_an_expired_token_within_the_clock_skew_is_accepted_when_the_switch_says_grace(
    run_clients: RunClients, private_svc: run_v2.Service, fidelity: Callable[..., dict[str, str]]
) -> None:
    from sandbox.fidelity import EXPIRED_TOKEN_GRACE_S

    uri = private_svc.uri
    assert fidelity(expired_token="grace")["expired_token"] == "grace"
    assert get(f"{uri}/health", admin_token(run_clients, uri, lifetime_s=-5)).status_code == 200
    assert get(f"{uri}/health", admin_token(run_clients, uri, lifetime_s=-(EXPIRED_TOKEN_GRACE_S - 30))).status_code == 200
    assert get(f"{uri}/health", admin_token(run_clients, uri, lifetime_s=-(EXPIRED_TOKEN_GRACE_S + 30))).status_code == 401
    fidelity(expired_token="reject")
    assert get(f"{uri}/health", admin_token(run_clients, uri, lifetime_s=-5)).status_code == 401


def test_a_token_the_sandbox_did_not_issue_is_401(run_clients: RunClients, private_svc: run_v2.Service,
                                                  tmp_path: Path) -> None:
    # a key the sandbox does not know signs its own "ID token": not Google's signature
    from google.auth import crypt, jwt

    stranger = Principal.generate("stranger", "elsewhere")
    signer = crypt.RSASigner.from_string(stranger.private_pem, key_id=stranger.key_id)
    forged = jwt.encode(signer, {"iss": "https://accounts.google.com", "aud": private_svc.uri,
                                 "email": stranger.email, "iat": 1, "exp": 4_000_000_000}).decode()
    assert get(f"{private_svc.uri}/health", forged).status_code == 401


def test_a_principal_without_invoke_permission_is_403_until_granted(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], sandbox: SandboxInfo
) -> None:
    svc = deploy(run_clients, new_service("grant"), sample_image.ref)
    outsider = id_token(sandbox.outsider_credentials_file, svc.uri)
    assert get(f"{svc.uri}/health", outsider).status_code == 403
    resource = svc.name
    held = run_clients.services.test_iam_permissions(
        request={"resource": resource, "permissions": ["run.routes.invoke", "run.services.get"]})
    assert list(held.permissions) == ["run.routes.invoke", "run.services.get"]  # the deployer: roles/run.admin

    # the outsider may not grant itself the role: setIamPolicy needs run.services.setIamPolicy
    outsider_clients = run_v2.ServicesClient(
        transport="rest", client_options={"api_endpoint": sandbox.run_api},
        credentials=service_account.Credentials.from_service_account_file(sandbox.outsider_credentials_file))
    with pytest.raises(gexc.Forbidden):
        outsider_clients.set_iam_policy(request={"resource": resource, "policy": policy_pb2.Policy(
            bindings=[policy_pb2.Binding(role=INVOKER, members=[f"serviceAccount:{outsider_email(sandbox)}"])])})
    assert not outsider_clients.test_iam_permissions(
        request={"resource": resource, "permissions": ["run.routes.invoke"]}).permissions

    set_policy(run_clients, short(svc.name), {INVOKER: [f"serviceAccount:{outsider_email(sandbox)}"]})
    assert get(f"{svc.uri}/health", outsider).status_code == 200
    assert list(outsider_clients.test_iam_permissions(
        request={"resource": resource, "permissions": ["run.routes.invoke"]}).permissions) == ["run.routes.invoke"]
    assert get(f"{svc.uri}/health").status_code == 403  # still private for everyone else


def test_iam_policy_round_trip_through_the_run_v2_client(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("policy")
    svc = deploy(run_clients, name, sample_image.ref)
    empty = run_clients.services.get_iam_policy(request={"resource": svc.name})
    assert list(empty.bindings) == [] and empty.etag
    written = set_policy(run_clients, name, {INVOKER: ["allUsers"], "roles/run.viewer": ["user:ann@example.com"]})
    read = run_clients.services.get_iam_policy(request={"resource": svc.name})
    assert read.etag == written.etag != empty.etag
    assert {(b.role, tuple(b.members)) for b in read.bindings} == {
        (INVOKER, ("allUsers",)), ("roles/run.viewer", ("user:ann@example.com",))}

    stale = policy_pb2.Policy(etag=empty.etag, bindings=[policy_pb2.Binding(role=INVOKER, members=["allUsers"])])
    with pytest.raises(gexc.Conflict):  # read-modify-write with an old etag: ABORTED
        run_clients.services.set_iam_policy(request={"resource": svc.name, "policy": stale})
    for bad in (policy_pb2.Binding(role="roles/no.such", members=["allUsers"]),
                policy_pb2.Binding(role=INVOKER, members=["bob@example.com"])):
        with pytest.raises(gexc.BadRequest):
            run_clients.services.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
                resource=svc.name, policy=policy_pb2.Policy(bindings=[bad])))
    with pytest.raises(gexc.NotFound):
        run_clients.services.get_iam_policy(request={"resource": run_clients.service_name("no-such-service")})


def test_all_users_invoker_makes_a_service_public_and_a_recreated_service_is_private_again(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    name = new_service("public")
    svc = deploy(run_clients, name, sample_image.ref)
    assert get(f"{svc.uri}/health").status_code == 403
    set_policy(run_clients, name, {INVOKER: ["allUsers"]})
    assert get(f"{svc.uri}/health").status_code == 200
    assert get(f"{run_clients.lb_url}/{name}/health").status_code == 200

    run_clients.services.delete_service(name=svc.name).result(polling=FAST_POLL, timeout=30)
    again = deploy(run_clients, name, sample_image.ref)
    assert get(f"{again.uri}/health").status_code == 403


def test_invoker_iam_disabled_makes_a_service_public(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str]
) -> None:
    svc = deploy(run_clients, new_service("noiam"), sample_image.ref)
    assert get(f"{svc.uri}/health").status_code == 403
    svc.invoker_iam_disabled = True
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    assert svc.invoker_iam_disabled
    assert get(f"{svc.uri}/health").status_code == 200


def test_custom_audience_is_accepted_and_the_tag_url_takes_the_service_audience(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], sandbox: SandboxInfo
) -> None:
    name = new_service("aud")
    svc = deploy(run_clients, name, sample_image.ref)
    lb_host = "https://shop.staging.example"
    lb = f"{run_clients.lb_url}/{name}/health"
    assert get(lb, id_token(sandbox.credentials_file, lb_host)).status_code == 401  # not (yet) a custom audience
    svc.custom_audiences = [lb_host]
    svc.traffic = [run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                                        percent=100),
                   run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                                        revision=short(svc.latest_ready_revision), tag="t1")]
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    assert get(lb, id_token(sandbox.credentials_file, lb_host)).status_code == 200
    assert get(f"{svc.uri}/health", id_token(sandbox.credentials_file, lb_host)).status_code == 200
    assert get(lb, id_token(sandbox.credentials_file, svc.uri)).status_code == 200  # the default URL, always

    tag_uri = next(t.uri for t in svc.traffic_statuses if t.tag == "t1")
    assert get(f"{tag_uri}/health", id_token(sandbox.credentials_file, svc.uri)).status_code == 200
    # the tag URL itself is not an accepted audience in the default behaviour (fidelity `tag_audience`)
    assert get(f"{tag_uri}/health", id_token(sandbox.credentials_file, tag_uri)).status_code == 401
    assert get(f"{tag_uri}/health").status_code == 403


def test_the_tag_url_audience_is_switchable_both_ways(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], sandbox: SandboxInfo,
    fidelity: Callable[..., dict[str, str]],
) -> None:
    """UNSURE (no source): whether a tag URL accepts a token for the service URL or wants its own URL."""
    name = new_service("tagaud")
    svc = deploy(run_clients, name, sample_image.ref)
    body = run_v2.Service(name=svc.name, traffic=[
        run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100),
        run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                             revision=short(svc.latest_ready_revision), tag="t1")])
    svc = run_clients.services.update_service(request=run_v2.UpdateServiceRequest(
        service=body, update_mask=field_mask_pb2.FieldMask(paths=["traffic"]))).result(polling=FAST_POLL, timeout=60)
    tag_uri = next(t.uri for t in svc.traffic_statuses if t.tag == "t1")
    for switch, service_aud, tag_aud in (("service_url", 200, 401), ("tag_url", 401, 200)):
        fidelity(tag_audience=switch)
        assert get(f"{tag_uri}/health", id_token(sandbox.credentials_file, svc.uri)).status_code == service_aud
        assert get(f"{tag_uri}/health", id_token(sandbox.credentials_file, tag_uri + "/")).status_code == tag_aud
        assert get(f"{svc.uri}/health", id_token(sandbox.credentials_file, svc.uri)).status_code == 200  # unchanged


def test_refused_requests_are_request_log_entries(
    run_clients: RunClients, sample_image, new_service: Callable[[str], str], sandbox: SandboxInfo
) -> None:
    svc = deploy(run_clients, new_service("logged"), sample_image.ref)
    assert get(f"{svc.uri}/health?n=1").status_code == 403
    assert get(f"{svc.uri}/health?n=2", "bad").status_code == 401
    credentials = service_account.Credentials.from_service_account_file(sandbox.credentials_file)
    logs = gcl.Client(project=sandbox.project, credentials=credentials, _use_grpc=False,
                      client_options={"api_endpoint": sandbox.logging_api})
    log_filter = (f'logName="projects/{sandbox.project}/logs/run.googleapis.com%2Frequests" AND '
                  f'resource.labels.service_name="{short(svc.name)}"')
    entries = wait_for(lambda: list(logs.list_entries(filter_=log_filter, order_by=gcl.ASCENDING)) or None)
    assert [(e.http_request["status"], e.severity) for e in entries] == [(403, "WARNING"), (401, "WARNING")]


def test_the_apis_want_credentials(sandbox: SandboxInfo, tmp_path: Path) -> None:
    services_url = f"{sandbox.run_api}/v2/{sandbox.parent}/services"
    missing = httpx.get(services_url, timeout=10, trust_env=False)
    assert missing.status_code == 401
    assert missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "missing required authentication credential" in missing.json()["error"]["message"]
    bad = httpx.get(services_url, headers={"Authorization": "Bearer ya29.nonsense"}, timeout=10, trust_env=False)
    assert bad.status_code == 401 and "invalid authentication credentials" in bad.json()["error"]["message"]
    logs = httpx.post(f"{sandbox.logging_api}/v2/entries:list", json={"resourceNames": [f"projects/{sandbox.project}"]},
                      timeout=10, trust_env=False)
    assert logs.status_code == 401 and logs.json()["error"]["code"] == 401

    # a key the sandbox never issued: its self-signed JWT is refused by the Run API, its grant by /token
    key = tmp_path / "stranger.json"
    write_key_file(key, Principal.generate("stranger", sandbox.project).key_file(sandbox.project,
                                                                                 f"{sandbox.run_api}/token"))
    stranger = service_account.Credentials.from_service_account_file(str(key))
    client = run_v2.ServicesClient(transport="rest", credentials=stranger,
                                   client_options={"api_endpoint": sandbox.run_api})
    with pytest.raises(gexc.Unauthorized):
        list(client.list_services(parent=sandbox.parent))
    minted = service_account.IDTokenCredentials.from_service_account_file(str(key), target_audience="https://x")
    with pytest.raises(auth_exc.RefreshError, match="invalid_grant"):
        minted.refresh(AuthRequest())

    # the deployer's key: the run_v2 client (self-signed JWT) and the Logging client (OAuth grant) both work
    mine = service_account.Credentials.from_service_account_file(sandbox.credentials_file)
    ok = run_v2.ServicesClient(transport="rest", credentials=mine, client_options={"api_endpoint": sandbox.run_api})
    assert isinstance(list(ok.list_services(parent=sandbox.parent)), list)
    logging_client = gcl.Client(project=sandbox.project, credentials=mine, _use_grpc=False,
                                client_options={"api_endpoint": sandbox.logging_api})
    assert isinstance(list(logging_client.list_entries(max_results=1)), list)


def test_the_token_endpoint_checks_the_assertion(sandbox: SandboxInfo) -> None:
    from google.auth import crypt, jwt

    key = json.loads(Path(sandbox.credentials_file).read_text())
    signer = crypt.RSASigner.from_string(key["private_key"], key_id=key["private_key_id"])

    def grant(claims: dict[str, object]) -> httpx.Response:
        assertion = jwt.encode(signer, claims).decode()
        return httpx.post(key["token_uri"], data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                  "assertion": assertion}, timeout=10, trust_env=False)

    now = int(time.time())
    base = {"iss": key["client_email"], "iat": now, "exp": now + 3600, "target_audience": "https://svc"}
    good = grant({**base, "aud": "https://oauth2.googleapis.com/token"})
    assert good.status_code == 200
    claims = jwt.decode(good.json()["id_token"], verify=False)
    assert claims["aud"] == "https://svc" and claims["email"] == key["client_email"] and claims["exp"] > now
    wrong_aud = grant({**base, "aud": key["token_uri"]})  # the aud is Google's constant, not token_uri
    assert wrong_aud.status_code == 400 and wrong_aud.json()["error"] == "invalid_grant"
    too_long = grant({**base, "aud": "https://oauth2.googleapis.com/token", "exp": now + 7200})
    assert too_long.status_code == 400
    expired = grant({**base, "aud": "https://oauth2.googleapis.com/token", "iat": now - 7200, "exp": now - 3600})
    assert expired.status_code == 400
    scoped = grant({"iss": key["client_email"], "iat": now, "exp": now + 3600,
                    "aud": "https://oauth2.googleapis.com/token",
                    "scope": "https://www.googleapis.com/auth/cloud-platform"})
    assert scoped.status_code == 200 and scoped.json()["access_token"] and scoped.json()["expires_in"] > 0


def test_federated_credentials_call_the_apis_and_get_id_tokens_only_through_generate_id_token(
        sandbox: SandboxInfo, run_clients: RunClients, private_svc: run_v2.Service) -> None:
    """Workload Identity Federation: google-auth's external_account credentials exchange the provider's token at
    STS for an access token that calls the APIs; fetch_id_token cannot use them, and IAM Credentials'
    generateIdToken mints a service account's ID token only for a caller holding
    roles/iam.serviceAccountTokenCreator on that account (403 PERMISSION_DENIED otherwise)."""
    import google.auth
    from google.auth.credentials import with_scopes_if_required
    from google.auth.transport.requests import AuthorizedSession

    loaded, _ = google.auth.load_credentials_from_file(sandbox.external_account_file)  # no scopes: no project look-up
    creds = with_scopes_if_required(loaded, ["https://www.googleapis.com/auth/cloud-platform"])
    assert type(creds).__module__ == "google.auth.identity_pool"
    federated = run_v2.ServicesClient(transport="rest", credentials=creds,
                                      client_options={"api_endpoint": sandbox.run_api})
    assert federated.get_service(name=private_svc.name).uri == private_svc.uri  # an access token from STS
    with pytest.MonkeyPatch.context() as mp, pytest.raises(auth_exc.DefaultCredentialsError):
        mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", sandbox.external_account_file)
        google_id_token.fetch_id_token(AuthRequest(), private_svc.uri)

    deployer = json.loads(Path(sandbox.credentials_file).read_text())["client_email"]
    url = f"{sandbox.run_api}/v1/projects/-/serviceAccounts/{deployer}:generateIdToken"
    session = AuthorizedSession(creds)
    body = {"audience": private_svc.uri, "includeEmail": True}
    denied = session.post(url, json=body)
    assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "iam.serviceAccounts.getOpenIdToken" in denied.json()["error"]["message"]
    member = run_clients.admin("GET", "/sandbox/v1/iam/generated-id-tokens")["federated_member"]
    assert member.startswith("principal://iam.googleapis.com/projects/")
    run_clients.admin("PUT", f"/sandbox/v1/iam/service-accounts/{deployer}/token-creators", {"members": [member]})
    try:
        minted = session.post(url, json=body)
        assert minted.status_code == 200, minted.text
        token = minted.json()["token"]
        from google.auth import jwt as google_jwt

        assert google_jwt.decode(token, verify=False)["email"] == deployer
        assert get(f"{private_svc.uri}/health", token).status_code == 200  # the deployer may invoke
        wildcard = session.post(url.replace("/projects/-/", f"/projects/{sandbox.project}/"), json=body)
        assert wildcard.status_code == 400
        unknown = session.post(url.replace(deployer, f"nobody@{sandbox.project}.iam.gserviceaccount.com"), json=body)
        assert unknown.status_code == 403
        no_creds = httpx.post(url, json=body, timeout=10, trust_env=False)
        assert no_creds.status_code == 401
    finally:
        run_clients.admin("PUT", f"/sandbox/v1/iam/service-accounts/{deployer}/token-creators", {"members": []})
        session.close()
    bad = httpx.post(f"{sandbox.run_api}/v1/token", timeout=10, trust_env=False, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": "not-a-jwt",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "audience": json.loads(Path(sandbox.external_account_file).read_text())["audience"]})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
