"""The `[syntax]` and `[endpoints]` sections: the syntax gate, and where the APIs are."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from stagecheck.settings.rules import Strict


class SyntaxSettings(Strict):
    """The syntax gate: which files it reads and for which Python."""

    enabled: bool = True  # run the syntax gate (false: the stage is skipped)
    target_version: str | None = Field(None, description="X.Y; default: the running interpreter's")
    exclude: tuple[str, ...] = ()  # glob patterns (relative to repo_root) the syntax gate does not read

    @field_validator("target_version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"3\.[0-9]{1,2}", v):
            raise ValueError("target_version is like '3.11'")
        return v

    def version_tuple(self) -> tuple[int, int] | None:
        if self.target_version is None:
            return None
        major, minor = self.target_version.split(".")
        return int(major), int(minor)


class Endpoints(Strict):
    """Where the APIs are. All None: real Google Cloud with Application Default Credentials."""

    run_api: str | None = None  # Cloud Run Admin API base URL; unset: Google's (the sandbox sets its own)
    logging_api: str | None = None  # Cloud Logging API base URL; unset: Google's (the sandbox sets its own)
    iam_credentials_api: str = Field("https://iamcredentials.googleapis.com",
                                     description="IAM Credentials API (generateIdToken for probes.id_token_account)")
    credentials_file: str | None = Field(
        None, description="credentials file for the API calls and ID tokens: a service-account key (the sandbox "
                          "writes one) or any Application Default Credentials file (external_account, "
                          "authorized_user, impersonated_service_account); unset: Application Default Credentials")
    console_base: str = "https://console.cloud.google.com"  # base of the Cloud console links in reports

    @field_validator("credentials_file")
    @classmethod
    def _key_file(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"credentials file not found: {v}")
        return v

    @field_validator("run_api", "logging_api", "iam_credentials_api")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("endpoint needs an http:// or https:// scheme")
        return v.rstrip("/") if v else v
