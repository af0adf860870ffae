"""The Cloud Logging query for one revision's entries, built in one place for both readers of it: the
Logging API's `entries.list` filter (with the time window) and the Logs Explorer link of the report."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

CONSOLE_BASE = "https://console.cloud.google.com"
RESOURCE_TYPE = 'resource.type="cloud_run_revision"'


def revision_terms(*, region: str, service: str, revision: str) -> tuple[str, ...]:
    """The terms selecting one Cloud Run revision's entries (they are ANDed)."""
    return (
        RESOURCE_TYPE,
        f'resource.labels.service_name="{service}"',
        f'resource.labels.revision_name="{revision}"',
        f'resource.labels.location="{region}"',
    )


def timestamp_term(when: datetime) -> str:
    """An instant as the filter language's UTC timestamp, to the microsecond."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def window_terms(*, region: str, service: str, revision: str, start: datetime,
                 end: datetime | None = None) -> list[str]:
    """The terms of one revision's entries in a time window, the resource type left out (a filter ORing
    several windows states it once)."""
    terms = [*revision_terms(region=region, service=service, revision=revision)[1:],
             f'timestamp>="{timestamp_term(start)}"']
    if end is not None:
        terms.append(f'timestamp<="{timestamp_term(end)}"')
    return terms


def revision_filter(*, project: str, region: str, service: str, revision: str,
                    start: datetime, end: datetime | None = None) -> str:
    """The Logging API filter for one revision's entries in a time window."""
    return " AND ".join([RESOURCE_TYPE, *window_terms(region=region, service=service, revision=revision,
                                                       start=start, end=end)])


def console_logs_url(*, project: str, region: str, service: str, revision: str,
                     console_base: str = CONSOLE_BASE) -> str:
    """Logs Explorer selecting one revision's entries, in the console's `;query=` form (a term a line)."""
    query = "\n".join(revision_terms(region=region, service=service, revision=revision))
    return f"{console_base.rstrip('/')}/logs/query;query={quote(query, safe='')}?project={quote(project, safe='')}"
