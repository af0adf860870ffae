"""The `contract` stage around the audit, pure: what each answer of the two revisions decides, the
report's "Breaking changes audit" section and JSON, the `sc-base` tag's split, the settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stagecheck.contract.findings import ContractAudit, FailOn
from stagecheck.contract.stage import Served, decide_contract
from stagecheck.model import ServiceReport, StageResult, Status, TrafficTarget, Verdict
from stagecheck.report import render_markdown, to_json
from stagecheck.settings import ConfigError, Settings, check_sources, load_settings
from stagecheck.traffic import BASE_TAG, prune_own_tags, validate_split, with_tag

VARIANTS = Path(__file__).resolve().parents[1] / "examples" / "sample-service" / "app" / "openapi"
BASE_URL, CAND_URL = "https://sc-base---svc-x.a.run.app", "https://sc-abc1234---svc-x.a.run.app"


def served(url: str, status: int | None, variant: str | None = None, body: bytes = b"") -> Served:
    data = (VARIANTS / f"{variant}.json").read_bytes() if variant else body
    return Served(url=f"{url}/openapi.json", status=status, body=data, described=f"GET {url} -> {status}")


def decide(base: Served, cand: Served, fail_on: FailOn = FailOn.ERR,
           ignore: tuple[str, ...] = ()) -> tuple[StageResult, ContractAudit | None]:
    return decide_contract(base, cand, path="/openapi.json", baseline_revision="svc-00001-abc", fail_on=fail_on,
                           ignore_lines=ignore)


def test_identical_contract_passes_with_no_finding() -> None:
    result, audit = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, "same-contract"))
    assert result.status is Status.PASS and audit is not None
    assert audit.findings == [] and audit.operations_compared == 4


def test_removed_operation_fails_naming_the_rule() -> None:
    result, _ = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, "removed-operation"))
    assert result.status is Status.FAIL
    assert "api-removed-without-deprecation: DELETE /items/{item_id}" in result.summary
    assert result.criteria[0].status is Status.FAIL
    assert [e.data["status"] for e in result.evidence if e.kind == "http"] == [200, 200]


def test_ignored_removal_passes_and_the_policy_never_only_warns() -> None:
    line = "DELETE /items/{item_id} api removed without deprecation"
    result, audit = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, "removed-operation"), ignore=(line,))
    assert result.status is Status.PASS and "1 ignored" in result.summary
    assert audit is not None and [f.ignored for f in audit.findings] == [True]
    result, _ = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, "removed-operation"), FailOn.NEVER)
    assert result.status is Status.WARN


def test_baseline_without_a_document_skips_saying_so() -> None:
    result, audit = decide(served(BASE_URL, 404), served(CAND_URL, 200, "base"))
    assert result.status is Status.SKIP and audit is None
    assert "serves no API document at /openapi.json (HTTP 404)" in result.summary
    html, _ = decide(served(BASE_URL, 200, body=b"<html>app</html>"), served(CAND_URL, 200, "base"))
    assert html.status is Status.SKIP and "not an OpenAPI document" in html.summary


def test_candidate_404_where_the_baseline_had_one_is_api_contract_removed() -> None:
    result, audit = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 404))
    assert result.status is Status.FAIL and audit is not None
    assert [(f.id, f.level.value) for f in audit.findings] == [("api-contract-removed", "ERR")]


def test_unreadable_answers_fail_the_stage() -> None:
    assert decide(served(BASE_URL, 500), served(CAND_URL, 200, "base"))[0].status is Status.FAIL
    assert decide(served(BASE_URL, 200, "base"), served(CAND_URL, None))[0].status is Status.FAIL


def test_invalid_document_warns_and_the_release_goes_on() -> None:
    result, audit = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, "invalid"))
    assert result.status is Status.WARN and "version" in result.summary and audit is not None
    assert audit.problems == ["candidate: info: 'version' is a required property"]
    garbage, _ = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, body=b"{not json"))
    assert garbage.status is Status.WARN


def _report(stage: StageResult, audit: ContractAudit | None) -> ServiceReport:
    now = datetime.now(UTC)
    return ServiceReport(service="svc", project="p", region="r", verdict=Verdict.FAIL, stages=[stage],
                         started_at=now, finished_at=now, contract=audit)


def test_report_lists_each_finding_outside_tables_and_json_carries_them() -> None:
    result, audit = decide(served(BASE_URL, 200, "base"), served(CAND_URL, 200, "price-optional"))
    md = render_markdown(_report(result, audit))
    section = md.split("## Breaking changes audit\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- **ERR**")]
    assert lines == [
        "- **ERR** `response-property-became-optional` · `GET /items/{item_id}` · `response 200 .price` — "
        "the response property `price` became optional for the status `200`",
        "- **ERR** `response-property-became-optional` · `POST /items` · `response 201 .price` — "
        "the response property `price` became optional for the status `201`",
    ]
    assert not any(line.startswith("|") for line in section.splitlines())
    data = json.loads(to_json(_report(result, audit)))
    assert [(f["id"], f["level"], f["location"]) for f in data["contract"]["findings"]] == [
        ("response-property-became-optional", "ERR", "response 200 .price"),
        ("response-property-became-optional", "ERR", "response 201 .price")]


def test_report_says_when_the_audit_did_not_run() -> None:
    md = render_markdown(_report(StageResult(name="deploy", status=Status.FAIL, summary="x"), None))
    assert "_Not run: the release stopped before the audit" in md


def test_base_tag_moves_no_traffic_and_is_removed_after_the_release() -> None:
    split = [TrafficTarget(revision="svc-1", percent=100), TrafficTarget(revision="svc-2", percent=0, tag="sc-abc1234"),
             TrafficTarget(revision="svc-0", percent=0, tag=BASE_TAG)]
    tagged = with_tag(split, "svc-1", BASE_TAG)
    validate_split(tagged)
    assert [(t.revision, t.percent, t.tag) for t in tagged] == [
        ("svc-1", 100, None), ("svc-2", 0, "sc-abc1234"), ("svc-1", 0, BASE_TAG)]
    pruned, removed = prune_own_tags(tagged, keep=2, created={}, current_tag="sc-abc1234")
    assert removed == [BASE_TAG] and all(t.tag != BASE_TAG for t in pruned)
    assert [(t.revision, t.percent) for t in pruned if t.percent] == [("svc-1", 100)]


def test_contract_settings_and_their_bad_input(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "Dockerfile").write_text("FROM scratch\n")
    config = tmp_path / "stagecheck.toml"
    config.write_text('project = "staging-proj"\nregion = "europe-west1"\nregistry = "r"\n[[services]]\nname = "svc"\n'
                      'source_dir = "svc"\n[services.contract]\nfail_on = "WARN"\nignore_file = "accepted.txt"\n')
    settings: Settings = load_settings(config)
    contract = settings.services[0].contract
    assert (contract.openapi_path, contract.fail_on, contract.ignore_file) == (
        "/openapi.json", FailOn.WARN, tmp_path / "accepted.txt")
    with pytest.raises(ConfigError, match=r"services\.0\.contract\.ignore_file"):
        check_sources(settings)
    config.write_text(config.read_text().replace('"WARN"', '"sometimes"'))
    with pytest.raises(ConfigError, match="fail_on"):
        load_settings(config)


async def test_document_fetch_rides_out_cold_start_answers_and_caps_the_size() -> None:
    """A real HTTP server on 127.0.0.1: 503 twice (a cold start), then the document."""
    import asyncio

    import httpx

    from stagecheck.clients.documents import fetch

    answers = [b"503 Service Unavailable", b"503 Service Unavailable", b"200 OK"]
    body = (VARIANTS / "base.json").read_bytes()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        status = answers.pop(0) if answers else b"200 OK"
        payload = body if status == b"200 OK" else b"{}"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(trust_env=False) as http:
        got = await fetch(http, f"http://127.0.0.1:{port}/openapi.json", retry_statuses=(503, 429), deadline_s=20)
        assert (got.status, got.body, got.attempts) == (200, body, 3)
        big = await fetch(http, f"http://127.0.0.1:{port}/openapi.json", max_bytes=100)
        assert big.status is None and big.error is not None and "larger than" in big.error


async def test_tag_urls_closed_by_ingress_warn_instead_of_reading_a_404_as_no_document() -> None:
    from stagecheck.settings import ContractSettings, ProbePolicy
    from tasks.contract import audit_contract

    result, audit = await audit_contract.fn(
        None, None, None, "svc", ContractSettings(), ProbePolicy(), baseline_revision="svc-00001-abc",  # type: ignore[arg-type]
        candidate_url=CAND_URL, audience=None, timeout_s=5, ingress="INGRESS_TRAFFIC_INTERNAL_ONLY")
    assert result.status is Status.WARN and audit is None
    assert result.summary.startswith("not audited: the tag URLs are closed by ingress internal")
    first, _ = await audit_contract.fn(None, None, None, "svc", ContractSettings(), ProbePolicy(),  # type: ignore[arg-type]
                                       baseline_revision=None, candidate_url=CAND_URL, audience=None, timeout_s=5)
    assert first.status is Status.SKIP and "first deployment" in first.summary
