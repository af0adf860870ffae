"""Bad input gets a clear error, not a traceback: the API-error wording, and the CLI end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from sandbox.iam import Principal, write_key_file
from stagecheck.clients.cloudrun import describe_api_error

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("exc", "words"), [
    (gexc.Forbidden("GET https://run.googleapis.com/v2/x: Permission denied on project p"), "permission denied"),
    (gexc.PermissionDenied("denied"), "permission denied"),
    (gexc.Unauthorized("no token"), "not authenticated"),
    (gexc.NotFound("GET https://run.googleapis.com/v2/x: Service x not found"), "not found"),
    (gexc.BadRequest("template.revision: must start with the service name"), "rejected as invalid"),
    (gexc.TooManyRequests("slow down"), "rate limit"),
    (gexc.ServiceUnavailable("try later"), "API unavailable"),
    (gexc.DeadlineExceeded("late"), "timed out"),
    (auth_exc.DefaultCredentialsError("no ADC"), "no Google credentials"),
    (requests.exceptions.ConnectionError("refused"), "unreachable"),
])
def test_api_errors_read_like_sentences(exc: BaseException, words: str) -> None:
    err = describe_api_error(exc, "get service web")
    assert str(err).startswith("get service web: ")
    assert words in str(err)
    assert "https://run.googleapis.com" not in err.message  # the transport's request prefix is dropped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def test_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "stagecheck.toml").write_text(
        'project = "Bad Project"\nregion = "europe-west1"\nregistry = "r"\n[[services]]\nname = "Web_1"\n')
    proc = _cli("validate", "--config", "stagecheck.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "project:" in proc.stderr and "services.0.name" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_sandbox_and_bad_flags_exit_2(tmp_path: Path) -> None:
    (tmp_path / "stagecheck.toml").write_text('[[services]]\nname = "web"\n')
    proc = _cli("validate", "--sandbox", "--state-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert proc.returncode == 2 and "no sandbox running" in proc.stderr
    proc = _cli("validate", "--traffic", "ten", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_unreachable_api_fails_the_first_gate_with_a_reason(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    key = tmp_path / "key.json"  # a well-formed service-account key: the clients sign with it, then cannot connect
    write_key_file(key, Principal.generate("stagecheck-test", "stagecheck-sandbox").key_file("stagecheck-sandbox",
                                                                                             f"{dead}/token"))
    (tmp_path / "stagecheck.toml").write_text(f"""
project = "stagecheck-sandbox"
region = "europe-west1"
registry = "127.0.0.1:5000"
[endpoints]
run_api = "{dead}"
logging_api = "{dead}"
credentials_file = "{key}"
[[services]]
name = "web"
""")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")  # the build inputs exist: the API is what fails
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.email=t@e.x", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True)
    proc = _cli("validate", "--config", "stagecheck.toml", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "web: FAIL (gate: inspect)" in out
    assert "Cloud Run API unreachable" in out
    assert "Traceback" not in out
    report = json.loads((tmp_path / "reports" / "web-latest.json").read_text())
    assert report["verdict"] == "fail" and report["decided_by"] == "inspect"
