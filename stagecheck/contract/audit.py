"""Audit two parsed documents and decide the stage by the `fail_on` policy, pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stagecheck.contract.compare import compare
from stagecheck.contract.findings import ContractAudit, FailOn
from stagecheck.contract.ignore import apply_ignore
from stagecheck.contract.normalize import operations
from stagecheck.contract.rules import Level
from stagecheck.model import Status


def audit(base: dict[str, Any], candidate: dict[str, Any], *, fail_on: FailOn = FailOn.ERR,
          ignore_lines: Iterable[str] = (), problems: Iterable[str] = ()) -> ContractAudit:
    """Compare two parsed documents; the findings in document order, ignored ones marked."""
    leaves: dict[Any, Any] = {}
    base_ops, cand_ops = operations(base, leaves), operations(candidate, leaves)
    findings = apply_ignore(compare(base_ops, cand_ops), ignore_lines)
    return ContractAudit(fail_on=fail_on, operations_compared=len(base_ops.keys() & cand_ops.keys()),
                         findings=findings, problems=list(problems))


def judge(result: ContractAudit) -> tuple[Status, str]:
    """The stage's status and summary. FAIL: a finding at or above `fail_on` that is not ignored; WARN: an
    ERR/WARN finding the policy lets through, or a document that is not valid OpenAPI (its findings
    cannot be trusted to gate); PASS otherwise (INFO findings are additions)."""
    counts = result.counts()
    ignored = sum(1 for f in result.findings if f.ignored)
    parts = [f"{n} {level}" for level, n in counts.items() if n]
    said = ", ".join(parts) if parts else "no change"
    said += f" ({ignored} ignored)" if ignored else ""
    said = f"{said} in {result.operations_compared} shared operations"
    if result.problems:
        return Status.WARN, f"{said}; not gating: {result.problems[0]}"
    breaking = counts["ERR"] + (counts["WARN"] if result.fail_on is FailOn.WARN else 0)
    if result.fail_on is not FailOn.NEVER and breaking:
        worst = next(f for f in result.findings if not f.ignored and f.level.rank >= Level[result.fail_on].rank)
        return Status.FAIL, f"{said}; {worst.id}: {worst.operation}: {worst.text}"
    if counts["ERR"] or counts["WARN"]:
        return Status.WARN, f"{said} (fail_on = {result.fail_on.value})"
    return Status.PASS, said
