"""Traffic splits: pinning, the tagged candidate, step plans (incl. a randomised property test), rollback."""

from __future__ import annotations

import random

import pytest

from stagecheck.model import TrafficTarget
from stagecheck.settings import TrafficPlan
from stagecheck.traffic import (
    describe,
    latest_serves,
    pin_latest,
    plan_steps,
    prune_own_tags,
    rollback_split,
    serving_revisions,
    split_for_step,
    validate_split,
    with_tagged_candidate,
    without_unready,
)


def T(revision: str | None, percent: int, tag: str | None = None) -> TrafficTarget:
    return TrafficTarget(revision=revision, percent=percent, tag=tag)


def as_tuples(split: list[TrafficTarget]) -> list[tuple[str | None, int, str | None]]:
    return [(t.revision, t.percent, t.tag) for t in split]


# --- pin_latest -------------------------------------------------------------------------------------


def test_pin_latest_replaces_latest_with_the_ready_revision() -> None:
    assert as_tuples(pin_latest([T(None, 100)], "svc-00001-abc")) == [("svc-00001-abc", 100, None)]


def test_pin_latest_merges_latest_with_an_explicit_target_of_the_same_revision() -> None:
    split = [T(None, 60), T("svc-1", 40), T("svc-2", 0, "blue")]
    assert as_tuples(pin_latest(split, "svc-1")) == [("svc-1", 100, None), ("svc-2", 0, "blue")]


def test_pin_latest_merges_an_untagged_share_into_the_tagged_target_of_that_revision() -> None:
    split = [T(None, 100), T("svc-1", 0, "blue")]
    assert as_tuples(pin_latest(split, "svc-1")) == [("svc-1", 100, "blue")]


def test_pin_latest_keeps_a_second_tag_of_a_revision_as_a_tag_only_target() -> None:
    split = [T("svc-1", 100, "blue"), T("svc-1", 0, "green")]
    pinned = pin_latest(split, None)
    assert as_tuples(pinned) == [("svc-1", 100, "blue"), ("svc-1", 0, "green")]
    validate_split(pinned)


def test_pin_latest_drops_untagged_zero_percent_targets() -> None:
    assert as_tuples(pin_latest([T("svc-1", 100), T("svc-0", 0)], None)) == [("svc-1", 100, None)]


def test_pin_latest_without_a_ready_revision_is_an_error() -> None:
    with pytest.raises(ValueError, match="LATEST but the service has no ready revision"):
        pin_latest([T(None, 100)], None)


def test_pin_latest_without_latest_needs_no_revision() -> None:
    assert as_tuples(pin_latest([T("svc-1", 100)], None)) == [("svc-1", 100, None)]
    assert pin_latest([], None) == []


# --- with_tagged_candidate --------------------------------------------------------------------------


def test_candidate_is_added_at_zero_percent_with_its_tag() -> None:
    out = with_tagged_candidate([T("svc-1", 100)], "svc-2", "sc-abc1234")
    assert as_tuples(out) == [("svc-1", 100, None), ("svc-2", 0, "sc-abc1234")]
    validate_split(out)


def test_candidate_tag_is_taken_from_the_target_that_held_it() -> None:
    out = with_tagged_candidate([T("svc-1", 100, "sc-abc1234")], "svc-2", "sc-abc1234")
    assert as_tuples(out) == [("svc-1", 100, None), ("svc-2", 0, "sc-abc1234")]


def test_a_zero_percent_target_that_loses_the_tag_disappears() -> None:
    out = with_tagged_candidate([T("svc-1", 100), T("svc-0", 0, "sc-abc1234")], "svc-2", "sc-abc1234")
    assert as_tuples(out) == [("svc-1", 100, None), ("svc-2", 0, "sc-abc1234")]


def test_candidate_already_serving_gets_the_tag_on_its_target() -> None:
    out = with_tagged_candidate([T("svc-1", 100)], "svc-1", "sc-abc1234")
    assert as_tuples(out) == [("svc-1", 100, "sc-abc1234")]


def test_candidate_needs_a_pinned_split_and_a_valid_tag() -> None:
    with pytest.raises(ValueError, match="LATEST"):
        with_tagged_candidate([T(None, 100)], "svc-2", "sc-abc")
    with pytest.raises(ValueError, match="invalid traffic tag"):
        with_tagged_candidate([T("svc-1", 100)], "svc-2", "Bad_Tag")
    with pytest.raises(ValueError, match="empty"):
        with_tagged_candidate([T("svc-1", 100)], "", "sc-abc")


# --- plan_steps -------------------------------------------------------------------------------------


def test_straight_plan_is_one_step_with_old_tags_kept_at_zero() -> None:
    serving = [T("svc-1", 100, "prev"), T("svc-0", 0, "older")]
    steps = plan_steps(serving, "svc-2", "sc-abc", TrafficPlan(steps=(100,)))
    assert [as_tuples(s) for s in steps] == [
        [("svc-2", 100, "sc-abc"), ("svc-1", 0, "prev"), ("svc-0", 0, "older")]
    ]


def test_untagged_old_revisions_drop_out_at_100() -> None:
    steps = plan_steps([T("svc-1", 100)], "svc-2", "sc-abc", TrafficPlan(steps=(10, 100)))
    assert [as_tuples(s) for s in steps] == [
        [("svc-2", 10, "sc-abc"), ("svc-1", 90, None)],
        [("svc-2", 100, "sc-abc")],
    ]


def test_canary_spreads_the_rest_in_proportion_with_largest_remainder() -> None:
    serving = [T("a", 50), T("b", 30), T("c", 20, "cee")]
    steps = plan_steps(serving, "new", "sc-abc", TrafficPlan(steps=(5, 50, 100)))
    # 95 * (50, 30, 20) / 100 = 47.5, 28.5, 19 -> floors 47, 28, 19 (94), one left to the first .5 (a)
    assert as_tuples(steps[0]) == [("new", 5, "sc-abc"), ("a", 48, None), ("b", 28, None), ("c", 19, "cee")]
    assert as_tuples(steps[1]) == [("new", 50, "sc-abc"), ("a", 25, None), ("b", 15, None), ("c", 10, "cee")]
    assert as_tuples(steps[2]) == [("new", 100, "sc-abc"), ("c", 0, "cee")]


def test_first_deploy_collapses_to_one_step_at_100() -> None:
    steps = plan_steps([], "svc-1", "sc-abc", TrafficPlan(steps=(10, 50, 100)))
    assert [as_tuples(s) for s in steps] == [[("svc-1", 100, "sc-abc")]]


def test_a_small_old_share_can_round_to_zero_and_drops_when_untagged() -> None:
    serving = [T("big", 99), T("small", 1)]
    step = split_for_step(serving, "new", "sc-abc", 90)
    assert as_tuples(step) == [("new", 90, "sc-abc"), ("big", 10, None)]
    validate_split(step)


def test_split_for_step_refuses_a_canary_with_nothing_to_share_with() -> None:
    with pytest.raises(ValueError, match="no previous revision"):
        split_for_step([], "new", "sc-abc", 10)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        split_for_step([T("a", 100)], "new", "sc-abc", 101)


def test_candidate_that_served_with_another_tag_gets_the_step_share_on_the_new_tag() -> None:
    serving = [T("svc-2", 30, "old"), T("svc-1", 70)]
    step = split_for_step(serving, "svc-2", "sc-abc", 50)
    assert as_tuples(step) == [("svc-2", 50, "sc-abc"), ("svc-2", 0, "old"), ("svc-1", 50, None)]
    validate_split(step)


@pytest.mark.parametrize("seed", range(300))
def test_property_every_step_is_valid_and_proportional(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    cuts = sorted(rng.sample(range(1, 100), n - 1))
    percents = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    serving = [T(f"svc-{i:05d}", p, f"t{i}" if rng.random() < 0.4 else None) for i, p in enumerate(percents)]
    serving += [T(f"idle-{i}", 0, f"idle{i}") for i in range(rng.randint(0, 2))]
    plan = TrafficPlan(steps=(*sorted(rng.sample(range(1, 100), rng.randint(0, 4))), 100))
    steps = plan_steps(serving, "cand", "sc-cand", plan)
    assert len(steps) == len(plan.steps)
    for step, p in zip(steps, plan.steps, strict=True):
        validate_split(step)  # sums to 100, unique tags, no duplicate revisions
        assert step[0].revision == "cand" and step[0].tag == "sc-cand" and step[0].percent == p
        rest = 100 - p
        got = {t.revision: t.percent for t in step if t.revision != "cand"}
        for t in serving:
            exact = rest * t.percent / 100
            share = got.get(t.revision, 0)
            assert abs(share - exact) < 1, (t, share, exact)
            if t.tag is not None:
                assert t.revision in got  # tagged targets are kept, even at 0 %
            elif share == 0:
                assert t.revision not in got  # untagged zero-percent targets are dropped


# --- validate / describe / serving / rollback -------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ([T("a", 60), T("b", 30)], "sum to 90"),
        ([T("a", 110), T("b", -10)], "outside 0..100"),
        ([T("a", 50, "x"), T("b", 50, "x")], "duplicate tags: x"),
        ([T("a", 50), T("a", 50)], "duplicate revisions: a"),
        ([], "sum to 0"),
    ],
)
def test_validate_split_rejects(split: list[TrafficTarget], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_split(split)


def test_validate_split_accepts_latest_and_extra_tag_targets() -> None:
    validate_split([T(None, 100)])
    validate_split([T("a", 100), T("a", 0, "blue")])


def test_describe() -> None:
    split = [T("svc-00002-abc", 10, "sc-abc1234"), T("svc-00001-xyz", 90)]
    assert describe(split) == "sc-abc1234 (svc-00002-abc) 10 %, svc-00001-xyz 90 %"
    assert describe([T(None, 100)]) == "LATEST 100 %"
    assert describe([]) == "(no traffic targets)"


def test_serving_revisions_sums_and_skips_zero() -> None:
    split = [T("a", 60), T(None, 30), T("a", 10, "x"), T("b", 0, "y")]
    assert serving_revisions(split) == {"a": 70, "LATEST": 30}


def test_rollback_restores_before_and_keeps_the_candidate_tag_at_zero() -> None:
    before = [T("svc-1", 80), T("svc-0", 20, "prev")]
    out = rollback_split(before, "svc-2", "sc-abc")
    assert as_tuples(out) == [("svc-1", 80, None), ("svc-0", 20, "prev"), ("svc-2", 0, "sc-abc")]


def test_rollback_without_a_tag_is_the_before_split() -> None:
    assert as_tuples(rollback_split([T("svc-1", 100)], "svc-2", None)) == [("svc-1", 100, None)]


def test_rollback_moves_the_candidate_tag_off_another_target() -> None:
    out = rollback_split([T("svc-1", 100, "sc-abc")], "svc-2", "sc-abc")
    assert as_tuples(out) == [("svc-1", 100, None), ("svc-2", 0, "sc-abc")]


def test_rollback_refuses_latest_and_invalid_before() -> None:
    with pytest.raises(ValueError, match="LATEST"):
        rollback_split([T(None, 100)], "svc-2", "sc-abc")
    with pytest.raises(ValueError, match="sum to 50"):
        rollback_split([T("svc-1", 50)], "svc-2", "sc-abc")


# --- release hygiene: only serving targets pinned, latest serves, own tags pruned, unready dropped -------


def test_pin_latest_pins_only_targets_that_carry_a_percentage() -> None:
    split = [T("svc-1", 100), T(None, 0, "head")]
    assert as_tuples(pin_latest(split, "svc-1")) == [("svc-1", 100, None), (None, 0, "head")]
    # a tag-only LATEST target needs no ready revision and does not count as unpinned traffic
    assert as_tuples(pin_latest([T("svc-1", 100), T(None, 0, "head")], None)) == [("svc-1", 100, None), (None, 0, "head")]
    assert as_tuples(with_tagged_candidate([T("svc-1", 100), T(None, 0, "head")], "svc-2", "sc-abc1234")) == [
        ("svc-1", 100, None), (None, 0, "head"), ("svc-2", 0, "sc-abc1234")]


def test_latest_serves_keeps_every_tag_at_zero_percent() -> None:
    final = latest_serves([T("svc-2", 100, "sc-abc1234"), T("svc-1", 0, "prev"), T("svc-0", 0, "blue")])
    assert as_tuples(final) == [(None, 100, None), ("svc-2", 0, "sc-abc1234"), ("svc-1", 0, "prev"),
                                ("svc-0", 0, "blue")]
    assert as_tuples(latest_serves([T("svc-2", 100)])) == [(None, 100, None)]


def test_prune_own_tags_keeps_the_newest_and_never_foreign_tags() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    split = [T("r5", 100, "sc-5555555"), T("r4", 0, "sc-4444444"), T("r3", 0, "sc-3333333"),
             T("r2", 0, "sc-2222222"), T("r1", 0, "sc-1111111"), T("r1", 0, "blue"), T("r0", 0, "sc-mine")]
    created = {f"r{i}": t0 + timedelta(minutes=i) for i in range(6)}
    pruned, removed = prune_own_tags(split, 3, created, "sc-5555555")
    assert removed == ["sc-2222222", "sc-1111111"]
    assert as_tuples(pruned) == [("r5", 100, "sc-5555555"), ("r4", 0, "sc-4444444"), ("r3", 0, "sc-3333333"),
                                 ("r1", 0, "blue"), ("r0", 0, "sc-mine")]
    # the current candidate's tag counts first even when its revision's time is unknown; a serving
    # target that loses its tag stays, untagged
    pruned, removed = prune_own_tags([T("old", 100, "sc-aaaaaaa"), T("new", 0, "sc-bbbbbbb")], 1, {},
                                     "sc-bbbbbbb")
    assert removed == ["sc-aaaaaaa"] and as_tuples(pruned) == [("old", 100, None), ("new", 0, "sc-bbbbbbb")]
    with pytest.raises(ValueError, match="keep"):
        prune_own_tags(split, 0, created, None)


def test_without_unready_drops_only_zero_percent_targets_of_unready_revisions() -> None:
    split = [T("good", 100), T("failed", 0, "sc-1234567"), T(None, 0, "head"), T("sick", 0, "blue")]
    kept, dropped = without_unready(split, {"failed", "sick"})
    assert as_tuples(kept) == [("good", 100, None), (None, 0, "head")]
    assert as_tuples(dropped) == [("failed", 0, "sc-1234567"), ("sick", 0, "blue")]
    kept, dropped = without_unready([T("serving-but-unready", 100)], {"serving-but-unready"})
    assert as_tuples(kept) == [("serving-but-unready", 100, None)] and dropped == []
