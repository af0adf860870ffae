"""The breaking-changes audit, pure: one test per rule (exactly the expected rule id for each kind of
change), none for changes a client cannot see, the normalisation, the ignore file, the policy and the
validation. `oasdiff` cross-checks our breaking findings when it is on PATH (skipped otherwise)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from stagecheck.contract.audit import audit, judge
from stagecheck.contract.compare import compare
from stagecheck.contract.findings import FailOn
from stagecheck.contract.ignore import apply_ignore
from stagecheck.contract.normalize import operations
from stagecheck.contract.rules import RULES, Level
from stagecheck.contract.validation import parse, problems
from stagecheck.model import Status

Doc = dict[str, Any]


def base_doc() -> Doc:
    """A small pydantic-style API: /items/{item_id} GET and DELETE, /items POST, /health GET."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "items", "version": "1.0.0", "description": "the items API"},
        "paths": {
            "/items/{item_id}": {
                "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "operationId": "get_item", "summary": "Get an item", "tags": ["items"],
                    "parameters": [
                        {"name": "fields", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["short", "full"]}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                     "maximum": 100}},
                    ],
                    "responses": {
                        "200": {"description": "the item",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}},
                        "404": {"description": "not found"},
                    },
                },
                "delete": {"responses": {"204": {"description": "deleted"}}},
            },
            "/items": {
                "post": {
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ItemCreate"}}}},
                    "responses": {"201": {"description": "created", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Item"}}}}},
                },
            },
            "/health": {"get": {"responses": {"200": {"description": "ok", "content": {
                "application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}}}},
        },
        "components": {"schemas": {
            "Item": {"type": "object", "title": "Item", "required": ["id", "name", "price", "kind"],
                     "properties": {
                         "id": {"type": "string"},
                         "name": {"type": "string", "description": "display name"},
                         "price": {"type": "number"},
                         "kind": {"type": "string", "enum": ["book", "toy"]},
                         "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                         "tags": {"type": "array", "items": {"type": "string"}},
                     }},
            "ItemCreate": {"type": "object", "required": ["name"],
                           "properties": {
                               "name": {"type": "string", "maxLength": 80},
                               "price": {"type": "number", "minimum": 0, "maximum": 10000},
                               "kind": {"type": "string", "enum": ["book", "toy"]},
                               "sku": {"type": "string"},
                           }},
        }},
    }


def ids(base: Doc, candidate: Doc, today: date | None = None) -> list[str]:
    return [f.id for f in compare(operations(base), operations(candidate), today=today)]


def changed(edit: Callable[[Doc], Any]) -> Doc:
    doc = base_doc()
    edit(doc)
    return doc


def item(doc: Doc) -> Doc:
    return doc["components"]["schemas"]["Item"]


def create(doc: Doc) -> Doc:
    return doc["components"]["schemas"]["ItemCreate"]


def get_item(doc: Doc) -> Doc:
    return doc["paths"]["/items/{item_id}"]["get"]


# ---- no finding: nothing a client can see changed -------------------------------------------------------

def _reordered(doc: Doc) -> None:
    doc["paths"] = dict(reversed(list(doc["paths"].items())))
    item(doc)["properties"] = dict(reversed(list(item(doc)["properties"].items())))
    item(doc)["required"] = list(reversed(item(doc)["required"]))
    get_item(doc)["parameters"].reverse()


def _descriptions(doc: Doc) -> None:
    doc["info"]["description"] = "all about items, rewritten"
    item(doc)["properties"]["name"]["description"] = "the name people see"
    get_item(doc)["summary"] = "Read one item"
    get_item(doc)["responses"]["200"]["description"] = "here it is"
    item(doc)["properties"]["price"]["examples"] = [9.99]
    get_item(doc)["x-internal-owner"] = "team-a"


def _renamed_path_parameter(doc: Doc) -> None:
    path = doc["paths"].pop("/items/{item_id}")
    path["parameters"][0]["name"] = "id"
    doc["paths"]["/items/{id}"] = path


def _schema_name_churn(doc: Doc) -> None:
    schemas = doc["components"]["schemas"]
    schemas["Item-Output"] = schemas.pop("Item")
    schemas["Item-Input"] = schemas.pop("ItemCreate")
    text = json.dumps(doc).replace("#/components/schemas/ItemCreate", "#/components/schemas/Item-Input")
    doc.clear()
    doc.update(json.loads(text.replace('"#/components/schemas/Item"', '"#/components/schemas/Item-Output"')))


def _nullable_spellings(doc: Doc) -> None:  # anyOf [X, null] -> type [X, null] (3.1) and nullable (3.0)
    item(doc)["properties"]["note"] = {"type": ["string", "null"]}


def _inlined_and_all_of(doc: Doc) -> None:  # the same Item, written as allOf of two parts, inlined
    whole = item(doc)
    parts = [{"type": "object", "required": ["id", "name"],
              "properties": {k: whole["properties"][k] for k in ("id", "name")}},
             {"type": "object", "required": ["price", "kind"],
              "properties": {k: v for k, v in whole["properties"].items() if k not in ("id", "name")}}]
    get_item(doc)["responses"]["200"]["content"]["application/json"]["schema"] = {"allOf": parts}


@pytest.mark.parametrize("edit", [_reordered, _descriptions, _renamed_path_parameter, _schema_name_churn,
                                  _nullable_spellings, _inlined_and_all_of])
def test_no_finding_for_changes_clients_cannot_see(edit: Callable[[Doc], None]) -> None:
    assert ids(base_doc(), base_doc()) == []
    assert ids(base_doc(), changed(edit)) == []


def test_nullable_spellings_of_openapi_3_0_and_3_1_are_equal() -> None:
    spellings: list[Doc] = [{"type": "string", "nullable": True}, {"type": ["string", "null"]},
                 {"anyOf": [{"type": "string"}, {"type": "null"}]}, {"oneOf": [{"type": "null"}, {"type": "string"}]}]
    def spelled(spelling: Doc) -> Doc:
        return changed(lambda d: item(d)["properties"].__setitem__("note", spelling))

    docs = [spelled(s) for s in spellings]
    for doc in docs[1:]:
        assert ids(docs[0], doc) == []
    plain = changed(lambda d: item(d)["properties"].__setitem__("note", {"type": "string"}))
    assert ids(plain, docs[0]) == ["response-property-became-nullable"] * 2  # GET and POST return an Item


def test_recursive_schema_terminates_and_compares() -> None:
    def recursive(doc: Doc) -> None:
        item(doc)["properties"]["children"] = {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}
    base = changed(recursive)
    assert ids(base, copy.deepcopy(base)) == []
    cand = copy.deepcopy(base)
    item(cand)["required"].remove("price")
    assert ids(base, cand) == ["response-property-became-optional"] * 2


# ---- exactly the expected rule for each kind of change --------------------------------------------------

CASES: list[tuple[str, Callable[[Doc], Any]]] = [
    ("api-removed-without-deprecation", lambda d: d["paths"]["/items/{item_id}"].pop("delete")),
    ("api-path-removed-without-deprecation", lambda d: d["paths"].pop("/health")),
    ("endpoint-added", lambda d: d["paths"]["/health"].__setitem__(
        "head", {"responses": {"200": {"description": "ok"}}})),
    ("new-required-request-parameter", lambda d: get_item(d)["parameters"].append(
        {"name": "tenant", "in": "header", "required": True, "schema": {"type": "string"}})),
    ("new-optional-request-parameter", lambda d: get_item(d)["parameters"].append(
        {"name": "lang", "in": "query", "schema": {"type": "string"}})),
    ("request-parameter-became-required", lambda d: get_item(d)["parameters"][0].__setitem__("required", True)),
    ("request-parameter-removed", lambda d: get_item(d)["parameters"].pop(0)),
    ("request-parameter-type-changed", lambda d: get_item(d)["parameters"][1]["schema"].__setitem__(
        "type", "string")),
    ("request-parameter-enum-value-removed", lambda d: get_item(d)["parameters"][0]["schema"]["enum"].pop()),
    ("request-parameter-enum-value-added", lambda d: get_item(d)["parameters"][0]["schema"]["enum"].append("x")),
    ("request-parameter-max-decreased", lambda d: get_item(d)["parameters"][1]["schema"].__setitem__("maximum", 50)),
    ("request-parameter-min-increased", lambda d: get_item(d)["parameters"][1]["schema"].__setitem__("minimum", 5)),
    ("request-parameter-pattern-added", lambda d: get_item(d)["parameters"][0]["schema"].__setitem__(
        "pattern", "^[a-z]+$")),
    ("new-required-request-property", lambda d: (create(d)["properties"].__setitem__("owner", {"type": "string"}),
                                                 create(d)["required"].append("owner"))),
    ("new-optional-request-property", lambda d: create(d)["properties"].__setitem__("color", {"type": "string"})),
    ("request-property-became-required", lambda d: create(d)["required"].append("price")),
    ("request-property-removed", lambda d: create(d)["properties"].pop("sku")),
    ("request-property-type-changed", lambda d: create(d)["properties"]["price"].__setitem__("type", "string")),
    ("request-property-type-generalized", lambda d: create(d)["properties"]["sku"].__setitem__(
        "type", ["string", "integer"])),
    ("request-property-enum-value-removed", lambda d: create(d)["properties"]["kind"]["enum"].remove("toy")),
    ("request-property-max-decreased", lambda d: create(d)["properties"]["price"].__setitem__("maximum", 100)),
    ("request-property-min-increased", lambda d: create(d)["properties"]["price"].__setitem__("minimum", 1)),
    ("request-property-max-length-decreased", lambda d: create(d)["properties"]["name"].__setitem__("maxLength", 40)),
    ("request-property-pattern-added", lambda d: create(d)["properties"]["sku"].__setitem__("pattern", "^[A-Z]{3}$")),
    ("request-body-became-required", lambda d: d["paths"]["/items"]["post"]["requestBody"].__setitem__(
        "required", True) or d["paths"]["/items/{item_id}"]["delete"].__setitem__("requestBody", {"content": {}})),
    ("request-body-media-type-removed", lambda d: d["paths"]["/items"]["post"]["requestBody"]["content"].__setitem__(
        "application/xml", {"schema": {"type": "string"}})),
    ("request-body-type-changed", lambda d: d["paths"]["/items"]["post"]["requestBody"]["content"][
        "application/json"].__setitem__("schema", {"type": "array", "items": {"type": "string"}})),
]


def _response_cases() -> list[tuple[str, Callable[[Doc], Any], int]]:
    """Response changes to Item show on both operations that return it (GET 200 and POST 201)."""
    return [
        ("response-required-property-removed", lambda d: (item(d)["properties"].pop("price"),
                                                          item(d)["required"].remove("price")), 2),
        ("response-optional-property-removed", lambda d: item(d)["properties"].pop("note"), 2),
        ("response-optional-property-added", lambda d: item(d)["properties"].__setitem__(
            "color", {"type": "string"}), 2),
        ("response-required-property-added", lambda d: (item(d)["properties"].__setitem__(
            "color", {"type": "string"}), item(d)["required"].append("color")), 2),
        ("response-property-became-optional", lambda d: item(d)["required"].remove("price"), 2),
        ("response-property-became-nullable", lambda d: item(d)["properties"]["price"].__setitem__(
            "type", ["number", "null"]), 2),
        ("response-property-type-changed", lambda d: item(d)["properties"]["price"].__setitem__("type", "string"), 2),
        ("response-property-enum-value-added", lambda d: item(d)["properties"]["kind"]["enum"].append("game"), 2),
        ("response-success-status-removed", lambda d: get_item(d)["responses"].pop("200"), 1),
        ("response-success-status-added", lambda d: get_item(d)["responses"].__setitem__(
            "202", {"description": "accepted"}), 1),
        ("response-media-type-removed", lambda d: get_item(d)["responses"]["200"]["content"].pop(
            "application/json"), 1),
        ("response-body-type-changed", lambda d: get_item(d)["responses"]["200"]["content"][
            "application/json"].__setitem__("schema", {"type": "string"}), 1),
    ]


@pytest.mark.parametrize(("rule", "edit"), CASES, ids=[c[0] for c in CASES])
def test_each_change_gives_exactly_its_rule(rule: str, edit: Callable[[Doc], Any]) -> None:
    if rule == "request-body-media-type-removed":  # the media type exists in the base, not in the candidate
        assert ids(changed(edit), base_doc()) == [rule]
        return
    if rule == "request-body-became-required":  # an optional body that became required (the DELETE's)
        base = changed(lambda d: d["paths"]["/items/{item_id}"]["delete"].__setitem__("requestBody", {
            "content": {"application/json": {"schema": {"type": "object"}}}}))
        cand = copy.deepcopy(base)
        cand["paths"]["/items/{item_id}"]["delete"]["requestBody"]["required"] = True
        assert ids(base, cand) == [rule]
        return
    assert ids(base_doc(), changed(edit)) == [rule]


@pytest.mark.parametrize(("rule", "edit", "times"), _response_cases(), ids=[c[0] for c in _response_cases()])
def test_each_response_change_gives_exactly_its_rule(rule: str, edit: Callable[[Doc], Any], times: int) -> None:
    assert ids(base_doc(), changed(edit)) == [rule] * times


def test_levels_and_ids_are_oasdiffs() -> None:
    assert RULES["api-removed-without-deprecation"].level is Level.ERR
    assert RULES["response-optional-property-removed"].level is Level.WARN
    assert RULES["response-property-enum-value-added"].level is Level.WARN
    assert RULES["request-parameter-removed"].level is Level.WARN
    assert RULES["endpoint-added"].level is Level.INFO
    assert RULES["new-optional-request-property"].level is Level.INFO
    assert len(RULES) >= 25


def test_location_and_text_name_the_property() -> None:
    cand = changed(lambda d: item(d)["required"].remove("price"))
    found = compare(operations(base_doc()), operations(cand))
    get = next(f for f in found if f.operation == "GET /items/{item_id}")
    assert get.location == "response 200 .price"
    assert get.text == "the response property `price` became optional for the status `200`"
    nested = changed(lambda d: item(d)["properties"]["tags"]["items"].__setitem__("type", "integer"))
    found = compare(operations(base_doc()), operations(nested))
    assert [f.location for f in found] == ["response 200 .tags[]", "response 201 .tags[]"]
    assert found[0].text == ("the `application/json` response's property `tags/items` changed from `string` to "
                             "`integer` for status `200`")


# ---- deprecation and sunset --------------------------------------------------------------------------------

def _deprecated(sunset: str | None) -> Doc:
    def edit(doc: Doc) -> None:
        op = doc["paths"]["/items/{item_id}"]["delete"]
        op["deprecated"] = True
        if sunset:
            op["x-sunset"] = sunset
    return changed(edit)


def _without_delete(doc: Doc) -> Doc:
    out = copy.deepcopy(doc)
    out["paths"]["/items/{item_id}"].pop("delete")
    return out


def test_deprecated_operation_past_its_sunset_is_removed_without_err() -> None:
    base = _deprecated("2026-01-31")
    found = compare(operations(base), operations(_without_delete(base)), today=date(2026, 6, 1))
    assert [(f.id, f.level) for f in found] == [("api-removed-with-deprecation", Level.INFO)]


def test_deprecated_operation_removed_before_its_sunset_is_err() -> None:
    base = _deprecated("2026-12-31")
    assert ids(base, _without_delete(base), today=date(2026, 6, 1)) == ["api-removed-before-sunset"]
    plain = ids(base_doc(), _without_delete(base_doc()), today=date(2026, 6, 1))
    assert plain == ["api-removed-without-deprecation"]


# ---- ignore file, policy, validation ------------------------------------------------------------------------

def test_ignore_file_in_oasdiffs_format_marks_the_finding() -> None:
    cand = _without_delete(base_doc())
    found = compare(operations(base_doc()), operations(cand))
    lines = ["# accepted changes", " - 07.12.2026 DELETE /items/{item_id} api removed without deprecation (ticket 42)"]
    assert [f.ignored for f in apply_ignore(found, lines)] == [True]
    other = ["DELETE /items/{other} api removed without deprecation", "GET /items/{item_id} api removed without deprecation"]
    assert [f.ignored for f in apply_ignore(found, other)] == [False]


@pytest.mark.parametrize(("fail_on", "status"), [(FailOn.ERR, Status.FAIL), (FailOn.WARN, Status.FAIL),
                                                 (FailOn.NEVER, Status.WARN)])
def test_policy_on_an_err_finding(fail_on: FailOn, status: Status) -> None:
    assert judge(audit(base_doc(), _without_delete(base_doc()), fail_on=fail_on))[0] is status


def test_policy_on_warn_and_info_findings() -> None:
    warn = changed(lambda d: item(d)["properties"].pop("note"))
    assert judge(audit(base_doc(), warn, fail_on=FailOn.ERR))[0] is Status.WARN
    assert judge(audit(base_doc(), warn, fail_on=FailOn.WARN))[0] is Status.FAIL
    info = changed(lambda d: item(d)["properties"].__setitem__("color", {"type": "string"}))
    status, summary = judge(audit(base_doc(), info))
    assert status is Status.PASS and "2 INFO" in summary
    ignored = audit(base_doc(), _without_delete(base_doc()),
                    ignore_lines=["DELETE /items/{item_id} api removed without deprecation"])
    status, summary = judge(ignored)
    assert status is Status.PASS and "1 ignored" in summary


def test_findings_of_an_invalid_document_warn_instead_of_failing() -> None:
    result = audit(base_doc(), _without_delete(base_doc()), problems=["candidate: paths: bad"])
    status, summary = judge(result)
    assert status is Status.WARN and "not gating" in summary


def test_validation_of_3_0_and_3_1_documents() -> None:
    assert problems(base_doc()) == []
    v30 = base_doc()
    v30["openapi"] = "3.0.3"
    item(v30)["properties"]["note"] = {"type": "string", "nullable": True}
    assert problems(v30) == []
    broken = base_doc()
    del broken["info"]["version"]
    assert problems(broken) and "version" in problems(broken)[0]
    assert problems({"swagger": "2.0"}) == ["not an OpenAPI 3.0/3.1 document (openapi: missing)"]
    external = changed(lambda d: get_item(d)["responses"]["200"]["content"]["application/json"].__setitem__(
        "schema", {"$ref": "http://127.0.0.1:9/schema.json"}))
    assert "not followed" in problems(external)[0]
    assert parse(b"<html>") [0] is None and parse(b"[1]")[1] == "not a JSON object"


# ---- cross-check with oasdiff, when it is installed ----------------------------------------------------------

@pytest.mark.skipif(shutil.which("oasdiff") is None, reason="oasdiff is not on PATH (no package ships it)")
@pytest.mark.parametrize(("rule", "edit"), CASES[:3] + CASES[5:9], ids=[c[0] for c in CASES[:3] + CASES[5:9]])
def test_breaking_findings_match_oasdiff(tmp_path: Path, rule: str, edit: Callable[[Doc], Any]) -> None:
    base, cand = tmp_path / "base.json", tmp_path / "cand.json"
    base.write_text(json.dumps(base_doc()))
    cand.write_text(json.dumps(changed(edit)))
    out = subprocess.run(["oasdiff", "breaking", str(base), str(cand), "--format", "json"], capture_output=True,
                         text=True, timeout=60, check=False)
    theirs = sorted({c["id"] for c in json.loads(out.stdout or "[]")})
    ours = sorted({f.id for f in audit(base_doc(), changed(edit)).findings if f.level is not Level.INFO})
    assert ours == theirs
