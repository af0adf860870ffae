"""Bad input is refused before anything moves: one table of invalid configs, flags, environment and
flow parameters. Each CLI case runs the real `stagecheck validate` entry point in a subprocess and
must exit 2 with a short message naming the field (or flag) and its rule; each flow case must end in
a Failed flow run before any stage. Nothing is built, pushed or deployed: the run never starts, the
case's image repository does not exist in the registry and its service does not exist in the sandbox.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagecheck.model import StageResult

REPO_ROOT = Path(__file__).resolve().parents[2]
FULL_TARGET = 'project = "demo-project"\nregion = "europe-west1"\nregistry = "127.0.0.1:5000"\n'


@dataclass
class Case:
    """One invalid input. `config` is the stagecheck.toml text ({name}/{image} filled in), `prepare`
    changes the directory further; `args` are extra CLI flags, or `params` the flow's request fields."""

    id: str
    expect: tuple[str, ...]  # the field (or flag) and the rule, all in the message
    config: str = ""
    args: tuple[str, ...] = ()
    params: dict[str, Any] | None = None  # a flow-parameter case: run the flow, not the CLI
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], Path | None] | None = None  # may return the --config path to use
    sandbox: bool = True
    dockerfile: bool = True


def service(extra: str = "", name: str = "{name}") -> str:
    return f'[[services]]\nname = "{name}"\nimage_name = "{{image}}"\nsource_dir = "svc"\n{extra}\n'


def _directory(root: Path) -> Path:
    (root / "conf.d").mkdir()
    return root / "conf.d"


def _binary(root: Path) -> Path:
    (root / "bin.toml").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00" * 8)
    return root / "bin.toml"


def _empty(root: Path) -> Path:
    (root / "empty.toml").write_text("\n  \n")
    return root / "empty.toml"


def _fifo(root: Path) -> Path:
    os.mkfifo(root / "pipe.toml")  # reading it would block forever
    return root / "pipe.toml"


CASES = [
    # names against Cloud Run's rules
    Case("name-uppercase", ("services.0.name", "lowercase letters"), service(name="Bad_Name")),
    Case("name-too-long", ("services.0.name", "at most 49"), service(name="a" * 50)),
    Case("name-trailing-hyphen", ("services.0.name", "end with a letter or digit"), service(name="web-")),
    Case("project-uppercase", ("project", "6-30 characters"),
         FULL_TARGET.replace("demo-project", "Demo_Project") + service(), sandbox=False),
    # traffic steps
    Case("steps-zero", ("traffic.steps", "1..100"), "[traffic]\nsteps = [0, 100]\n" + service()),
    Case("steps-over-100", ("traffic.steps", "1..100"), "[traffic]\nsteps = [10, 120]\n" + service()),
    Case("steps-not-increasing", ("traffic.steps", "strictly increase"), "[traffic]\nsteps = [50, 10, 100]\n" + service()),
    # the config file itself
    Case("config-missing", ("config file not found", "nope.toml"), args=("--config", "nope.toml")),
    Case("config-default-missing", ("config file not found", "stagecheck.toml"),
         prepare=lambda root: (root / "stagecheck.toml").unlink()),  # type: ignore[func-returns-value]
    Case("config-directory", ("conf.d", "is a directory"), prepare=_directory),
    Case("config-binary", ("bin.toml", "not a UTF-8 text file"), prepare=_binary),
    Case("config-empty", ("empty.toml", "is empty"), prepare=_empty),
    Case("config-unreadable-fifo", ("pipe.toml", "not a regular file"), prepare=_fifo),
    Case("config-malformed-toml", ("stagecheck.toml", "line 1"), "name = \n"),
    # build inputs
    Case("dockerfile-missing", ("services.0.dockerfile", "not found"), service(), dockerfile=False),
    Case("source-dir-missing", ("services.0.source_dir", "does not exist"),
         service().replace('source_dir = "svc"', 'source_dir = "nowhere"')),
    # unknown keys
    Case("unknown-top-key", ("colour", "unknown key"), 'colour = "red"\n' + service()),
    Case("unknown-nested-key", ("probes.deadline", "unknown key"), "[probes]\ndeadline = 5\n" + service()),
    # memory / cpu
    Case("memory-format", ("services.0.memory", "'512Mi' or '2Gi'"), service('memory = "lots"')),
    Case("memory-too-large", ("services.0.memory", "at most 32Gi"), service('memory = "64Gi"')),
    Case("cpu-3", ("services.0.cpu", "1, 2, 4, 6 or 8"), service('cpu = "3"')),
    Case("cpu-text", ("services.0.cpu", "0.08 to 1"), service('cpu = "fast"')),
    # probes, services, env, secrets, regexes, URLs
    Case("probe-path-no-slash", ("services.0.health.tagged.path", "must start with '/'"),
         service('[services.health]\ntagged = { path = "health" }')),
    Case("duplicate-services", ("duplicate service names",), service() + service()),
    Case("env-name-invalid", ("services.0.env", "invalid environment variable name '1BAD'"),
         service('env = { 1BAD = "x" }')),
    Case("env-reserved", ("services.0.env", "PORT is reserved"), service('env = { PORT = "1" }')),
    Case("secret-ref-no-version", ("services.0.secrets", "'name:version'"),
         service('secrets = { TOKEN = "projects/p/secrets/token" }')),
    Case("tolerated-regex-malformed", ("logs.tolerated_signatures", "not a valid regular expression"),
         '[logs]\ntolerated_signatures = ["plain text", "/unclosed(group/"]\n' + service()),
    Case("lb-url-without-scheme", ("lb_url", "http:// or https://"),
         FULL_TARGET + 'lb_url = "staging.example.com"\n' + service(), sandbox=False),
    Case("endpoint-without-scheme", ("endpoints.run_api", "http:// or https://"),
         FULL_TARGET + '[endpoints]\nrun_api = "127.0.0.1:9"\n' + service(), sandbox=False),
    # timeouts: negative, absurd, infinite
    Case("deploy-timeout-negative", ("deploy_timeout_s", "greater than 0"), "deploy_timeout_s = -5\n" + service()),
    Case("probe-deadline-absurd", ("probes.deadline_s", "at most 3600 seconds"), "[probes]\ndeadline_s = 1e9\n" + service()),
    Case("settle-infinite", ("logs.settle_s", "at most 3600 seconds"), "[logs]\nsettle_s = inf\n" + service()),
    Case("smoke-timeout-negative", ("services.0.smoke.0.timeout_s", "greater than 0"),
         service('smoke = [{ name = "api", command = "true", timeout_s = -1 }]')),
    Case("port-not-a-number", ("services.0.port", "integer"), service('port = "http"')),
    # flags
    Case("flag-traffic-text", ("--traffic", "whole percents"), service(), args=("--traffic", "abc")),
    Case("flag-traffic-order", ("--traffic", "strictly increase"), service(), args=("--traffic", "50,10,100")),
    Case("flag-hold-negative", ("--hold", "from 0 to 3600"), service(), args=("--hold", "-1")),
    Case("flag-hold-text", ("--hold", "seconds"), service(), args=("--hold", "soon")),
    Case("flag-git-sha", ("--git-sha", "hex digits"), service(), args=("--git-sha", "not-a-sha")),
    Case("flag-unknown-service", ("--service", "no service 'other'"), service(), args=("--service", "other")),
    Case("flag-unknown", ("unrecognized arguments", "--trafic"), service(), args=("--trafic", "10,100")),
    # environment
    Case("env-negative-deadline", ("probes.deadline_s", "greater than 0"), service(),
         env={"STAGECHECK_PROBES__DEADLINE_S": "-1"}),
    # flow parameters (the Prefect UI's run form): a Failed flow run before any stage
    Case("flow-steps-not-increasing", ("traffic.steps", "strictly increase"), service(),
         params={"traffic_steps": [50, 10, 100]}),
    Case("flow-config-directory", ("is a directory",), service(), params={"config": "."}),
    Case("flow-unknown-service", ("no service 'other'",), service(), params={"services": ["other"]}),
    # the flow's parameter pattern (the run form's, enforced by Prefect before the flow body runs)
    Case("flow-git-sha", ("git_sha", "should match pattern '^[0-9a-f]{7,40}$'"), service(), params={"git_sha": "HEAD"}),
    Case("flow-dockerfile-missing", ("services.0.dockerfile", "not found"), service(), params={}, dockerfile=False),
]


def _nothing_moved(sandbox: Any, name: str, image: str) -> None:
    repo = httpx.get(f"http://{sandbox.registry}/v2/{image}/tags/list", timeout=10, trust_env=False)
    assert repo.status_code == 404, f"the registry has {image}: {repo.text}"
    from google.api_core import exceptions as gexc

    from tests.fixtures_sandbox import clients_for

    clients = clients_for(sandbox)  # the API wants the sandbox's credentials
    with pytest.raises(gexc.NotFound):
        clients.services.get_service(name=clients.service_name(name))


class StageRecorder:
    """The progress sink of a flow run: records every stage that starts or ends."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def stage_started(self, service: str, stage: str) -> None:
        self.events.append(f"{service} {stage} started")

    def stage_finished(self, service: str, result: StageResult) -> None:
        self.events.append(f"{service} {result.name} {result.status}")

    def service_finished(self, report: Any, path: Path) -> None:
        self.events.append(f"{report.service} reported")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_anything_moves(case: Case, tmp_path: Path, sandbox: Any,
                                                    request: pytest.FixtureRequest) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, image = f"bad-{suffix}", f"badinput-{suffix}"
    root = tmp_path / "repo"
    (root / "svc").mkdir(parents=True)
    if case.dockerfile:
        (root / "svc" / "Dockerfile").write_text("FROM scratch\n")
    (root / "stagecheck.toml").write_text(case.config.replace("{name}", name).replace("{image}", image))
    config = case.prepare(root) if case.prepare else None
    config = config or root / "stagecheck.toml"

    if case.params is not None:
        request.getfixturevalue("prefect_api")
        message = _run_flow(case, config, sandbox)
    else:
        args = ["--config", str(config)] if case.prepare else []
        if case.sandbox:
            args += ["--sandbox", "--state-dir", sandbox.state_dir]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "STAGECHECK_"))}
        proc = subprocess.run([sys.executable, "-m", "cli.main", "validate", *args, *case.args],
                              cwd=root, env={**env, **case.env}, capture_output=True, text=True, timeout=120)
        message = proc.stderr
        assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.stdout == ""  # the run never started: no stage line, no "validating ..."
        assert len(message.strip().splitlines()) <= 4, message  # short
    for fragment in case.expect:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "Traceback" not in message
    assert "errors.pydantic.dev" not in message and "Value error," not in message
    _nothing_moved(sandbox, name, image)


def _run_flow(case: Case, config: Path, sandbox: Any) -> str:
    from flows.validate import validate
    from stagecheck.progress import current_progress

    params = {"config": str(config), "sandbox": True, "state_dir": sandbox.state_dir, **(case.params or {})}
    if params["config"] == ".":
        params["config"] = str(config.parent)
    recorder = StageRecorder()
    token = current_progress.set(recorder)  # type: ignore[arg-type]
    try:
        state: Any = asyncio.run(validate(**params, return_state=True))  # type: ignore[arg-type]
    finally:
        current_progress.reset(token)
    assert state.is_failed(), state
    assert recorder.events == []  # failed before any stage
    assert not (config.parent / "reports").exists()
    return str(state.message)
