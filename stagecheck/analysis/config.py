"""The `[analysis]` section of stagecheck.toml (off when absent). Imported by stagecheck/settings.py."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_RPS = 25.0  # per arm; Flagger's load tester runs ~20 rps, we stay within that order
SAFE_METHODS = ("GET", "HEAD")


class Baseline(StrEnum):
    SERVING = "serving"  # the revision that served before the release gets the `sc-base` tag
    FRESH = "fresh"  # a 0 % copy of the serving revision's template, deployed just before the candidate (tasks/control)


class OnInconclusive(StrEnum):
    FAIL = "fail"
    WARN = "warn"


class Metric(StrEnum):
    LATENCY_P50 = "latency_p50"  # Kayenta's Mann-Whitney rule on the per-request latencies
    LATENCY_P95 = "latency_p95"  # pooled-quantile exceedance test
    LATENCY_P99 = "latency_p99"
    ERROR_RATE = "error_rate"  # one-sided Fisher exact test + absolute ceiling


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestSpec(_Strict):
    path: str = Field(pattern=r"^/[^\s#]*$", description="a path on the service, with an optional query")
    weight: float = Field(default=1.0, gt=0, description="its share of the request mix, relative to the others")
    method: str = Field(default="GET", description="HTTP method; other than GET/HEAD only with allow_unsafe")
    allow_unsafe: bool = False  # a method other than GET/HEAD must be opted in, per request

    @field_validator("path")
    @classmethod
    def _same_origin(cls, v: str) -> str:
        if v.startswith("//"):
            raise ValueError("a path starts with a single '/' ('//' would name another host)")
        return v

    @field_validator("method")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @model_validator(mode="after")
    def _safe(self) -> RequestSpec:
        if self.method not in SAFE_METHODS and not self.allow_unsafe:
            raise ValueError(f"method {self.method} needs allow_unsafe = true for {self.path} (GET/HEAD otherwise)")
        return self


class AnalysisSettings(_Strict):
    paths: tuple[RequestSpec, ...] = ()  # empty: the service's OpenAPI GET operations without required params
    openapi_path: str = Field(default="/openapi.json", pattern=r"^/",
                              description="where both arms serve their OpenAPI document, read when paths is empty")
    rps: float = Field(default=5.0, gt=0, le=MAX_RPS)  # per arm
    max_in_flight: int = Field(default=32, ge=1, le=256, description="requests outstanding at once, both arms")
    request_timeout_s: float = Field(default=10.0, gt=0, le=60,
                                     description="a request not answered by then counts as an error")
    baseline: Baseline = Field(default=Baseline.SERVING,
                               description="the control arm: `serving`, the revision that served before; `fresh`, a copy of "
                               "its template (same image digest) deployed beside the candidate, so both start cold; "
                               "either is tagged sc-base for the bake and never gets traffic")
    metrics: tuple[Metric, ...] = Field(default=tuple(Metric), description="the metrics judged (all by default)")
    alpha: float = Field(default=0.01, gt=0, lt=0.5)  # family-wise, Bonferroni-split over `metrics`
    tolerance: float = Field(default=0.25, ge=0)  # Kayenta's NetflixACAJudge value
    min_samples: int = Field(default=50, ge=5)  # per arm, below which a metric is Nodata
    min_tail_exceedances: float = Field(default=5.0, gt=0, description="expected samples above the pooled "
                                        "quantile per arm a tail test needs (n >= this / (1 - q)), else Nodata")
    tail_min_shift_ms: float = Field(default=5.0, ge=0,
                                     description="a tail regression must also move the quantile by this much")
    error_ceiling: float = Field(default=0.05, gt=0, le=1,
                                 description="a candidate error share above this fails whatever the baseline")
    error_min_increase: float = Field(default=0.01, ge=0, le=1,
                                      description="an error-rate regression must add at least this share")
    pass_score: float = Field(default=95.0, ge=0, le=100, description="score at or above which the analysis passes")
    marginal_score: float = Field(default=75.0, ge=0, le=100,
                                  description="score at or above which (below pass_score) it is Marginal")
    on_inconclusive: OnInconclusive = OnInconclusive.FAIL  # a Nodata outcome
    on_marginal: OnInconclusive = OnInconclusive.FAIL  # Spinnaker: a final score below `pass` fails the canary
    breaker_error_share: float = Field(default=0.8, gt=0, le=1)  # candidate failing this share trips it
    breaker_min_requests: int = Field(default=20, ge=1,
                                      description="candidate answers seen before the circuit breaker may trip")

    @model_validator(mode="after")
    def _thresholds(self) -> AnalysisSettings:
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score must not exceed pass_score")
        if not self.metrics:
            raise ValueError("metrics needs at least one of " + ", ".join(Metric))
        return self
