"""The serving revision's URL for a comparison with the candidate: a tag URL, never the service URL (which
may serve either revision mid-split). A tag the revision already holds is used as it is; otherwise the
revision gets stagecheck's `sc-base` tag (traffic unchanged), removed again with stagecheck's own tags
after the release (stagecheck.traffic.prune_own_tags)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagecheck.errors import StageError
from stagecheck.traffic import BASE_TAG

if TYPE_CHECKING:
    from stagecheck.clients.cloudrun import CloudRun


def tag_url_of(service: Any, revision: str) -> tuple[str, str] | None:
    """(tag, URL) of a tag that routes to `revision` (`sc-base` first), from the service's traffic statuses."""
    tagged = [(s.tag, s.uri) for s in getattr(service, "traffic_statuses", []) if s.tag and s.uri
              and s.revision == revision]
    return next(iter(sorted(tagged, key=lambda t: t[0] != BASE_TAG)), None)


async def baseline_url(cloudrun: CloudRun, service: str, revision: str, timeout_s: float) -> tuple[str, str, bool]:
    """(URL, tag, whether the tag was added now) of the serving `revision`."""
    current = await cloudrun.get_service(service)
    found = tag_url_of(current, revision) if current is not None else None
    if found is not None:
        return found[1], found[0], False
    updated = await cloudrun.tag_revision(service, revision, BASE_TAG, timeout_s)
    found = tag_url_of(updated, revision)
    if found is None:
        raise StageError(f"{revision} was tagged {BASE_TAG} but the service reports no URL for the tag")
    return found[1], found[0], True
