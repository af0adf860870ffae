"""What to validate, and how: the validation flow's parameters, as a person fills them in the Prefect UI's run form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from stagecheck.settings import Settings, load_settings

GIT_SHA_PATTERN = r"^[0-9a-f]{7,40}$"  # also the run form's rule: a bad SHA is refused before a run starts
FLOW_TIMEOUT_ENV = "STAGECHECK_FLOW_TIMEOUT_S"
DEFAULT_FLOW_TIMEOUT_S = 30 * 3600.0  # above the longest legitimate run: a day's slot wait plus the stages' waits


def flow_timeout_s(environ: dict[str, str] | None = None) -> float:
    """The validation flow's timeout, a backstop (Prefect ends a run past it TimedOut): $STAGECHECK_FLOW_TIMEOUT_S
    seconds when it is a positive number, else 30 hours."""
    import os

    text = (os.environ if environ is None else environ).get(FLOW_TIMEOUT_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_FLOW_TIMEOUT_S
    return value if 0 < value < float("inf") else DEFAULT_FLOW_TIMEOUT_S


class ValidationRequest(BaseModel):
    """What to validate, and how. Empty fields fall back to the config file."""

    config: str = Field("stagecheck.toml", description="Path of the stagecheck.toml (inside `repository` when set, "
                                                       "else relative to the working directory)")
    services: list[str] = Field(default_factory=list,
                                description="Cloud Run services to validate; empty means every service in the config")
    git_sha: str | None = Field(None, pattern=GIT_SHA_PATTERN,
                                description="Commit to validate (checked out for the run unless the clone is at it); empty means HEAD")
    git_ref: str | None = Field(None, description="Branch or ref the commit came from (shown in the report)")
    traffic_steps: list[int] | None = Field(
        None, description="Override the traffic plan: percent to the new revision per step, e.g. [10, 50, 100]")
    canary_hold_s: float | None = Field(None, ge=0, description="Override the wait after each canary step (seconds)")
    bake_s: float | None = Field(None, ge=0, description="Override the bake window after the last step (seconds)")
    dry_run: bool = Field(False, description="Check syntax and build the image only; deploy nothing")
    sandbox: bool = Field(False, description="Target the local sandbox (endpoints from STATE_DIR/sandbox.json)")
    state_dir: str = Field(".stagecheck", description="Where the sandbox writes sandbox.json")
    repository: str | None = Field(
        None, description="Git URL (https://, ssh://, git@host:path, file://) or absolute path of the service "
                          "repository to validate; empty: the repository of the working directory")
    repository_credentials: str | None = Field(
        None, description="Prefect block holding the repository's HTTPS token: a Secret block's name, or "
                          "<block type>/<name> (e.g. github-credentials/acme); never put credentials in the URL")

    @field_validator("services")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    def parameters(self) -> dict[str, Any]:
        """The validation flow's (flat) parameters for this request."""
        return self.model_dump()

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        traffic: dict[str, Any] = {}
        if self.traffic_steps is not None:
            traffic["steps"] = self.traffic_steps
        if self.canary_hold_s is not None:
            traffic["hold_s"] = self.canary_hold_s
        if self.bake_s is not None:
            traffic["bake_s"] = self.bake_s
        if traffic:
            out["traffic"] = traffic
        if self.dry_run:
            out["dry_run"] = True
        if self.git_sha:
            out["git_sha"] = self.git_sha
        return out

    def load(self, environ: dict[str, str] | None = None) -> Settings:
        """Settings for this request (raises ConfigError with a readable message)."""
        import os

        sandbox_json = Path(self.state_dir) / "sandbox.json" if self.sandbox else None
        return load_settings(Path(self.config), overrides=self.overrides(),
                             environ=dict(os.environ) if environ is None else environ, sandbox_json=sandbox_json)
