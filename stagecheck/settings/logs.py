"""The `[logs]` section: what the log analysis counts, ignores and how it judges."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from stagecheck.settings.rules import Strict


class LogRules(Strict):
    """How the new revision's logs are judged against the previous revision's, and the read budget."""

    settle_s: float = Field(20.0, ge=0, description="max wait for log ingestion to reach the last probe")
    severity_threshold: str = Field("ERROR", description="entries at or above this severity are gated")
    max_new_signatures: int = Field(0, ge=0, description="new signatures at/above threshold tolerated")
    tolerated_signatures: tuple[str, ...] = Field((), description="known signatures (substring or regex)")
    max_5xx_rate: float = Field(0.0, ge=0, le=1, description="share of 5xx request logs tolerated (after cold start)")
    max_entries: int = Field(5000, ge=1)  # most log entries one read of a revision takes (more: the read is marked truncated)
    reads_per_minute: float = Field(
        30.0, gt=0, le=60,
        description="entries.list budget per project for the whole run (Cloud Logging allows 60/min/project)")
    read_retries: int = Field(5, ge=0, description="retries of a read answered 429 or 503 (with backoff)")

    severity_fields: tuple[str, ...] = Field(
        (), description="jsonPayload fields read as the severity of entries Cloud Logging left at DEFAULT "
                        "(e.g. [\"level\"] for pino/winston); opt-in: Cloud Run reads only `severity`")

    @field_validator("severity_fields")
    @classmethod
    def _field_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for index, name in enumerate(v):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}", name):
                raise ValueError(f"[{index}] {name!r} is not a JSON field name (letters, digits, _ . -)")
            if name in ("severity", "message"):
                raise ValueError(f"[{index}] {name!r}: Cloud Logging already reads it")
        return v

    @field_validator("severity_threshold")
    @classmethod
    def _severity(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}:
            raise ValueError(f"unknown severity {v!r}")
        return v

    @field_validator("tolerated_signatures")
    @classmethod
    def _regexes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # the same rule as log_analysis.compile_tolerated: '/.../' is a regex, checked here, before anything moves
        for index, pattern in enumerate(v):
            if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise ValueError(f"[{index}] {pattern!r} is not a valid regular expression: {exc}") from None
        return v
