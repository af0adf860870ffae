"""FaultInjector semantics, its error responses, and the /sandbox/v1/faults admin API over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.faults import FaultInjector, FieldError, canonical_method
from tests.sandbox.logging_server import LoggingSandbox, serve_logging


def test_count_is_consumed_then_calls_proceed() -> None:
    faults = FaultInjector()
    faults.add("Services.GetService", count=2, status=503)

    taken = [faults.take("Services.GetService") for _ in range(3)]

    assert [t.status if t else None for t in taken] == [503, 503, None]
    assert faults.snapshot() == []


def test_short_name_matches_the_full_method_and_back() -> None:
    faults = FaultInjector()
    faults.add("GetService", status=404)
    faults.add("Services.ListServices", status=500)

    assert faults.snapshot()[0]["method"] == "Services.GetService"
    assert faults.take("Services.DeleteService") is None
    taken = faults.take("Services.GetService")
    assert taken is not None and taken.status == 404
    listed = faults.take("ListServices")
    assert listed is not None and listed.status == 500


def test_until_cleared_and_clear_by_method() -> None:
    faults = FaultInjector()
    faults.add("proxy.service.shop", count=-1, status=503)
    faults.add("Revisions.GetRevision", status=500)

    for _ in range(5):
        taken = faults.take("proxy.service.shop")
        assert taken is not None and taken.status == 503
    assert faults.clear("proxy.service.shop") == 1
    assert faults.take("proxy.service.shop") is None
    assert [f["method"] for f in faults.snapshot()] == ["Revisions.GetRevision"]
    assert faults.clear() == 1 and faults.snapshot() == []


def test_faults_for_one_method_apply_in_order() -> None:
    faults = FaultInjector()
    faults.add("GetOperation", status=503)
    faults.add("GetOperation", status=429, count=2)

    statuses = [getattr(faults.take("Operations.GetOperation"), "status", None) for _ in range(4)]

    assert statuses == [503, 429, 429, None]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "Services.Teleport", "status": 500}, "method"),
        ({"method": "proxy.svc", "status": 500}, "method"),
        ({"method": "GetService", "status": 500, "count": 0}, "count"),
        ({"method": "GetService", "status": 500, "count": -2}, "count"),
        ({"method": "GetService", "status": 399}, "status"),
        ({"method": "GetService", "status": 600}, "status"),
        ({"method": "GetService", "status": True}, "status"),
        ({"method": "GetService", "latency_s": -1.0}, "latency_s"),
        ({"method": "GetService"}, "status"),  # neither an error nor a delay
    ],
)
def test_bad_faults_are_rejected_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    faults = FaultInjector()
    method = kwargs.pop("method")
    with pytest.raises(FieldError) as caught:
        faults.add(method, **kwargs)
    assert caught.value.field == field
    assert faults.snapshot() == []


async def test_api_method_fault_is_a_google_json_error() -> None:
    faults = FaultInjector()
    faults.add("Services.CreateService", status=409, message="Resource 'shop' already exists.")

    response = await faults.apply("Services.CreateService")

    assert response is not None and response.status_code == 409
    assert response.headers["content-type"].startswith("application/json")
    body = json.loads(bytes(response.body))
    assert body == {
        "error": {"code": 409, "message": "Resource 'shop' already exists.", "status": "ALREADY_EXISTS"}
    }
    assert await faults.apply("Services.CreateService") is None


async def test_proxy_fault_is_a_plain_text_page() -> None:
    faults = FaultInjector()
    faults.add("proxy.tag.shop.canary", status=503)

    response = await faults.apply("proxy.tag.shop.canary")

    assert response is not None and response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")
    assert "Service Unavailable" in bytes(response.body).decode()
    assert await faults.apply("proxy.tag.shop.other") is None


async def test_latency_only_fault_delays_then_proceeds() -> None:
    faults = FaultInjector()
    faults.add("proxy.lb.shop", latency_s=0.2)

    started = time.monotonic()
    response = await faults.apply("proxy.lb.shop")

    assert response is None
    assert 0.2 <= time.monotonic() - started < 2.0


def test_canonical_method_accepts_every_documented_key() -> None:
    assert canonical_method("ListLogEntries") == "LoggingServiceV2.ListLogEntries"
    assert canonical_method("DeleteRevision") == "Revisions.DeleteRevision"
    for key in ("proxy.service.shop", "proxy.tag.shop.canary", "proxy.lb.shop-2"):
        assert canonical_method(key) == key


# --- admin API over HTTP ---------------------------------------------------------------------------


@pytest.fixture
def admin() -> Iterator[tuple[LoggingSandbox, httpx.Client]]:
    with serve_logging("p") as sandbox, httpx.Client(base_url=sandbox.endpoint) as http:
        yield sandbox, http


def test_admin_api_adds_lists_and_clears(admin: tuple[LoggingSandbox, httpx.Client]) -> None:
    sandbox, http = admin

    created = http.post("/sandbox/v1/faults", json={"method": "GetService", "status": 503, "count": 3})
    http.post("/sandbox/v1/faults", json={"method": "proxy.service.shop", "latency_s": 0.5, "count": -1})
    listed = http.get("/sandbox/v1/faults").json()["faults"]

    assert created.status_code == 201
    assert created.json() == {
        "method": "Services.GetService",
        "count": 3,
        "status": 503,
        "latency_s": 0.0,
        "message": None,
    }
    assert [(f["method"], f["count"]) for f in listed] == [
        ("Services.GetService", 3),
        ("proxy.service.shop", -1),
    ]
    assert sandbox.faults.take("Services.GetService") is not None  # the same injector the APIs consult

    assert http.delete("/sandbox/v1/faults", params={"method": "GetService"}).json() == {"cleared": 1}
    assert [f["method"] for f in http.get("/sandbox/v1/faults").json()["faults"]] == ["proxy.service.shop"]
    assert http.delete("/sandbox/v1/faults").json() == {"cleared": 1}
    assert http.get("/sandbox/v1/faults").json() == {"faults": []}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "GetService", "status": 503, "colour": "red"}, "colour"),
        ({"method": "GetService", "status": "503"}, "status"),
        ({"method": "GetService", "status": 200}, "status"),
        ({"method": "GetService", "status": 503, "count": 0}, "count"),
        ({"method": "GetService", "status": 503, "latency_s": "1s"}, "latency_s"),
        ({"status": 503}, "method"),
        ({"method": "Nope", "status": 503}, "method"),
    ],
)
def test_admin_api_rejects_bad_input_naming_the_field(
    admin: tuple[LoggingSandbox, httpx.Client], body: dict[str, Any], field: str
) -> None:
    sandbox, http = admin

    answer = http.post("/sandbox/v1/faults", json=body)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0]["fieldViolations"][0]["field"] == field
    assert sandbox.faults.snapshot() == []


def test_admin_api_rejects_malformed_json(admin: tuple[LoggingSandbox, httpx.Client]) -> None:
    _, http = admin

    not_json = http.post("/sandbox/v1/faults", content=b"{nope", headers={"content-type": "application/json"})
    not_object = http.post("/sandbox/v1/faults", json=[1, 2])
    bad_clear = http.delete("/sandbox/v1/faults", params={"method": "Nope"})

    assert not_json.status_code == not_object.status_code == bad_clear.status_code == 400
    assert not_json.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_undone_is_only_for_get_operation_and_takes_no_status() -> None:
    faults = FaultInjector()
    faults.add("GetOperation", count=-1, undone=True)
    taken = faults.take("Operations.GetOperation")
    assert taken is not None and taken.undone and taken.status is None
    for method, status in (("Services.GetService", None), ("Operations.GetOperation", 503)):
        with pytest.raises(FieldError) as info:
            faults.add(method, undone=True, status=status)
        assert info.value.field == "undone"
