"""Switches for the Cloud Run rules whose public sources are unsure: one value per plausible behaviour.

The sandbox is never kinder than Google Cloud; where no public source settles what Cloud Run does, each
plausible behaviour is a value here (README, "Unsure rules"), set at run time with
`PUT /sandbox/v1/fidelity`, and the pipeline's tests run against each. The first value of each switch is
the default.

Not a switch (reported twice): an update whose mask does not name `template`, or that has no mask, and whose
body carries a template naming an existing revision is a 409 "Revision named '…' with different configuration
already exists." even when that template is the one read back (googleapis/google-cloud-python#11870 =
googleapis/python-run#123: a traffic-only change; googleapis/google-cloud-python#14259: a
`scaling.minInstanceCount` mask).

- `same_revision_resent` — an update whose mask names `template`, naming an existing revision with the same
  configuration. `no_new_revision` (inference from gcloud's `client.knative.dev/nonce`, which it adds "to force
  a new revision") or `conflict` (409, as the reports above show for a template that was not changed).
- `no_mask` — an update without `update_mask`. `replace`: the body replaces the resource (what gcloud and the
  temporal-auto-scaled-workers#77 report suggest); `populated`: only the populated fields change (AIP-134).
- `unknown_mask_path` — `reject` (400 naming `update_mask`) or `ignore` (the path changes nothing).
- `etag_mismatch` — `aborted` (409 ABORTED, AIP-154 since 2021) or `failed_precondition` (400
  FAILED_PRECONDITION, AIP-154 before 2021).
- `stale_target` — an update whose traffic names a revision that failed. `sync_400`: refused on the call;
  `operation_error`: accepted, its operation ends with code 13 "Revision '…' is not ready and cannot serve
  traffic." (the Terraform report's shape).
- `terminal_after_failed_revision` — after a revision failed, an update that makes no new revision (a restoring
  traffic change). `stays_failed`: the service's terminal condition stays failed until a good revision exists
  and the operation ends with the failed revision's error (code 13) even though its traffic was applied (as a
  Knative service stays `Ready False RevisionFailed` while its latest created revision failed:
  Harald-U/knative-handson-workshop docs/7-Debugging.md); `clears`: the operation succeeds.
- `tag_audience` — which ID-token audience a tag URL accepts. `service_url`: the service URL (the default URL
  "always remains an acceptable audience"); `tag_url`: the tag URL itself. No source says either.
- `expired_token` — an ID token whose `exp` has passed. `reject`: 401 at once (google-auth's `verify_token`
  defaults to `clock_skew_in_seconds=0`, googleapis/google-auth-library-python#894); `grace`: accepted up to
  EXPIRED_TOKEN_GRACE_S past `exp`, as verifiers allowing clock skew do (the Java `IdTokenVerifier`'s
  `DEFAULT_TIME_SKEW_SECONDS`). Which Cloud Run's front end does is not documented.
- `cold_request` — a request that finds no instance ready (a cold start). `hold_then_429`: held up to the
  service's cold-start hold, then 429 "no available instance" (503 when the start failed); `hold_until_served`:
  held until an instance serves it, up to the revision's request timeout (`template.timeout`). An inference
  either way: no source describes a cold request's answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

EXPIRED_TOKEN_GRACE_S = 300  # `expired_token="grace"`: a token this long past `exp` is still accepted


class Fidelity(BaseModel):
    """The current value of each unsure rule (defaults first)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    same_revision_resent: Literal["no_new_revision", "conflict"] = "no_new_revision"
    no_mask: Literal["replace", "populated"] = "replace"
    unknown_mask_path: Literal["reject", "ignore"] = "reject"
    etag_mismatch: Literal["aborted", "failed_precondition"] = "aborted"
    stale_target: Literal["sync_400", "operation_error"] = "sync_400"
    terminal_after_failed_revision: Literal["stays_failed", "clears"] = "stays_failed"
    tag_audience: Literal["service_url", "tag_url"] = "service_url"
    expired_token: Literal["reject", "grace"] = "reject"
    cold_request: Literal["hold_then_429", "hold_until_served"] = "hold_then_429"

    def update(self, changes: dict[str, object]) -> Fidelity:
        """A copy with `changes` applied (validated: unknown switches and values are errors)."""
        return Fidelity.model_validate({**self.model_dump(), **changes})
