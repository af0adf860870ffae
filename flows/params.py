"""The validation flow's parameters (the Prefect UI's run form): `stagecheck.request.ValidationRequest`,
in the core because the checkout task re-reads a commit's config through it too."""

from stagecheck.request import ValidationRequest

__all__ = ["ValidationRequest"]
