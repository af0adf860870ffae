"""Errors by API (one table: HTTP status -> error class -> sentence and per-API hint), Cloud Run resource
names through the client library's path helpers, and the one Logging query behind filter and link."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
import requests
from google.api_core import exceptions as gexc

from stagecheck.clients.api_errors import describe_api_error
from stagecheck.clients.cloudrun import CloudRun, revision_id, service_id
from stagecheck.errors import BY_HTTP_STATUS, Api, ErrorClass, error_class
from stagecheck.log_query import console_logs_url, revision_filter
from stagecheck.settings import ServiceConfig, Settings


@pytest.mark.parametrize(("exc", "kind"), [
    (gexc.InvalidArgument("bad"), ErrorClass.INVALID),
    (gexc.FailedPrecondition("not yet"), ErrorClass.INVALID),
    (gexc.Unauthenticated("who"), ErrorClass.UNAUTHENTICATED),
    (gexc.PermissionDenied("no"), ErrorClass.FORBIDDEN),
    (gexc.NotFound("gone"), ErrorClass.NOT_FOUND),
    (gexc.ResourceExhausted("quota"), ErrorClass.RATE_LIMITED),
    (gexc.ServiceUnavailable("later"), ErrorClass.UNAVAILABLE),
    (gexc.DeadlineExceeded("late"), ErrorClass.TIMEOUT),
    (gexc.Conflict("etag"), None),
    (gexc.InternalServerError("boom"), None),
])
def test_the_grpc_named_errors_land_in_the_class_of_their_http_status(exc: gexc.GoogleAPICallError,
                                                                     kind: ErrorClass | None) -> None:
    assert error_class(exc.code) is kind


def test_a_logging_403_gets_the_logging_role_and_a_run_403_the_run_role() -> None:
    denied = gexc.PermissionDenied("POST https://logging.googleapis.com/v2/entries:list: denied")
    logging = describe_api_error(denied, "read logs of shop-00002-abc", Api.LOGGING)
    run = describe_api_error(denied, "get service shop", Api.RUN)
    assert logging.message == "read logs of shop-00002-abc: permission denied by the Cloud Logging API (denied)"
    assert logging.hint == "the identity needs roles/logging.viewer on the project"
    assert run.hint is not None and run.hint.startswith("the identity needs roles/run.admin")


def test_errors_outside_the_table_say_what_they_are_without_a_hint() -> None:
    err = describe_api_error(gexc.Conflict("PATCH https://run.googleapis.com/v2/x: etag mismatch"), "update", Api.RUN)
    assert (err.message, err.hint) == ("update: Conflict (etag mismatch)", None)
    unreachable = describe_api_error(requests.exceptions.ConnectionError("refused"), "read logs", Api.LOGGING)
    assert unreachable.message == "read logs: Cloud Logging API unreachable"
    assert set(BY_HTTP_STATUS) == {400, 401, 403, 404, 429, 503, 504}


def test_resource_names_come_from_the_client_librarys_path_helpers() -> None:
    run = CloudRun(Settings(project="proj-1", region="europe-west1", registry="r", services=(ServiceConfig(name="shop"),)))
    assert run.parent == "projects/proj-1/locations/europe-west1"
    assert run.service_path("shop") == "projects/proj-1/locations/europe-west1/services/shop"
    assert run.revision_path("shop", "shop-00002-abc") == (
        "projects/proj-1/locations/europe-west1/services/shop/revisions/shop-00002-abc")
    assert revision_id(run.revision_path("shop", "shop-00002-abc")) == "shop-00002-abc"
    assert revision_id("shop-00002-abc") == "shop-00002-abc" and revision_id("") == ""
    assert service_id(run.service_path("shop")) == "shop"


def test_the_console_link_and_the_api_filter_select_the_same_entries() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    api = revision_filter(project="p", region="europe-west1", service="shop", revision="shop-00002-abc",
                          start=start, end=start.replace(minute=5))
    link = console_logs_url(project="p", region="europe-west1", service="shop", revision="shop-00002-abc")
    console_terms = unquote(link.split(";query=", 1)[1].split("?", 1)[0]).split("\n")
    assert api.split(" AND ") == [*console_terms, 'timestamp>="2026-03-01T12:00:00.000000Z"',
                                  'timestamp<="2026-03-01T12:05:00.000000Z"']
    assert 'resource.labels.revision_name="shop-00002-abc"' in console_terms
