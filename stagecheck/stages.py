"""The stage vocabulary: every stage a validation can record, in the order a run meets them (the
report's table of contents). A `StrEnum`: a member *is* its string, so reports, JSON and the
`StageResult.name` field keep the plain names ("probe-tagged", ...)."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    CHECKOUT = "checkout"  # the tree of the requested commit, for this run (in place or a per-run worktree)
    SYNTAX = "syntax"  # the repository's Python and config files parse (once per run)
    RECOVER = "recover"  # a rollout record a killed release left is recovered first (the recorded split restored)
    LOCK = "lock"  # one validation per service at a time (the service's concurrency slot)
    INSPECT = "inspect"  # the service as it serves now (before anything changes)
    BUILD = "build"  # the image builds for Cloud Run's platform
    PUSH = "push"  # the image is in the registry, pinned by digest
    DEPLOY = "deploy"  # a new revision, no traffic, with a tag; Ready
    PROBE_TAGGED = "probe-tagged"  # the candidate answers on its tag URL before any traffic
    CONTRACT = "contract"  # the candidate's API contract (OpenAPI) against the serving revision's, before any traffic
    TRAFFIC = "traffic"  # one step of the traffic plan, verified against what serves
    PROBE_SERVING = "probe-serving"  # the service / LB URLs answer after each step
    BAKE = "bake"  # the canary hold / release bake: probes and logs watched for a while
    SMOKE = "smoke"  # optional user commands against the released revision
    LOGS = "logs"  # the revision's logs, compared with the previous revision's
    RELEASE = "release"  # a passed release leaves the split as a person expects
    ROLLBACK = "rollback"  # traffic restored after a failed gate (or a failed deploy cleaned up)
    ROLLOUT_RECORD = "rollout-record"  # the record of a release that could not be cleared (recovery will act on it)
