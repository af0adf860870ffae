"""What every stage task shares: the clients built once per run, and the
guard that turns any exception into a FAIL StageResult with a reason (fail closed, no traceback)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from stagecheck.clients.images import Images
from stagecheck.errors import StageError
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.settings import Settings

if TYPE_CHECKING:  # the API client modules load google.cloud.run_v2 (~0.3 s): imported where first used
    from stagecheck.clients.cloudlogging import LogReader
    from stagecheck.clients.cloudrun import CloudRun
    from stagecheck.clients.identity import IdTokens


@dataclass
class Clients:
    """The outside world, built once from Settings and shared by every service of a run. The Cloud Run
    and Cloud Logging clients are built (and their libraries imported) on first use: a dry run and the
    syntax check never load them."""

    settings: Settings
    images: Images
    http: httpx.AsyncClient
    _cloudrun: CloudRun | None = field(default=None, repr=False)
    _logs: LogReader | None = field(default=None, repr=False)
    _tokens: IdTokens | None = field(default=None, repr=False)

    @property
    def cloudrun(self) -> CloudRun:
        if self._cloudrun is None:
            from stagecheck.clients.cloudrun import CloudRun

            self._cloudrun = CloudRun(self.settings)
        return self._cloudrun

    @property
    def tokens(self) -> IdTokens | None:
        """ID tokens for the probes (probes.auth = "id_token"); google.auth's JWT/crypto modules load on first use."""
        if self._tokens is None:
            from stagecheck.clients.identity import IdTokens

            self._tokens = IdTokens(self.settings.endpoints.credentials_file)
        return self._tokens

    @property
    def logs(self) -> LogReader:
        if self._logs is None:
            from stagecheck.clients.cloudlogging import LogReader

            self._logs = LogReader(self.settings)
        return self._logs

    @classmethod
    def from_settings(cls, settings: Settings) -> Clients:
        return cls(
            settings=settings,
            images=Images(settings.docker_host),
            http=httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                   headers={"User-Agent": "stagecheck-probe/0.1"}),
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.images.aclose()


async def guarded(name: str, body: Callable[[], Awaitable[StageResult]],
                  logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> StageResult:
    """Run a stage body; any failure to decide becomes a FAIL with a readable reason."""
    started = time.monotonic()
    try:
        result = await body()
    except StageError as exc:
        result = StageResult(name=name, status=Status.FAIL, summary=str(exc),
                             evidence=[Evidence(kind="note", summary=str(exc))],
                             criteria=[Criterion(name=f"{name} completed", stage=name, status=Status.FAIL,
                                                 expected="stage completes", observed=str(exc))])
    except Exception as exc:  # fail closed: an unexpected error is a failed gate, reported, not raised
        if logger is not None:
            logger.exception("stage %s crashed", name)
        message = f"unexpected {type(exc).__name__}: {exc}"
        result = StageResult(name=name, status=Status.FAIL, summary=message,
                             evidence=[Evidence(kind="note", summary=message)],
                             criteria=[Criterion(name=f"{name} completed", stage=name, status=Status.FAIL,
                                                 expected="stage completes", observed=message)])
    result.duration_s = round(time.monotonic() - started, 3)
    return result
