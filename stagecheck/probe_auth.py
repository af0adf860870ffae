"""Pure decisions about probe credentials: which audience a URL's ID token carries, and what a 401 or
403 from a Cloud Run URL means (neither is a cold start: they are never retried).

Cloud Run checks the token's `aud` against the service URL (always accepted, also for requests that
arrive through a tag URL or a load balancer) and the service's `custom_audiences` (how a load-balancer
host is accepted). No token: 403; a bad, expired or wrong-audience token: 401; a valid token of an
identity without `run.routes.invoke`: 403 (cloud-run-facts.md §1).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from stagecheck.settings import AUTH_STATUSES, ProbeAuth, ProbePolicy, UrlKind


def probe_audience(kind: UrlKind, service_url: str | None, policy: ProbePolicy) -> str | None:
    """The ID-token audience for a probe of this URL kind; None when no token is sent."""
    if policy.auth == ProbeAuth.NONE:
        return None
    if kind is UrlKind.LB and policy.lb_audience:
        return policy.lb_audience
    return service_url


def auth_failure(status: int, *, auth: ProbeAuth, audience: str | None, identity: str, service: str) -> str:
    """Why a URL answered 401/403, naming the missing permission or the audience problem, and the fix."""
    if status == 403 and auth == ProbeAuth.NONE:
        return (f"the service {service} is private and the probe sent no credentials (probes.auth = \"none\"): "
                f"grant roles/run.invoker (run.routes.invoke) to allUsers to make it public, or set "
                f"probes.auth = \"id_token\" to probe as the run's identity")
    if status == 403:
        return (f"{identity} lacks run.routes.invoke on the service {service}: grant it roles/run.invoker "
                f"(gcloud run services add-iam-policy-binding {service} --member={identity} "
                f"--role=roles/run.invoker), or set probes.auth = \"none\" if the service is public")
    if auth == ProbeAuth.NONE:
        return f"the service {service} wants an ID token and the probe sent none (probes.auth = \"none\")"
    return (f"the ID token for audience {audience} was refused: the audience must be the service URL or one of "
            f"the service's custom_audiences (set probes.lb_audience for the load balancer), and the token "
            f"valid and unexpired")


def auth_failures(*, auth: ProbeAuth, audience: str | None, identity: str, service: str) -> dict[int, str]:
    """The explanation for each auth status (401, 403) of one probe target."""
    return {s: auth_failure(s, auth=auth, audience=audience, identity=identity, service=service)
            for s in AUTH_STATUSES}


def url_origin(url: str) -> str:
    """`https://tag---svc-abc.a.run.app/health` -> `https://tag---svc-abc.a.run.app` (a URL's audience form)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def tag_audience_retry(kind: UrlKind, url: str, audience: str | None, last_status: int | None,
                       policy: ProbePolicy) -> str | None:
    """The audience to try once more at a tag URL that refused the service URL's token with 401, else None.

    No source says whether a tag URL (`https://TAG---…`) accepts a token whose audience is the service URL
    (the default URL "always remains an acceptable audience", custom-audiences docs) or wants the tag URL
    itself: stagecheck sends the service URL first and, on a 401 at a tag URL, the tag URL once."""
    if policy.auth != ProbeAuth.ID_TOKEN or kind is not UrlKind.TAGGED or last_status != 401 or not audience:
        return None
    tag_audience = url_origin(url)
    return None if tag_audience.rstrip("/") == audience.rstrip("/") else tag_audience
