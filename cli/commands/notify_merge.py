"""`stagecheck notify-merge --sha SHA --ref REF --repo NAME [--url GIT_URL] [--config PATH]`: tell Prefect a
commit was merged.

Emits the `stagecheck.git.merged` event (resource `git.repo.<name>` with labels `stagecheck.git.ref`, and
`stagecheck.git.url` / `stagecheck.git.config` when given; payload sha/ref/repo/url/config) through the Prefect
API of the active Prefect profile (PREFECT_API_URL, a profile's, Prefect Cloud's after `prefect cloud login`)
or --api-url; deployments with a merge trigger start a validation of that SHA. One line in any CI system.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from deployments.events import MERGE_EVENT, MergeEvent, MergeEventError

RECONNECTION_ATTEMPTS = 2
EPILOG = """environment:
  PREFECT_API_URL, PREFECT_API_KEY   the Prefect API (default: the active profile's, `prefect profile use`)
  PREFECT_PROFILE                    the Prefect profile to use

exit status:
  0  the API took the event
  1  the API could not be reached or refused the event
  2  bad input (the flag named with its rule) or no Prefect API configured"""


def profile_api_url() -> str | None:
    """The API URL of the active Prefect profile (PREFECT_API_URL in the environment wins, as in Prefect)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stagecheck notify-merge", description="Emit a merge event that triggers a staging validation.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    parser.add_argument("--sha", required=True, help="the merged commit (hex, 7-40 characters)")
    parser.add_argument("--ref", required=True, help="the branch merged into, e.g. main or refs/heads/main")
    parser.add_argument("--repo", required=True, help="repository name, e.g. shop or acme/shop")
    parser.add_argument("--url", help="the repository's git URL, without credentials (targets of another "
                                      "repository take only merges of their URL)")
    parser.add_argument("--config", help="path of the stagecheck.toml inside the repository (an event label)")
    parser.add_argument("--api-url", default=None,
                        help="Prefect API (default: the active Prefect profile's PREFECT_API_URL)")
    return parser.parse_args(argv)


async def emit(merge: MergeEvent) -> str:
    """Send the event over the API's event stream; returns its id. Raises on connection failure."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(event=MERGE_EVENT, resource=merge.resource(), payload=merge.payload())
    async with get_events_client(reconnection_attempts=RECONNECTION_ATTEMPTS) as client:
        await client.emit(event)
    return str(event.id)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        merge = MergeEvent.parse(args.sha, args.ref, args.repo, args.url, args.config)
    except MergeEventError as exc:
        print(f"stagecheck notify-merge: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args.api_url = args.api_url or profile_api_url()
    if not args.api_url:
        print("stagecheck notify-merge: no Prefect API: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api), "
              "use a Prefect profile that has one (`prefect profile use`), or pass --api-url", file=sys.stderr)
        return 2
    if not args.api_url.startswith(("http://", "https://")):
        print(f"stagecheck notify-merge: --api-url {args.api_url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: args.api_url.rstrip("/")}):
            event_id = asyncio.run(emit(merge))
    except Exception as exc:  # connection refused, TLS, auth: one readable line, no traceback
        print(f"stagecheck notify-merge: the Prefect API at {args.api_url} did not take the event: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"stagecheck notify-merge: {MERGE_EVENT} for {merge.repo}@{merge.sha[:12]} ({merge.ref}) sent "
          f"as event {event_id}")
    return 0
