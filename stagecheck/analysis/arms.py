"""The baseline arm's tag (pure): the revision that served before the release answers on `sc-base`.

Kept small and on its own so another stage needing a URL of the serving revision (the contract audit)
shares it. Adding a 0 % tagged target moves no traffic; removing it restores the split exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stagecheck.model import TrafficTarget

BASE_TAG = "sc-base"


def with_base_tag(split: Sequence[TrafficTarget], revision: str) -> list[TrafficTarget]:
    """The split plus a 0 % target tagged `sc-base` for `revision` (an older `sc-base` target replaced)."""
    kept = [t for t in split if t.tag != BASE_TAG]
    return [*kept, TrafficTarget(revision=revision, percent=0, tag=BASE_TAG)]


def without_base_tag(split: Sequence[TrafficTarget]) -> list[TrafficTarget]:
    """The split without the `sc-base` tag: its 0 % target dropped, a serving target left untagged."""
    out: list[TrafficTarget] = []
    for t in split:
        if t.tag != BASE_TAG:
            out.append(t)
        elif t.percent > 0:
            out.append(TrafficTarget(revision=t.revision, percent=t.percent, tag=None))
    return out


def tag_uri(statuses: Sequence[Any], tag: str) -> str | None:
    """The URL Cloud Run serves a tag at, from the service's `traffic_statuses`."""
    for status in statuses:
        if getattr(status, "tag", None) == tag and getattr(status, "uri", ""):
            return str(status.uri)
    return None
