"""The `contract` stage's decision, pure: from what the serving revision and the candidate answered at
the document path, the stage result and the audit.

    baseline 404/410, or not an OpenAPI document      -> SKIP (nothing to compare), saying so
    baseline any other answer, or none                -> FAIL (the stage could not decide)
    candidate 404/410 where the baseline had one      -> the ERR finding `api-contract-removed`
    candidate any other non-200 answer, or none       -> FAIL (could not decide)
    a document that is not valid OpenAPI 3.0/3.1      -> WARN, compared where it parses, not gating
    otherwise                                         -> the findings, judged by `fail_on`
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagecheck.contract.audit import audit, judge
from stagecheck.contract.findings import ContractAudit, FailOn, finding
from stagecheck.contract.validation import parse, problems
from stagecheck.model import Criterion, Evidence, StageResult, Status
from stagecheck.stages import Stage

GONE = (404, 410)


@dataclass(frozen=True)
class Served:
    """One revision's answer at the document path."""

    url: str
    status: int | None  # None: no HTTP answer
    body: bytes
    described: str  # `GET url -> HTTP 200, 1234 bytes in 12 ms (1 attempt(s))`


def _result(status: Status, summary: str, fail_on: FailOn, served: Sequence[Served],
            notes: Sequence[str] = ()) -> StageResult:
    evidence = [Evidence(kind="http", summary=s.described, data={"url": s.url, "status": s.status,
                                                                "bytes": len(s.body)}) for s in served]
    evidence += [Evidence(kind="note", summary=note) for note in notes]
    return StageResult(name=Stage.CONTRACT, status=status, summary=summary, evidence=evidence,
                       criteria=[Criterion(name="API contract kept", stage=Stage.CONTRACT, status=status,
                                           expected=f"no change at or above {fail_on.value} (fail_on)"
                                           if fail_on is not FailOn.NEVER else "report only (fail_on = never)",
                                           observed=summary, evidence=[s.described for s in served])])


def decide_contract(base: Served, cand: Served, *, path: str, baseline_revision: str, fail_on: FailOn,
                    ignore_lines: Sequence[str] = (), ignore_file: str | None = None, notes: Sequence[str] = ()
                    ) -> tuple[StageResult, ContractAudit | None]:
    """The stage result and, when anything was compared, the audit (see the module's table)."""
    where = f"{baseline_revision} (serving)"
    if base.status in GONE:
        return _result(Status.SKIP, f"{where} serves no API document at {path} (HTTP {base.status}): nothing to "
                                    "compare", fail_on, [base], notes), None
    if base.status != 200:
        return _result(Status.FAIL, f"could not read the API document of {where}: {base.described}", fail_on,
                       [base], notes), None
    base_doc, why = parse(base.body)
    if base_doc is None or "openapi" not in base_doc:
        return _result(Status.SKIP, f"{where} answers {path} with something that is not an OpenAPI document "
                                    f"({why or 'no openapi field'}): nothing to compare", fail_on, [base], notes), None
    facts = {"baseline_url": base.url, "candidate_url": cand.url, "baseline_revision": baseline_revision,
             "ignore_file": ignore_file}
    result = ContractAudit(fail_on=fail_on, **facts)
    if cand.status in GONE:
        result.findings = [finding("api-contract-removed", f"GET {path}", "document", path, cand.status)]
    elif cand.status != 200:
        return _result(Status.FAIL, f"could not read the candidate's API document: {cand.described}", fail_on,
                       [base, cand], notes), None
    else:
        cand_doc, why = parse(cand.body)
        if cand_doc is None:
            result.problems = [f"candidate: {why}"]
        else:
            found = [f"baseline: {p}" for p in problems(base_doc)] + [f"candidate: {p}" for p in problems(cand_doc)]
            result = audit(base_doc, cand_doc, fail_on=fail_on, ignore_lines=ignore_lines, problems=found
                           ).model_copy(update=facts)
    status, summary = judge(result)
    return _result(status, summary, fail_on, [base, cand], notes), result
