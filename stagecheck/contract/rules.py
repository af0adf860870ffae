"""The rule registry, in the style of oasdiff's `checker/rules.go`: every finding the audit can report,
with oasdiff's id, its level and its one-line text (oasdiff's English message,
`checker/localizations_src/en/messages.yaml`, `%s` filled with back-quoted values as oasdiff prints
them, so a line of oasdiff's ignore file matches our finding too).

Request side is contravariant (the server may accept more, never less), response side covariant (the
server may promise more, never less). `api-contract-removed` is stagecheck's own: the candidate stopped
serving the document the baseline served.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    ERR = "ERR"  # breaks clients
    WARN = "WARN"  # may break clients
    INFO = "INFO"  # not breaking (additions)

    @property
    def rank(self) -> int:
        return {"ERR": 3, "WARN": 2, "INFO": 1}[self.value]


@dataclass(frozen=True)
class Rule:
    id: str
    level: Level
    text: str  # oasdiff's message, %s filled in order

    def render(self, *args: object) -> str:
        return self.text % tuple(f"`{a}`" for a in args)


ERR, WARN, INFO = Level.ERR, Level.WARN, Level.INFO

_RULES = (
    # operations (paths matched ignoring parameter names)
    Rule("api-path-removed-without-deprecation", ERR, "api path removed without deprecation"),
    Rule("api-removed-without-deprecation", ERR, "api removed without deprecation"),
    Rule("api-path-removed-before-sunset", ERR, "api path removed before the sunset date %s"),
    Rule("api-removed-before-sunset", ERR, "api removed before the sunset date %s"),
    Rule("api-path-removed-with-deprecation", INFO, "api path removed with deprecation"),
    Rule("api-removed-with-deprecation", INFO, "api removed with deprecation"),
    Rule("endpoint-added", INFO, "endpoint added"),
    # request parameters
    Rule("new-required-request-parameter", ERR, "added the new required %s request parameter %s"),
    Rule("new-optional-request-parameter", INFO, "added the new optional %s request parameter %s"),
    Rule("request-parameter-became-required", ERR, "the %s request parameter %s became required"),
    Rule("request-parameter-became-optional", INFO, "the %s request parameter %s became optional"),
    Rule("request-parameter-removed", WARN, "deleted the %s request parameter %s"),
    Rule("request-parameter-type-changed", ERR, "for the %s request parameter %s, the %s was changed from %s to %s"),
    Rule("request-parameter-type-generalized", INFO,
         "for the %s request parameter %s, the %s was widened from %s to %s"),
    Rule("request-parameter-enum-value-removed", ERR, "removed the enum value %s from the %s request parameter %s"),
    Rule("request-parameter-enum-value-added", INFO, "added the new enum value %s to the %s request parameter %s"),
    Rule("request-parameter-max-decreased", ERR, "for the %s request parameter %s, the max was decreased from %s to %s"),
    Rule("request-parameter-min-increased", ERR, "for the %s request parameter %s, the min was increased from %s to %s"),
    Rule("request-parameter-max-length-decreased", ERR,
         "for the %s request parameter %s, the maxLength was decreased from %s to %s"),
    Rule("request-parameter-min-length-increased", ERR,
         "for the %s request parameter %s, the minLength was increased from %s to %s"),
    Rule("request-parameter-pattern-added", ERR, "added the pattern %s to the %s request parameter %s"),
    Rule("request-parameter-became-not-nullable", ERR, "the %s request parameter %s became not nullable"),
    # request body
    Rule("request-body-added-required", ERR, "added required request body"),
    Rule("request-body-became-required", ERR, "request body became required"),
    Rule("request-body-media-type-removed", ERR, "removed the media type %s from the request body"),
    Rule("request-body-media-type-added", INFO, "added the media type %s to the request body"),
    Rule("request-body-type-changed", ERR, "the request's body %s changed from %s to %s"),
    Rule("new-required-request-property", ERR, "added the new required request property %s"),
    Rule("new-optional-request-property", INFO, "added the new optional request property %s"),
    Rule("request-property-became-required", ERR, "the request property %s became required"),
    Rule("request-property-became-optional", INFO, "the request property %s became optional"),
    Rule("request-property-removed", WARN, "removed the request property %s"),
    Rule("request-property-type-changed", ERR, "the %s request property %s changed from %s to %s"),
    Rule("request-property-type-generalized", INFO, "the %s request property %s was widened from %s to %s"),
    Rule("request-property-enum-value-removed", ERR, "removed the enum value %s of the request property %s"),
    Rule("request-property-enum-value-added", INFO, "added the new %s enum value to the request property %s"),
    Rule("request-property-max-decreased", ERR, "the %s request property's max was decreased to %s"),
    Rule("request-property-min-increased", ERR, "the %s request property's min was increased to %s"),
    Rule("request-property-max-length-decreased", ERR, "the %s request property's maxLength was decreased to %s"),
    Rule("request-property-min-length-increased", ERR,
         "the %s request property's minLength was increased from %s to %s"),
    Rule("request-property-pattern-added", ERR, "added the pattern %s to the request property %s"),
    Rule("request-property-became-not-nullable", ERR, "the request property %s became not nullable"),
    # responses
    Rule("response-success-status-removed", ERR, "removed the success response with the status %s"),
    Rule("response-success-status-added", INFO, "added the success response with the status %s"),
    Rule("response-media-type-removed", ERR, "removed the media type %s for the response with the status %s"),
    Rule("response-media-type-added", INFO, "added the media type %s for the response with the status %s"),
    Rule("response-body-type-changed", ERR, "the response's body %s changed from %s to %s for status %s"),
    Rule("response-body-became-nullable", ERR, "the response's body became nullable"),
    Rule("response-required-property-removed", ERR,
         "removed the required property %s from the response with the %s status"),
    Rule("response-optional-property-removed", WARN,
         "removed the optional property %s from the response with the %s status"),
    Rule("response-required-property-added", INFO, "added the required property %s to the response with the %s status"),
    Rule("response-optional-property-added", INFO, "added the optional property %s to the response with the %s status"),
    Rule("response-property-became-optional", ERR, "the response property %s became optional for the status %s"),
    Rule("response-property-became-required", INFO, "the response property %s became required for the status %s"),
    Rule("response-property-became-nullable", ERR, "the response property %s became nullable for the status %s"),
    Rule("response-property-type-changed", ERR, "the %s response's property %s changed from %s to %s for status %s"),
    Rule("response-property-type-specialized", INFO,
         "the %s response's property %s was narrowed from %s to %s for status %s"),
    Rule("response-property-enum-value-added", WARN,
         "added the new %s enum value to the %s response property for the response status %s"),
    # stagecheck's own
    Rule("api-contract-removed", ERR, "the candidate no longer serves the API document at %s (HTTP %s)"),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
