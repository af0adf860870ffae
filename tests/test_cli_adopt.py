"""The command line a platform team expects: --version, help texts with environment and exit status, bad input
refused with exit 2 naming the flag, and notify-merge / serve register on the active Prefect profile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cli.commands import validate as validate_cli
from cli.commands.validate import verdict_document
from deployments.events import CONFIG_LABEL, URL_LABEL, MergeEvent, MergeEventError

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=120)


def test_version_prints_the_installed_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"stagecheck {version('stagecheck')}"


@pytest.mark.parametrize("command", ["validate", "notify-merge", "serve"])
def test_help_lists_environment_variables_and_exit_status(command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0
    assert "environment:" in done.stdout and "PREFECT_API_URL" in done.stdout
    assert "exit status:" in done.stdout and "  2  bad" in done.stdout


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--git-ref", "a..b"], "--git-ref 'a..b': a git ref"),
    (["--repository", "https://bot:hunter22secret@github.com/acme/shop.git"], "--repository: the URL carries credentials"),
    (["--repository", "shop"], "--repository"),
    (["--format", "yaml"], "--format"),
])
def test_validate_refuses_bad_flags_with_exit_2(argv: list[str], fragment: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_cli.main(["--config", str(REPO_ROOT / "examples" / "stagecheck.gcp.toml"), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "hunter22secret" not in err and "Traceback" not in err


def test_the_json_document_carries_verdicts_and_report_paths() -> None:
    assert verdict_document([], False, "the config at commit abc is invalid") == {
        "verdict": "fail", "services": [], "reason": "the config at commit abc is invalid"}


def test_a_merge_event_names_its_repository_url_and_config() -> None:
    event = MergeEvent.parse("abcdef1", "refs/heads/main", "acme/shop", "https://github.com/acme/shop.git/",
                             "deploy/stagecheck.toml")
    assert event.resource()[URL_LABEL] == "https://github.com/acme/shop"
    assert event.resource()[CONFIG_LABEL] == "deploy/stagecheck.toml"
    assert event.payload()["url"] == "https://github.com/acme/shop"
    with pytest.raises(MergeEventError, match="--url: the URL carries credentials") as err:
        MergeEvent.parse("abcdef1", "main", "shop", "https://x:tok3nvalue@github.com/acme/shop")
    assert "tok3nvalue" not in str(err.value)
    with pytest.raises(MergeEventError, match="--config"):
        MergeEvent.parse("abcdef1", "main", "shop", None, "../outside.toml")


def _profile_env(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A Prefect profile (its own profiles file) whose API is a port nothing listens on; no PREFECT_API_URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_PROFILES_PATH=str(profiles), PREFECT_HOME=str(tmp_path / "home"))
    return env, url


def test_notify_merge_and_serve_register_use_the_active_profiles_api(tmp_path: Path) -> None:
    env, url = _profile_env(tmp_path)
    merged = cli("notify-merge", "--sha", "abcdef1", "--ref", "main", "--repo", "shop", env=env)
    assert merged.returncode == 1, merged.stderr  # the profile's API was tried (nothing answers there)
    assert f"the Prefect API at {url} did not take the event" in merged.stderr
    registered = cli("serve", "register", "--state-dir", str(tmp_path / "state"), env=env)
    assert registered.returncode == 1, registered.stderr
    assert "the Prefect API did not answer" in registered.stderr and "Traceback" not in registered.stderr
    no_profile = {**env, "PREFECT_PROFILES_PATH": str(tmp_path / "none.toml")}
    assert cli("notify-merge", "--sha", "abcdef1", "--ref", "main", "--repo", "shop", env=no_profile).returncode == 2


def test_the_run_form_refuses_a_bad_sha_and_the_flow_has_a_timeout_backstop() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.params import flow_timeout_s
    from flows.validate import validate

    git_sha = parameter_schema(validate.fn).model_dump()["properties"]["git_sha"]
    assert {"type": "string", "pattern": "^[0-9a-f]{7,40}$"} in git_sha["anyOf"]  # the UI form checks it
    assert validate.timeout_seconds == flow_timeout_s() == 30 * 3600
    assert flow_timeout_s({"STAGECHECK_FLOW_TIMEOUT_S": "7200"}) == 7200
    for bad in ("", "soon", "-1", "inf", "nan"):
        assert flow_timeout_s({"STAGECHECK_FLOW_TIMEOUT_S": bad}) == 30 * 3600


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--prefect-file", "{bad}"], "deployments[0] (staging): entrypoint"),
    (["--param", "colour=red"], "--param colour: not a parameter of the validation flow"),
    (["--param", "sandbox"], "--param 'sandbox': KEY=VALUE"),
])
def test_serve_refuses_a_bad_file_or_param_with_exit_2_before_starting_anything(
        tmp_path: Path, argv: list[str], fragment: str) -> None:
    bad = tmp_path / "prefect.yaml"
    bad.write_text("deployments:\n- name: staging\n")
    state = tmp_path / "state"
    done = cli("serve", "up", "--state-dir", str(state), "--port", "1", *[a.format(bad=bad) for a in argv])
    assert done.returncode == 2, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr
    assert not (state / "prefect" / "server.json").exists()  # no server was started
