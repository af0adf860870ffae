"""Cloud Logging API v2 reads, through the unmodified google-cloud-logging client (HTTP/JSON)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

from google.api_core.client_options import ClientOptions

from stagecheck.clients.cloudrun import API_ERRORS, describe_api_error
from stagecheck.clients.identity import api_credentials
from stagecheck.settings import Settings


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
        self._credentials_file = settings.endpoints.credentials_file
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import google.cloud.logging

            credentials = api_credentials(self._credentials_file)  # None: ADC
            if credentials is not None:
                self._kwargs["credentials"] = credentials
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
            return await asyncio.to_thread(read)
        except API_ERRORS as exc:
            raise describe_api_error(exc, f"read logs of {revision}") from None
        except (KeyError, ValueError) as exc:
            raise describe_api_error(exc, f"read logs of {revision} (malformed entry)") from None
