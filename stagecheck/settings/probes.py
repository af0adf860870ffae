"""The `[probes]` section and the per-service health checks: which URLs are probed and how."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from stagecheck.settings.rules import Strict
from stagecheck.settings.traffic import DegradedPolicy


class ProbeMode(StrEnum):
    REQUIRED = "required"  # gates the verdict
    ADVISORY = "advisory"  # reported, never gating (e.g. a direct URL closed by ingress settings)
    OFF = "off"


class UrlKind(StrEnum):
    TAGGED = "tagged"  # the new revision's tag URL, before it gets traffic
    SERVICE = "service"  # the service's direct run.app URL
    LB = "lb"  # the load balancer in front of the service


class UrlCheck(Strict):
    """One URL kind's probe: the path and whether it gates the verdict."""

    path: str = "/health"  # path probed on this URL kind (starts with /)
    mode: ProbeMode = ProbeMode.REQUIRED  # required: gates the verdict; advisory: reported only; off: not probed

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class HealthChecks(Strict):
    """The health paths of a service, per URL kind (tagged, service, lb)."""

    tagged: UrlCheck = UrlCheck()  # the candidate's tag URL, before it gets traffic
    service: UrlCheck = UrlCheck()  # the service's run.app URL, after each traffic step
    lb: UrlCheck = UrlCheck(path="/api/health")  # the load balancer: lb_url + lb_path_prefix + this path
    websocket_path: str | None = None

    def for_kind(self, kind: UrlKind) -> UrlCheck:
        return {UrlKind.TAGGED: self.tagged, UrlKind.SERVICE: self.service, UrlKind.LB: self.lb}[kind]


class ProbeAuth(StrEnum):
    ID_TOKEN = "id_token"  # a Google ID token of the run's identity (private services: the Cloud Run default)
    NONE = "none"  # no credentials: only for a public service (allUsers invoker or invoker IAM check disabled)


AUTH_STATUSES = (401, 403)  # an invoker/token problem, never a cold start


class ProbePolicy(Strict):
    """How every URL is probed: deadline, healthy answers in a row, retries of cold-start answers, auth."""

    deadline_s: float = Field(60.0, gt=0, description="give up on a URL after this long")
    consecutive_successes: int = Field(3, ge=1, description="K healthy answers in a row pass the probe")
    request_timeout_s: float = Field(5.0, gt=0)  # one probe request's timeout
    retry_statuses: tuple[int, ...] = Field((503, 429), description="cold-start answers that are retried")
    initial_backoff_s: float = Field(0.2, ge=0)  # first pause between retries of a cold-start answer (doubles, with jitter)
    max_backoff_s: float = Field(3.0, gt=0)  # longest pause between retries
    jitter: float = Field(0.3, ge=0, le=1, description="fraction of the backoff randomised")
    success_interval_s: float = Field(0.2, ge=0, description="pause between consecutive successful probes")
    degraded: DegradedPolicy = DegradedPolicy.WARN  # what a {"status": "degraded"} answer is: warn or fail
    auth: ProbeAuth = Field(ProbeAuth.ID_TOKEN, description="id_token: send an ID token (audience = service URL); "
                                                            "none: no credentials (public services only)")
    lb_audience: str | None = Field(None, description="ID-token audience for load-balancer probes (one of the "
                                                      "service's custom_audiences); default: the service URL")
    id_token_account: str | None = Field(
        None, pattern=r"^[a-z][-a-z0-9]*@[-a-z0-9.]+\.iam\.gserviceaccount\.com$",
        description="service account whose ID tokens the probes send when the run's identity cannot mint one "
                    "(Workload Identity Federation, a person's credentials): minted through IAM Credentials "
                    "generateIdToken; the run's identity needs roles/iam.serviceAccountTokenCreator on it")

    @field_validator("retry_statuses")
    @classmethod
    def _not_auth(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        auth = sorted(set(v) & set(AUTH_STATUSES))
        if auth:
            raise ValueError(f"{auth} are invoker/token answers, not cold starts: they are never retried")
        return v
    headers: dict[str, str] = Field(default_factory=dict, repr=False,
                                    description="extra headers sent with every probe (e.g. an API key); "
                                                "their values are treated as secrets: never shown, always redacted")
