"""The `[services.contract]` table: the breaking-changes audit of a service's OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from stagecheck.contract.findings import FailOn
from stagecheck.settings.rules import Strict


class ContractSettings(Strict):
    """`[services.contract]`: the breaking-changes audit of the service's OpenAPI document (stage `contract`)."""

    openapi_path: str = Field("/openapi.json", description="where the service serves its OpenAPI 3.0/3.1 document")
    fail_on: FailOn = Field(FailOn.ERR, description='"ERR", "WARN" or "never" (report only)')
    ignore_file: Path | None = Field(None, description="accepted changes, in oasdiff's ignore format (relative to "
                                                        "the config)")

    @field_validator("openapi_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v
