"""Cloud Logging API v2 reads, through the unmodified google-cloud-logging client (HTTP/JSON)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials

from stagecheck.clients.cloudrun import API_ERRORS, describe_api_error
from stagecheck.errors import Api
from stagecheck.settings import Settings

# a read is idempotent: a burst of 429/503 is retried (the whole read again) with bounded backoff
READ_RETRY = Retry(initial=0.5, maximum=4.0, multiplier=2.0, timeout=20.0,
                   predicate=lambda e: isinstance(e, gexc.ServiceUnavailable | gexc.TooManyRequests))


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def revision_filter(*, project: str, region: str, service: str, revision: str,
                    start: datetime, end: datetime | None = None) -> str:
    """The Logs Explorer query for one revision's entries in a time window."""
    terms = [
        'resource.type="cloud_run_revision"',
        f'resource.labels.service_name="{service}"',
        f'resource.labels.revision_name="{revision}"',
        f'resource.labels.location="{region}"',
        f'timestamp>="{_ts(start)}"',
    ]
    if end is not None:
        terms.append(f'timestamp<="{_ts(end)}"')
    return " AND ".join(terms)


class LogReader:
    """Reads log entries of one project as Logging API JSON dicts."""

    def __init__(self, settings: Settings) -> None:
        self.project = settings.project
        self.region = settings.region
        self._kwargs: dict[str, Any] = {"project": settings.project, "_use_grpc": False}
        if settings.endpoints.logging_api:
            self._kwargs["client_options"] = ClientOptions(api_endpoint=settings.endpoints.logging_api)
        if settings.endpoints.anonymous:
            self._kwargs["credentials"] = AnonymousCredentials()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import google.cloud.logging

            self._client = google.cloud.logging.Client(**self._kwargs)
        return self._client

    async def revision_entries(self, *, service: str, revision: str, start: datetime,
                               end: datetime | None = None, max_entries: int = 5000) -> list[dict[str, Any]]:
        """Entries of the revision in [start, end], oldest first, at most max_entries."""
        filter_ = revision_filter(project=self.project, region=self.region, service=service,
                                  revision=revision, start=start, end=end)

        def read() -> list[dict[str, Any]]:
            from google.cloud.logging import ASCENDING

            entries = self.client.list_entries(filter_=filter_, order_by=ASCENDING, page_size=min(1000, max_entries))
            return [entry.to_api_repr() for entry in itertools.islice(entries, max_entries)]

        try:
            return await asyncio.to_thread(READ_RETRY(read))
        except API_ERRORS as exc:
            raise describe_api_error(exc, f"read logs of {revision}", Api.LOGGING) from None
        except (KeyError, ValueError) as exc:
            raise describe_api_error(exc, f"read logs of {revision} (malformed entry)", Api.LOGGING) from None
