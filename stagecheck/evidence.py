"""Typed payloads of the stages the report reads back: the probes' HTTP evidence and the logs analysis.

A stage builds one of these models; its JSON form is what `Evidence.data` / `StageResult.data` carry (and
what the JSON report shows, unchanged); the report reads it back with `read`, as the model, not by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)


class StageData(BaseModel):
    """A stage payload: `to_data` is its JSON form, `read` the model again (None: not this payload)."""

    model_config = ConfigDict(extra="ignore")

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, data: Mapping[str, Any]) -> Self | None:
        try:
            return cls.model_validate(dict(data))
        except ValidationError:
            return None


# ---------------------------------------------------------------------------------------------- probes


class ProbeAttemptData(StageData):
    """One request of a probe; the optional facts appear only when there is something to say."""

    at_s: float
    status: int | None  # None: no answer
    latency_ms: float
    outcome: str | None = None  # "cold_start": the answer was ridden out as a cold start
    error: str | None = None
    health: str | None = None
    body: str | None = None  # at most ~200 bytes of a failing body, redacted
    cut_by_deadline: bool = False

    @model_serializer(mode="wrap")
    def _only_what_is_known(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("outcome", "error", "health", "body"):
            if data.get(key) is None:
                data.pop(key, None)
        if not data.get("cut_by_deadline"):
            data.pop("cut_by_deadline", None)
        return data


class ProbeData(StageData):
    """What a health probe of one URL saw (`kind="http"` evidence of the probe stages)."""

    method: str = "GET"  # "WS" for the WebSocket probe
    url: str
    url_kind: str = "?"
    mode: str = ""
    status: str = ""  # the probe's Status ("PASS", "FAIL", ...)
    reason: str = ""
    duration_s: float = 0.0
    first_success_s: float | None = None
    cold_start_retries: int | None = None
    attempts: list[ProbeAttemptData] = []

    def status_codes(self) -> dict[str, int]:
        """`{"503": 1, "200": 3}`: how often each status (or error, for no answer) came back."""
        codes: dict[str, int] = {}
        for a in self.attempts:
            key = str(a.status) if a.status is not None else str(a.error or "no answer")
            codes[key] = codes.get(key, 0) + 1
        return codes

    def latencies_ms(self) -> list[float]:
        """Latencies of the attempts that got an answer."""
        return [a.latency_ms for a in self.attempts if a.status is not None]


# ------------------------------------------------------------------------------------------------ logs


class SignatureGroupData(StageData):
    """A signature group as reported (`log_analysis.SignatureGroup`, times in ISO 8601)."""

    signature: str = ""
    severity: str = "?"
    count: int = 0
    first_seen: str = ""
    last_seen: str = ""
    example: str = ""  # redacted, truncated
    insert_ids: list[str] = []
    crash: str | None = None
    streams: list[str] = []


class LogsData(StageData):
    """The logs stage's analysis: counts, 5xx rate and the signature groups by classification."""

    revision: str
    previous_revision: str | None
    window: tuple[str, str]
    threshold: str
    total: int
    by_severity: dict[str, int]
    requests: int
    server_errors: int
    cold_start_errors: int
    error_rate_5xx: float
    max_5xx_rate: float
    server_error_urls: dict[str, int]
    new: list[SignatureGroupData]
    pre_existing: list[SignatureGroupData]
    tolerated: list[SignatureGroupData]
    below_threshold: int
    crashes: list[SignatureGroupData]
    truncated: bool = False
    platform_refusals: int = 0  # Cloud Run front-end refusals excused (cold_start_errors holds the same)
    counted_requests: int = 0  # the 5xx rate's denominator
    by_origin: dict[str, list[int]] = Field(default_factory=dict)  # probe/advisory/other -> [requests, failed]


# ------------------------------------------------------------------------------------------------ bake


class BakeData(StageData):
    """What a bake (or canary hold) watched: for how long, how much, and the first failure it saw."""

    label: str  # "canary hold at 50 %" / "bake after 100 %"
    planned_s: float
    watched_s: float
    started_at: str
    urls: list[str]
    probes: int
    probe_failures: int
    last_probe_at: str | None  # when the last probe round was sent (the logs stage settles to it)
    log_reads: int
    log_retries: int
    log_entries: int
    detected_by: str | None  # "probe" | "logs"
    time_to_detect_s: float | None
    detected_at: str | None
    first_evidence_at: str | None
    reason: str | None
    new_signatures: list[SignatureGroupData]
