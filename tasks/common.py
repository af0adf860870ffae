"""What every stage task shares: the clients built once per run, and the
guard that turns any exception into a FAIL StageResult with a reason (fail closed, no traceback)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from stagecheck.clients.images import Images, google_access_token
from stagecheck.clients.result_storage import PushedImageRecords
from stagecheck.errors import StageError
from stagecheck.log_analysis.requests import PROBE_USER_AGENT
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.secret_values import registry_auth
from stagecheck.settings import Settings

T = TypeVar("T")

if TYPE_CHECKING:  # the API client modules load google.cloud.run_v2 (~0.3 s): imported where first used
    from stagecheck.clients.cloudlogging import LogReader
    from stagecheck.clients.cloudrun import CloudRun
    from stagecheck.clients.identity import IdTokens


@dataclass
class Clients:
    """The outside world, built once from Settings and shared by every service of a run. The Cloud Run
    and Cloud Logging clients are built (and their libraries imported) on first use: a dry run and the
    syntax check never load them; nor does a dry run build the probes' HTTP client (its TLS context)."""

    settings: Settings
    images: Images
    _http: httpx.AsyncClient | None = field(default=None, repr=False)
    _cloudrun: CloudRun | None = field(default=None, repr=False)
    _logs: LogReader | None = field(default=None, repr=False)
    _tokens: IdTokens | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.AsyncClient:
        """The probes' HTTP client (one pool for every probe of the run)."""
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                           headers={"User-Agent": PROBE_USER_AGENT})
        return self._http

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

            self._tokens = IdTokens(self.settings.endpoints.credentials_file, block=self.settings.gcp_credentials_block,
                                    account=self.settings.probes.id_token_account,
                                    iam_api=self.settings.endpoints.iam_credentials_api)
        return self._tokens

    @property
    def logs(self) -> LogReader:
        if self._logs is None:
            from stagecheck.clients.cloudlogging import LogReader

            self._logs = LogReader(self.settings)
        return self._logs

    @classmethod
    def from_settings(cls, settings: Settings) -> Clients:
        # the registry token comes from the API calls' identity: the block, else the credentials file, else ADC
        token: Callable[[], str] = google_access_token
        if settings.gcp_credentials_block:
            from stagecheck.clients.identity import block_access_token

            token = block_access_token(settings.gcp_credentials_block)
        elif settings.endpoints.credentials_file:
            from stagecheck.clients.identity import file_access_token

            token = file_access_token(settings.endpoints.credentials_file)
        images = Images(settings.docker_host, registry_auth=registry_auth(os.environ), token_provider=token,
                        google_login=settings.registry_login == "google")
        images.pushed = PushedImageRecords(settings.result_storage)
        return cls(settings=settings, images=images)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.images.aclose()


async def guarded(name: str, body: Callable[[], Awaitable[tuple[StageResult, T]]], default: T,
                  logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> tuple[StageResult, T]:
    """Run a stage body, which returns its result and the value the flow needs next (`None` when there is
    none); any failure to decide becomes a FAIL with a readable reason, paired with `default`."""
    started = time.monotonic()
    value = default
    try:
        result, value = await body()
    except StageError as exc:
        result = StageResult(name=name, status=Status.FAIL, summary=str(exc),
                             evidence=[Evidence(kind="note", summary=str(exc))],
                             criteria=[Criterion(name=f"{name} completed", stage=name, status=Status.FAIL,
                                                 expected="stage completes", observed=str(exc))])
        result._transient = exc.transient  # Prefect retries an idempotent stage after it (stagecheck.retry_policy)
    except Exception as exc:  # fail closed: an unexpected error is a failed gate, reported, not raised
        if logger is not None:
            logger.exception("stage %s crashed", name)
        message = f"unexpected {type(exc).__name__}: {exc}"
        result = StageResult(name=name, status=Status.FAIL, summary=message,
                             evidence=[Evidence(kind="note", summary=message)],
                             criteria=[Criterion(name=f"{name} completed", stage=name, status=Status.FAIL,
                                                 expected="stage completes", observed=message)])
    result.duration_s = round(time.monotonic() - started, 3)
    return result, value


@dataclass(frozen=True)
class FailedGate:
    """What a failed gate's task state carries: the task's return value (its StageResult inside), with a
    short repr (Prefect logs the state; the evidence belongs in the report, not in one log line)."""

    result: StageResult
    value: Any

    @property
    def transient(self) -> bool:
        """Failed by a transient API answer: `stagecheck.retry_policy.retry_on_transient_api_answer` retries it."""
        return self.result._transient

    def __repr__(self) -> str:
        return f"FailedGate({self.result.name}: {self.result.summary})"


def gate(result: StageResult, value: T) -> T:
    """A task's return: `value` as is when the gate passed; when `result` FAILed, a Failed task state
    carrying `value` (so the run graph shows which gate failed) that the flow reads back with
    `flows.validate.gate_value`. Outside a task run (a direct `.fn()` call) there is no state to end:
    the value is returned as is."""
    from prefect.context import TaskRunContext
    from prefect.states import Failed

    if result.status is not Status.FAIL or TaskRunContext.get() is None:
        return value
    # typed as T: the caller unwraps the state (flows.validate.gate_value); Prefect records it as the run's final state
    return Failed(message=f"{result.name} failed: {result.summary}",  # type: ignore[return-value]
                  data=FailedGate(result=result, value=value))


def stage_run_name(stage: str | None = None, *, stage_param: str = "name", label_param: str | None = None
                   ) -> Callable[..., str]:
    """A `task_run_name` callable: the stage, the step label (`probe-serving [50 %]`) and the service,
    read from the task's parameters (`service` is a name or a ServiceConfig)."""
    def name(parameters: dict[str, Any]) -> str:
        out = stage or str(parameters.get(stage_param, "stage"))
        label = str(parameters.get(label_param) or "").strip() if label_param else ""
        if label:
            out += f" {label}" if label.startswith("[") else f" [{label}]"
        service = parameters.get("service")
        service_name = getattr(service, "name", service)
        return f"{out} · {service_name}" if service_name else out

    return name
