"""The validation flow's parameters (the Prefect UI's run form): `stagecheck.request.ValidationRequest`,
in the core because the checkout task re-reads a commit's config through it too."""

from stagecheck.request import GIT_SHA_PATTERN, ValidationRequest, flow_timeout_s

__all__ = ["GIT_SHA_PATTERN", "ValidationRequest", "flow_timeout_s"]
