"""The flow against private services: ID-token probes, probes.auth = "none", and the LB audience."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures_sandbox import FAST_POLL
from tests.pipeline.test_e2e import baseline, created, run_flow, serving  # noqa: F401 (created: a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

LB_HOST = "https://shop.staging.example"
SMOKE = """import os, sys, urllib.request
request = urllib.request.Request(os.environ["STAGECHECK_BASE_URL"] + "/health",
                                 headers={"Authorization": "Bearer " + os.environ["STAGECHECK_ID_TOKEN"]})
with urllib.request.urlopen(request, timeout=10) as answer:
    sys.exit(0 if answer.status == 200 else 1)
"""


def with_probe_settings(config: Path, **settings: str) -> Path:
    """Add keys to the [probes] table the scenario wrote."""
    lines = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    config.write_text(config.read_text().replace("[probes]\n", "[probes]\n" + lines, 1))
    return config


def no_token_status(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=10, trust_env=False).status_code


async def test_a_private_service_validates_with_id_token_probes_and_the_lb_audience_is_honoured(
    prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any  # noqa: F811
) -> None:
    service = created("priv")
    baseline(run_clients, service, sample_image.digest_ref)
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    assert no_token_status(svc.uri) == 403  # private: the Cloud Run default
    svc.custom_audiences = [LB_HOST]  # how a load-balancer host is accepted as an audience
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)

    scenario.add_service("svc")
    # a smoke command reaches the private service with the ID token the run hands it
    scenario.write("smoke.py", SMOKE)
    config = with_probe_settings(scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]"),
                                 lb_audience=LB_HOST)
    config.write_text(config.read_text() + f"[[services.smoke]]\nname = \"private-get\"\n"
                                           f"command = '{sys.executable} smoke.py'\n")
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "pass", report["reasons"]
    for stage in ("probe-tagged", "probe-serving"):
        evidence = [e["data"] for e in run.stage(service, stage)["evidence"] if e["kind"] == "http"]
        assert evidence and all(d["attempts"][-1]["status"] == 200 for d in evidence)
    assert run.stage(service, "smoke")["status"] == "PASS"
    new_rev = report["revision"]["name"]
    assert serving(run_clients, service) == {new_rev: 100}
    assert no_token_status(svc.uri) == 403  # still private: the probes got in with tokens
    raw = (scenario.root / "reports" / f"{service}-latest.json").read_text()
    assert "eyJ" not in raw and "Bearer" not in raw  # no token in the report

    # an LB audience the service does not list: the LB probe gets 401 and the run says why
    scenario.write("svc/VERSION", "2\n")
    config = with_probe_settings(scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]"),
                                 lb_audience="https://not-listed.example")
    scenario.commit("second")
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "probe-serving"
    by_kind = {e["data"]["url_kind"]: e["data"] for e in run.stage(service, "probe-serving")["evidence"]
               if e["kind"] == "http"}
    assert by_kind["service"]["status"] == "PASS"
    assert by_kind["lb"]["status"] == "FAIL" and by_kind["lb"]["attempts"][-1]["status"] == 401
    assert len(by_kind["lb"]["attempts"]) == 1  # not a cold start: not retried
    assert "audience https://not-listed.example was refused" in by_kind["lb"]["reason"]
    assert report["rollback"]["performed"] and report["rollback"]["ok"]
    assert serving(run_clients, service) == {new_rev: 100}


async def test_auth_none_on_a_private_service_fails_naming_the_invoker_role(
    prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any  # noqa: F811
) -> None:
    service = created("noauth")
    before = baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = with_probe_settings(scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]"),
                                 auth="none")
    scenario.commit()
    run = await run_flow(scenario, config)
    report = run.report(service)
    assert report["verdict"] == "fail" and report["decided_by"] == "probe-tagged"
    stage = run.stage(service, "probe-tagged")
    attempts = stage["evidence"][0]["data"]["attempts"]
    assert [a["status"] for a in attempts] == [403]
    assert "roles/run.invoker" in stage["summary"] and "private" in stage["summary"]
    assert any("roles/run.invoker" in r for r in report["reasons"])
    assert serving(run_clients, service) == {before: 100}  # traffic never moved


async def test_a_public_service_validates_with_auth_none(
    prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any  # noqa: F811
) -> None:
    service = created("public")
    baseline(run_clients, service, sample_image.digest_ref)
    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.invoker_iam_disabled = True
    run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    scenario.add_service("svc")
    config = with_probe_settings(scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]"),
                                 auth="none")
    scenario.commit()
    run = await run_flow(scenario, config)
    assert run.report(service)["verdict"] == "pass", run.report(service)["reasons"]
    # the release kept the service's own setting (the whole Service is sent back on update)
    after = run_clients.services.get_service(name=run_clients.service_name(service))
    assert after.invoker_iam_disabled
    assert no_token_status(after.uri) == 200
