"""What the audit reports: each finding (oasdiff's rule id and level, the operation, where in it, the
one-line text) and the audit as a whole, as typed models the JSON report carries."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from stagecheck.contract.rules import RULES, Level


class FailOn(StrEnum):
    ERR = "ERR"  # an ERR finding stops the release (oasdiff's `breaking --fail-on ERR`)
    WARN = "WARN"  # an ERR or WARN finding stops it
    NEVER = "never"  # report only


class Finding(BaseModel):
    id: str  # oasdiff's rule id (checker/rules.go)
    level: Level
    operation: str  # `GET /items/{id}`
    location: str  # `response 200 .price`, `request query limit`, ...
    text: str  # oasdiff's message with back-quoted values
    ignored: bool = False  # accepted in the ignore file

    @property
    def method(self) -> str:
        return self.operation.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.operation.split(" ", 1)[-1]


def finding(rule_id: str, operation: str, location: str, *args: object) -> Finding:
    rule = RULES[rule_id]
    return Finding(id=rule.id, level=rule.level, operation=operation, location=location, text=rule.render(*args))


class ContractAudit(BaseModel):
    """The breaking-changes audit of one release: what was compared and what it found."""

    baseline_url: str | None = None
    candidate_url: str | None = None
    baseline_revision: str | None = None
    fail_on: FailOn = FailOn.ERR
    ignore_file: str | None = None
    operations_compared: int = 0
    findings: list[Finding] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # invalid documents and other reasons the audit is weaker

    def counts(self) -> dict[str, int]:
        out = {level.value: 0 for level in Level}
        for f in self.findings:
            if not f.ignored:
                out[f.level.value] += 1
        return out
