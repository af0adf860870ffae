"""Traffic splits, pure: pin LATEST, add the tagged candidate, plan the steps, plan the rollback.

A split is a list of `TrafficTarget` (revision None = LATEST). Canonical form, as these functions
produce it: no LATEST once pinned, one target per revision (a revision with several tags keeps extra
tag-only 0 % targets, as Cloud Run stores them), unique tags, zero-percent targets only when tagged,
percents summing to exactly 100.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from stagecheck.model import TrafficTarget
from stagecheck.settings import TrafficPlan
from stagecheck.stages import Stage

LATEST = "LATEST"
TAG_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
OWN_TAG_RE = re.compile(r"^sc-[0-9a-f]{7,40}$")  # the tags stagecheck gives its candidates (sc-<sha>)
BASE_TAG = "sc-base"  # the tag stagecheck gives the serving revision (its baseline URL) for one release


def _target(revision: str | None, percent: int, tag: str | None = None) -> TrafficTarget:
    return TrafficTarget(revision=revision, percent=percent, tag=tag)


def _check_tag(tag: str) -> None:
    if not TAG_RE.match(tag):
        raise ValueError(
            f"invalid traffic tag {tag!r}: lowercase letters, digits and hyphens, starting with a letter"
        )


def _require_pinned(split: Sequence[TrafficTarget], what: str) -> None:
    if any(t.latest and t.percent > 0 for t in split):
        raise ValueError(f"{what}: the split still routes to LATEST; pin it to a concrete revision first")


def _merge(split: Sequence[TrafficTarget]) -> list[TrafficTarget]:
    """One target per revision (summing percents, keeping its first tag; further distinct tags stay as
    0 % tag-only targets); untagged 0 % targets dropped. Order: first appearance."""
    merged: dict[str | None, TrafficTarget] = {}
    extra_tags: list[TrafficTarget] = []
    for t in split:
        current = merged.get(t.revision)
        if current is None:
            merged[t.revision] = _target(t.revision, t.percent, t.tag)
        elif t.tag is None or current.tag is None or current.tag == t.tag:
            merged[t.revision] = _target(t.revision, current.percent + t.percent, current.tag or t.tag)
        else:
            merged[t.revision] = _target(t.revision, current.percent + t.percent, current.tag)
            extra_tags.append(_target(t.revision, 0, t.tag))
    return [t for t in [*merged.values(), *extra_tags] if t.percent > 0 or t.tag is not None]


def pin_latest(split: Sequence[TrafficTarget], latest_ready_revision: str | None) -> list[TrafficTarget]:
    """LATEST -> `latest_ready_revision`, so deploying a new template does not move traffic.

    Only targets that carry a percentage are pinned: a tag-only 0 % LATEST target keeps following the
    latest revision (it serves nothing). Targets of the same revision are merged. Raises ValueError
    when LATEST carries traffic and no ready revision is known (nothing to pin to: deciding blindly
    could move traffic).
    """
    if any(t.latest and t.percent > 0 for t in split):
        if not latest_ready_revision:
            share = sum(t.percent for t in split if t.latest)
            raise ValueError(
                f"the split sends {share} % to LATEST but the service has no ready revision to pin"
            )
    pinned = [_target(latest_ready_revision if t.latest and t.percent > 0 else t.revision, t.percent, t.tag)
              for t in split]
    return _merge(pinned)


def _without_tag(split: Sequence[TrafficTarget], tag: str) -> list[TrafficTarget]:
    """The split with `tag` removed from whichever target holds it (tags are unique per service)."""
    out = [_target(t.revision, t.percent, None if t.tag == tag else t.tag) for t in split]
    return [t for t in out if t.percent > 0 or t.tag is not None]


def with_tagged_candidate(serving: Sequence[TrafficTarget], revision: str, tag: str) -> list[TrafficTarget]:
    """The serving split plus the candidate at 0 % under `tag` (reachable at its tag URL, no traffic).

    A target that held `tag` before loses it. When the candidate already serves untagged traffic it
    gets the tag on that target.
    """
    _check_tag(tag)
    if not revision:
        raise ValueError("candidate revision name is empty")
    _require_pinned(serving, "adding the candidate")
    out = _without_tag(_merge(serving), tag)
    for i, t in enumerate(out):
        if t.revision == revision and t.tag is None:
            out[i] = _target(revision, t.percent, tag)
            return out
    return [*out, _target(revision, 0, tag)]


def with_tag(split: Sequence[TrafficTarget], revision: str, tag: str) -> list[TrafficTarget]:
    """The split with `tag` on `revision` (a 0 % tag-only target; the tag leaves whichever target held it):
    the revision gets a URL, every percent stays as it was."""
    _check_tag(tag)
    if not revision:
        raise ValueError("revision name is empty")
    out = _without_tag(split, tag)
    return [*out, _target(revision, 0, tag)]


def _largest_remainder(weights: Sequence[int], total: int) -> list[int]:
    """Integers proportional to `weights` summing to exactly `total` (ties: earlier first)."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise ValueError("no weights to spread over")
    shares = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(shares)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        shares[i] += 1
    return shares


def split_for_step(
    serving: Sequence[TrafficTarget], revision: str, tag: str, percent: int
) -> list[TrafficTarget]:
    """One step: the candidate gets `percent`, the previous serving revisions share the rest in
    proportion to what they served. Zero-percent targets keep only when tagged."""
    if not 0 <= percent <= 100:
        raise ValueError(f"step percent must be in 0..100, got {percent}")
    base = with_tagged_candidate(serving, revision, tag)
    old = [i for i, t in enumerate(base) if t.revision != revision and t.percent > 0]
    if not old and percent < 100:
        raise ValueError("no previous revision serves traffic: the candidate has to take 100 %")
    weights = [base[i].percent for i in old]
    shares = dict(zip(old, _largest_remainder(weights, 100 - percent), strict=True)) if old else {}
    out: list[TrafficTarget] = []
    for i, t in enumerate(base):
        if t.revision == revision:
            out.append(_target(revision, percent if t.tag == tag else 0, t.tag))
        else:
            out.append(_target(t.revision, shares.get(i, 0), t.tag))
    out.sort(key=lambda t: t.tag != tag)  # the candidate first, the rest in their serving order
    return [t for t in out if t.percent > 0 or t.tag is not None]


def plan_steps(
    serving: Sequence[TrafficTarget], revision: str, tag: str, plan: TrafficPlan
) -> list[list[TrafficTarget]]:
    """One full split per step of `plan`. At 100 the old revisions drop to 0 % but keep their tags.

    With no previous revision serving traffic (a first deploy) the plan collapses to one step at 100.
    """
    pinned = with_tagged_candidate(serving, revision, tag)
    if not any(t.revision != revision and t.percent > 0 for t in pinned):
        return [split_for_step(serving, revision, tag, 100)]
    steps = [split_for_step(serving, revision, tag, p) for p in plan.steps]
    for step in steps:
        validate_split(step)
    return steps


def rollback_split(
    before: Sequence[TrafficTarget], candidate_revision: str, candidate_tag: str | None
) -> list[TrafficTarget]:
    """The remembered split from before the release, to restore when a gate fails.

    The candidate keeps its tag at 0 %: no traffic, but its tag URL and logs stay reachable for
    debugging. `before` must be pinned (LATEST would route to the failed candidate).
    """
    _require_pinned(before, Stage.ROLLBACK)
    restored = _merge(before)
    if candidate_tag is not None:
        _check_tag(candidate_tag)
        restored = _without_tag(restored, candidate_tag)
        placed = False
        for i, t in enumerate(restored):
            if t.revision == candidate_revision and t.tag is None:
                restored[i] = _target(candidate_revision, t.percent, candidate_tag)
                placed = True
                break
        if not placed:
            restored.append(_target(candidate_revision, 0, candidate_tag))
    validate_split(restored)
    return restored


def latest_serves(split: Sequence[TrafficTarget]) -> list[TrafficTarget]:
    """"Latest revision serves": LATEST=100, every tag kept on a 0 % target of the revision that held it,
    so the next `gcloud run deploy` (without --no-traffic) sends traffic to its new revision."""
    out = [_target(None, 100)]
    out += [_target(t.revision, 0, t.tag) for t in split if t.tag is not None]
    validate_split(out)
    return out


def prune_own_tags(
    split: Sequence[TrafficTarget], keep: int, created: Mapping[str, datetime | None], current_tag: str | None
) -> tuple[list[TrafficTarget], list[str]]:
    """(split, removed tags): stagecheck's own `sc-*` tags beyond the `keep` newest (by the creation of
    the revision they point to; the current candidate's tag counts first) lose their tag, and so does the
    baseline's `sc-base` (it served one release's comparison); a 0 % target left without a tag is dropped,
    a serving one stays untagged. Tags that are not ours are never touched."""
    if keep < 1:
        raise ValueError("keep at least the current candidate's tag (keep >= 1)")
    own = [t for t in split if t.tag is not None and OWN_TAG_RE.match(t.tag)]
    base = [t.tag for t in split if t.tag == BASE_TAG]

    def age_key(t: TrafficTarget) -> tuple[bool, float]:
        when = created.get(t.revision or "")
        return t.tag != current_tag, -(when.timestamp() if when else float("-inf"))

    removed = [t.tag for t in sorted(own, key=age_key)[keep:] if t.tag is not None] + base
    out = [_target(t.revision, t.percent, None if t.tag in removed else t.tag) for t in split]
    return [t for t in out if t.percent > 0 or t.tag is not None], removed


def without_unready(split: Sequence[TrafficTarget], not_ready: set[str]) -> tuple[list[TrafficTarget], list[TrafficTarget]]:
    """(split, dropped): the 0 % targets whose revision is not Ready are dropped — a stale target to a
    failed revision makes Cloud Run fail every later update with that revision's error. A target that
    carries traffic is never dropped here (that would move traffic)."""
    kept = [t for t in split if t.percent > 0 or t.revision is None or t.revision not in not_ready]
    dropped = [t for t in split if t not in kept]
    return kept, dropped


def validate_split(split: Sequence[TrafficTarget]) -> None:
    """Raise ValueError for a split Cloud Run would reject or that would misroute traffic:
    percents outside 0..100 or not summing to 100, duplicate tags, a revision listed twice untagged."""
    problems: list[str] = []
    for t in split:
        if not 0 <= t.percent <= 100:
            problems.append(f"{_name(t)} has {t.percent} %, outside 0..100")
        if t.revision == "":
            problems.append("a target has an empty revision name")
    total = sum(t.percent for t in split)
    if total != 100:
        problems.append(f"percents sum to {total}, not 100")
    tags = [t.tag for t in split if t.tag is not None]
    dup_tags = sorted({tag for tag in tags if tags.count(tag) > 1})
    if dup_tags:
        problems.append(f"duplicate tags: {', '.join(dup_tags)}")
    untagged = [t.revision or LATEST for t in split if t.tag is None]
    dup_revs = sorted({r for r in untagged if untagged.count(r) > 1})
    if dup_revs:
        problems.append(f"duplicate revisions: {', '.join(dup_revs)}")
    if problems:
        raise ValueError(f"invalid traffic split [{describe(split)}]: {'; '.join(problems)}")


def _name(t: TrafficTarget) -> str:
    revision = t.revision or LATEST
    return f"{t.tag} ({revision})" if t.tag else revision


def describe(split: Sequence[TrafficTarget]) -> str:
    """`sc-abc1234 (svc-00002-abc) 10 %, svc-00001-xyz 90 %`."""
    if not split:
        return "(no traffic targets)"
    return ", ".join(f"{_name(t)} {t.percent} %" for t in split)


def serving_revisions(split: Sequence[TrafficTarget]) -> dict[str, int]:
    """Revision -> percent for the revisions that get traffic (LATEST keyed as "LATEST")."""
    out: dict[str, int] = {}
    for t in split:
        if t.percent > 0:
            key = t.revision or LATEST
            out[key] = out.get(key, 0) + t.percent
    return out
