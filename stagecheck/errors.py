"""Errors with messages written for the person running the pipeline (never a bare traceback)."""

from __future__ import annotations


class StageError(Exception):
    """A stage could not do its job; `str(exc)` says what happened and, where known, what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
