"""LogStore: its indexes, time bounds and cursors give exactly what a brute-force filter gives."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.errors import ApiError
from sandbox.logfilter import compile_filter
from sandbox.logstore import LogStore, container_entry, request_entry

PROJECT = "p"
BASE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def populated_store(count: int, seed: int = 7) -> LogStore:
    rng = random.Random(seed)
    store = LogStore(PROJECT)
    for n in range(count):
        service = f"svc{rng.randrange(3)}"
        revision = f"{service}-0000{rng.randrange(3)}"
        at = BASE + timedelta(seconds=rng.randrange(600))  # out of order, many ties
        if rng.random() < 0.3:
            entry = request_entry(
                project=PROJECT, location="l", service=service, revision=revision, method="GET", url=f"/r/{n}",
                status=rng.choice([200, 404, 500, 503]), latency_s=rng.random(), timestamp=at,
            )  # fmt: skip
        else:
            severity = rng.choice(["DEBUG", "INFO", "WARNING", "ERROR"])
            line = f'{{"severity": "{severity}", "message": "m{n}"}}' if rng.random() < 0.5 else f"text {n}"
            entry = container_entry(
                project=PROJECT, location="l", service=service, revision=revision, stream="stdout", line=line,
                timestamp=at,
            )  # fmt: skip
        store.append(entry)
    return store


def all_pages(store: LogStore, filter_: str, order_by: str, page_size: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page, token = store.list_entries(
            resource_names=[f"projects/{PROJECT}"], filter_=filter_, order_by=order_by, page_size=page_size,
            page_token=token,
        )  # fmt: skip
        found.extend(page)
        if token is None:
            return found


def brute_force(store: LogStore, filter_: str, descending: bool) -> list[str]:
    everything = all_pages(store, "", "timestamp asc", 1000)
    keep = compile_filter(filter_)
    ids = [e["insertId"] for e in everything if keep(e)]
    return ids[::-1] if descending else ids


@pytest.mark.parametrize(
    "filter_",
    [
        'resource.labels.revision_name="svc1-00002"',
        "resource.labels.revision_name=SVC1-00002 AND severity>=WARNING",
        'resource.labels.service_name="svc0" httpRequest.status>=500',
        '(resource.labels.revision_name="svc0-00001" OR resource.labels.revision_name="svc2-00000") -textPayload:1',
        'resource.labels.revision_name=("svc0-00001" OR "nope")',
        'timestamp>="2026-11-27T12:03:00Z" AND timestamp<"2026-11-27T12:05:00.000000+0000"',
        'resource.labels.service_name="svc2" AND timestamp>"2026-11-27T12:09:00Z"',
        "severity=ERROR OR httpRequest.status=404",
        'resource.labels.revision_name="no-such-revision"',
    ],
)
@pytest.mark.parametrize("order_by", ["timestamp asc", "timestamp desc"])
def test_paged_listing_equals_brute_force(filter_: str, order_by: str) -> None:
    store = populated_store(600)

    paged = [e["insertId"] for e in all_pages(store, filter_, order_by, page_size=7)]

    assert paged == brute_force(store, filter_, order_by.endswith("desc"))


def test_ties_keep_arrival_order_and_everything_is_listed() -> None:
    store = populated_store(600)
    listed = all_pages(store, "", "timestamp asc", 1000)
    keys = [(e["timestamp"], e["insertId"]) for e in listed]
    assert len(listed) == len(store) == 600
    assert keys == sorted(keys)  # insertIds are zero-padded arrival numbers in this store


def test_append_fills_ids_and_timestamps_and_leaves_the_argument_alone() -> None:
    store = LogStore(PROJECT)
    raw: dict[str, Any] = {
        "logName": "projects/p/logs/x",
        "textPayload": "hi",
        "timestamp": "2026-11-27T13:00:00+01:00",
    }
    store.append(raw)
    raw["textPayload"] = "changed later"

    (stored,), _ = store.list_entries(resource_names=["projects/p"])

    assert stored["textPayload"] == "hi"
    assert stored["timestamp"] == "2026-11-27T12:00:00.000000Z"
    assert stored["insertId"] and stored["receiveTimestamp"].endswith("Z")
    assert "insertId" not in raw and raw["timestamp"] == "2026-11-27T13:00:00+01:00"
    stored["textPayload"] = "a reader's change"  # pages are copies
    assert store.list_entries(resource_names=["projects/p"])[0][0]["textPayload"] == "hi"
    with pytest.raises(ValueError, match="logName"):
        store.append({"textPayload": "no log name"})
    with pytest.raises(ValueError, match="timestamp"):
        store.append({"logName": "projects/p/logs/x", "timestamp": "yesterday"})


def test_concurrent_appends_while_listing() -> None:
    store = LogStore(PROJECT)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(1500):
                store.append(container_entry(
                    project=PROJECT, location="l", service="s", revision=name, stream="stdout", line=f"{name} {n}",
                ))  # fmt: skip
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        store.list_entries(
            resource_names=["projects/p"], filter_="resource.labels.revision_name=r1", page_size=100
        )
    for thread in threads:
        thread.join()

    listed = all_pages(store, "", "timestamp asc", 1000)
    assert errors == []
    assert len(listed) == len({e["insertId"] for e in listed}) == 6000


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"resource_names": ["projects/other"]}, 403, None),
        ({"resource_names": ["organizations/1"]}, 400, "resource_names"),
        ({"resource_names": []}, 400, "resource_names"),
        ({"page_size": -1}, 400, "page_size"),
        ({"order_by": "insertId"}, 400, "order_by"),
        ({"page_token": "!!"}, 400, "page_token"),
        ({"filter_": "severity>=LOUD"}, 400, "filter"),
    ],
)
def test_bad_requests(kwargs: dict[str, Any], status: int, field: str | None) -> None:
    store = LogStore(PROJECT)
    arguments: dict[str, Any] = {"resource_names": [f"projects/{PROJECT}"], **kwargs}
    with pytest.raises(ApiError) as caught:
        store.list_entries(**arguments)
    assert caught.value.http_status == status
    assert caught.value.field == field


def test_page_token_of_the_other_order_is_rejected() -> None:
    store = populated_store(20)
    _, token = store.list_entries(resource_names=["projects/p"], page_size=5)
    assert token is not None
    with pytest.raises(ApiError) as caught:
        store.list_entries(resource_names=["projects/p"], order_by="timestamp desc", page_token=token)
    assert caught.value.field == "page_token"
