"""The pure parts of the deployments: targets, merge events, the failure message, the process
handling of `stagecheck serve`, and the notify-merge command's input checks (no server needed)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.commands import notify_merge
from deployments.definitions import (
    Environment,
    Target,
    config_service_names,
    service_names,
)
from deployments.events import MERGE_EVENT, REF_LABEL, MergeEvent, MergeEventError
from deployments.serve import Layout, prefect_env, stop_worker
from flows.params import ValidationRequest
from localenv.processes import ProcessRecord, is_running, start_ticks
from stagecheck.model import Rollback, ServiceReport, Verdict
from stagecheck.notify import failure_summary
from tasks.notify import post_summary, resolve_webhook_url


def test_schedule_and_merge_trigger_are_on_for_staging_and_off_for_production_unless_said() -> None:
    staging = Target(name="staging")
    production = Target(name="prod", environment=Environment.PRODUCTION)
    assert staging.schedule_active and staging.triggered_by_merges
    assert not production.schedule_active and not production.triggered_by_merges
    forced = Target(name="prod", environment=Environment.PRODUCTION, schedule_enabled=True, merge_trigger=True)
    assert forced.schedule_active and forced.triggered_by_merges
    assert not Target(name="s", schedule_enabled=False).schedule_active


def test_merge_parameters_keep_the_defaults_and_template_sha_and_ref() -> None:
    target = Target(name="staging", request=ValidationRequest(config="c.toml", sandbox=True, dry_run=True))
    # a trigger sets only the commit and ref; the server fills the rest in from the deployment's defaults
    assert set(target.merge_parameters()) == {"git_sha", "git_ref"}
    request = {**target.parameters(), **target.merge_parameters()}
    assert request["git_sha"] == "{{ event.payload.sha }}" and request["git_ref"] == "{{ event.payload.ref }}"
    assert request["config"] == "c.toml" and request["sandbox"] is True and request["dry_run"] is True
    assert target.parameters()["git_sha"] is None
    assert target.merge_match() == {"prefect.resource.id": "git.repo.*"}
    only_main = Target(name="s", merge_repo="acme/shop", merge_branch="main")
    assert only_main.merge_match() == {"prefect.resource.id": "git.repo.acme.shop", REF_LABEL: "main"}


def test_service_names_come_from_the_request_or_the_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('project = "x"\n[[services]]\nname = "api"\n[[services]]\nname = "web"\n')
    assert config_service_names(config) == ["api", "web"]
    assert service_names(Target(name="s", request=ValidationRequest(config=str(config))).definition()) == ["api", "web"]
    assert service_names(Target(name="s", request=ValidationRequest(config=str(config), services=["web"]))
                         .definition()) == ["web"]
    assert config_service_names(tmp_path / "missing.toml") == []
    (tmp_path / "broken.toml").write_text("[[services]\n")
    assert config_service_names(tmp_path / "broken.toml") == []


def test_merge_event_input_is_checked_and_shaped_for_the_trigger() -> None:
    event = MergeEvent.parse(" ABCDEF1234567 ", "refs/heads/main", "acme/shop")
    assert event.sha == "abcdef1234567"
    assert event.resource() == {"prefect.resource.id": "git.repo.acme.shop", "prefect.resource.name": "acme/shop",
                                REF_LABEL: "main"}
    assert event.payload() == {"sha": "abcdef1234567", "ref": "refs/heads/main", "repo": "acme/shop"}
    for sha, ref, repo, field in (("xyz", "main", "r", "--sha"), ("abcdef1", "a..b", "r", "--ref"),
                                  ("abcdef1", "main", "no spaces", "--repo"), ("abcdef1", "", "r", "--ref")):
        with pytest.raises(MergeEventError, match=field):
            MergeEvent.parse(sha, ref, repo)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--sha", "nothex", "--ref", "main", "--repo", "r", "--api-url", "http://127.0.0.1:9/api"], "--sha"),
    (["--sha", "abcdef1", "--ref", "main", "--repo", "r", "--api-url", "ftp://x"], "not an http"),
    (["--sha", "abcdef1"], "required"),
])
def test_notify_merge_refuses_bad_input_with_exit_2(argv: list[str], fragment: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert notify_merge.main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_notify_merge_needs_an_api(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # notify-merge reads the active profile as Prefect does: no API there either (a session-wide test server of
    # another test, prefect_test_harness, sets it in this process's settings)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert notify_merge.main(["--sha", "abcdef1", "--ref", "main", "--repo", "r"]) == 2
    assert "PREFECT_API_URL" in capsys.readouterr().err


def test_notify_merge_reports_an_unreachable_api_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.server.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    assert notify_merge.main(["--sha", "abcdef1", "--ref", "main", "--repo", "r", "--api-url", url]) == 1
    err = capsys.readouterr().err
    assert "did not take the event" in err and "Traceback" not in err
    assert MERGE_EVENT == "stagecheck.git.merged"


def _report(**overrides: Any) -> ServiceReport:
    now = datetime.now(UTC)
    fields: dict[str, Any] = dict(
        service="shop", project="acme-staging", region="europe-west1", verdict=Verdict.FAIL,
        decided_by="probe-serving", reasons=["GET https://user:hunter22@shop.example/health -> 503 (token=abc123def)"],
        git_sha="0123456789abcdef0123456789abcdef01234567", started_at=now, finished_at=now,
        flow_run_url="http://127.0.0.1:4200/runs/flow-run/42", rollback=Rollback(needed=True, performed=True,
                                                                                 message="traffic restored"))
    fields.update(overrides)
    return ServiceReport(**fields)


def test_failure_summary_is_slack_shaped_short_and_carries_no_secret() -> None:
    hook = "https://hooks.slack.com/services/T0/B0/s3cr3tt0k3n"
    body = failure_summary(_report(reasons=[f"posted to {hook}: GET https://user:hunter22@x/ -> 503 token=abc123def"]),
                           secret_values=[hook])
    text = body["text"]
    assert text.startswith("stagecheck: FAIL for shop at gate probe-serving (commit 0123456789ab)")
    assert "<http://127.0.0.1:4200/runs/flow-run/42|flow run>" in text
    facts = body["stagecheck"]
    assert facts["verdict"] == "fail" and facts["service"] == "shop" and facts["failed_gate"] == "probe-serving"
    assert facts["flow_run_url"] == "http://127.0.0.1:4200/runs/flow-run/42"
    titles = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert titles["Failed gate"] == "probe-serving" and titles["Service"] == "shop"
    dumped = json.dumps(body)
    for secret in ("s3cr3tt0k3n", "hunter22", "abc123def"):
        assert secret not in dumped


def test_failure_summary_cuts_long_reasons() -> None:
    body = failure_summary(_report(reasons=["x" * 5000], flow_run_url=None))
    assert len(body["text"]) < 500 and "flow run>" not in body["text"]
    assert body["stagecheck"]["flow_run_url"] is None


def test_webhook_url_prefers_the_secret_block_then_the_env() -> None:
    env = {"STAGECHECK_WEBHOOK_URL": " http://127.0.0.1:9/env "}
    assert resolve_webhook_url("http://127.0.0.1:9/block", env) == "http://127.0.0.1:9/block"
    assert resolve_webhook_url(None, env) == "http://127.0.0.1:9/env"
    assert resolve_webhook_url(None, {}) is None
    assert resolve_webhook_url("  ", {}) is None


@pytest.fixture
def flaky_receiver() -> Iterator[tuple[str, list[int]]]:
    """Answers with the queued statuses in turn, then 200."""
    queue: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = queue.pop(0) if queue else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/hook", queue
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_post_summary_retries_5xx_and_gives_up_on_4xx(flaky_receiver: tuple[str, list[int]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.notify

    monkeypatch.setattr(tasks.notify, "RETRY_DELAYS_S", (0.0,))
    url, queue = flaky_receiver
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        queue.extend([503, 502])
        assert await post_summary(http, url, {"text": "x"}) is None  # third attempt delivered
        queue.extend([404])
        problem = await post_summary(http, url, {"text": "x"})
        assert problem == "the webhook answered HTTP 404" and not queue
        problem = await post_summary(http, "http://127.0.0.1:9/closed", {"text": "x"})
        assert problem is not None and "ConnectError" in problem and "127.0.0.1:9" not in problem


def test_prefect_env_points_everything_at_the_state_dir(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    env = prefect_env(layout, "http://127.0.0.1:4200/api", {"PATH": "/bin", "NO_PROXY": "corp.example"},
                      PREFECT_WORKER_QUERY_SECONDS="1")
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / "prefect" / "home")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{tmp_path.resolve()}/prefect/prefect.db"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api" and env["PATH"] == "/bin"
    assert env["DO_NOT_TRACK"] == "1" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert set(env["NO_PROXY"].split(",")) == {"corp.example", "127.0.0.1", "localhost"}
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "1"


IGNORES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, lambda *a: (print("sigint", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""


def test_stop_worker_follows_an_ignored_sigterm_with_sigint() -> None:
    # a stand-in with the worker's observed behaviour: SIGTERM ignored, SIGINT ends it
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        record = ProcessRecord(name="worker", pid=proc.pid, start_ticks=start_ticks(proc.pid) or 0, argv=[], log="")
        started = time.monotonic()
        stop_worker(record)
        assert not is_running(record)
        assert proc.stdout.readline().strip() == "sigint"  # it ended through SIGINT, not SIGKILL
        assert time.monotonic() - started < 9
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_the_webhook_env_is_not_taken_for_a_setting() -> None:
    from stagecheck.settings import env_overrides

    assert env_overrides({"STAGECHECK_WEBHOOK_URL": "http://127.0.0.1:9/hook", "STAGECHECK_DRY_RUN": "1"}) == {
        "dry_run": "1"}


def test_flow_parameters_are_the_request_fields_with_their_descriptions() -> None:
    """The run form (from the flow's signature and docstring, also when read from source as `prefect deploy`
    does) offers one parameter per request field, each with the field's description and rules."""
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    from deployments.definitions import ENTRYPOINT, REPO_ROOT
    from flows.validate import validate

    for schema in (parameter_schema(validate.fn), parameter_schema_from_entrypoint(str(REPO_ROOT / ENTRYPOINT))):
        properties = schema.model_dump()["properties"]
        assert list(properties) == list(ValidationRequest.model_fields)
        for name, field in ValidationRequest.model_fields.items():
            assert properties[name]["description"] == field.description, name
        assert properties["bake_s"]["anyOf"][0]["minimum"] == 0
