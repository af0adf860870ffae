"""The settings model: sources, precedence, and readable errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagecheck.settings import ConfigError, ProbeMode, Settings, TrafficPlan, load_settings

MINIMAL = """
project = "demo-project"
region = "europe-west1"
registry = "europe-west1-docker.pkg.dev/demo-project/apps"
[[services]]
name = "web"
source_dir = "web"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stagecheck.toml"
    path.write_text(text)
    return path


def test_minimal_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert s.project == "demo-project"
    svc = s.service("web")
    assert svc.source_dir == (tmp_path / "web").resolve()
    assert s.repo_root == tmp_path.resolve()
    assert s.traffic.steps == (100,)
    assert svc.health.tagged.mode is ProbeMode.REQUIRED
    assert s.endpoints.run_api is None and s.endpoints.credentials_file is None  # real GCP: ADC


def test_env_overrides_file_and_explicit_overrides_win(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL + "\n[probes]\ndeadline_s = 10\n")
    env = {"STAGECHECK_PROBES__DEADLINE_S": "20", "STAGECHECK_TRAFFIC__STEPS": "[10, 100]", "HOME": "/x"}
    s = load_settings(cfg, environ=env)
    assert s.probes.deadline_s == 20
    assert s.traffic.steps == (10, 100)
    s = load_settings(cfg, environ=env, overrides={"probes": {"deadline_s": 30}})
    assert s.probes.deadline_s == 30


def test_sandbox_json_fills_target(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox.json"
    key = tmp_path / "key.json"
    key.write_text("{}")
    sandbox.write_text(json.dumps({
        "run_api": "http://127.0.0.1:9", "logging_api": "http://127.0.0.1:9", "project": "stagecheck-sandbox",
        "region": "europe-west1", "registry": "127.0.0.1:5000", "docker_host": "unix:///tmp/d.sock",
        "lb_url": "http://127.0.0.1:10", "credentials_file": str(key)}))
    cfg = write(tmp_path, '[[services]]\nname = "web"\n')
    s = load_settings(cfg, environ={}, sandbox_json=sandbox)
    assert s.endpoints.run_api == "http://127.0.0.1:9" and s.endpoints.credentials_file == str(key)
    assert s.registry == "127.0.0.1:5000" and s.lb_url == "http://127.0.0.1:10"


def test_missing_sandbox_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no sandbox running"):
        load_settings(write(tmp_path, MINIMAL), environ={}, sandbox_json=tmp_path / "nope.json")


@pytest.mark.parametrize(("snippet", "where"), [
    ('project = "Bad_Project"', "project"),
    ('region = "mars"', "region"),
])
def test_invalid_target_names(tmp_path: Path, snippet: str, where: str) -> None:
    text = MINIMAL.replace('project = "demo-project"', snippet if where == "project" else 'project = "demo-project"')
    if where == "region":
        text = text.replace('region = "europe-west1"', snippet)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert f"  {where}:" in str(info.value)


@pytest.mark.parametrize(("service_line", "message"), [
    ('name = "Web_App"', "lowercase letters"),
    ('name = "web-"', "lowercase letters"),
    ('name = "' + "a" * 50 + '"', "at most 49"),
    ('name = "web"\nmemory = "lots"', "memory is like"),
    ('name = "web"\nenv = { PORT = "1" }', "reserved"),
    ('name = "web"\nsecrets = { TOKEN = "tok" }', "name:version"),
    ('name = "web"\nmin_instances = 5\nmax_instances = 2', "min_instances exceeds"),
])
def test_invalid_service_settings_name_the_field(tmp_path: Path, service_line: str, message: str) -> None:
    text = MINIMAL.replace('name = "web"', service_line)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert message in str(info.value)
    assert "services.0" in str(info.value)


def test_probe_auth_settings(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert s.probes.auth == "id_token" and s.probes.lb_audience is None  # private services: tokens by default
    s = load_settings(write(tmp_path, MINIMAL + '\n[probes]\nauth = "none"\nlb_audience = "https://lb.example"\n'),
                      environ={})
    assert s.probes.auth == "none" and s.probes.lb_audience == "https://lb.example"
    with pytest.raises(ConfigError, match=r"probes\.auth"):
        load_settings(write(tmp_path, MINIMAL + '\n[probes]\nauth = "basic"\n'), environ={})
    with pytest.raises(ConfigError, match="never retried"):  # an invoker answer is not a cold start
        load_settings(write(tmp_path, MINIMAL + "\n[probes]\nretry_statuses = [503, 403]\n"), environ={})
    with pytest.raises(ConfigError, match="credentials file not found"):
        load_settings(write(tmp_path, MINIMAL + '\n[endpoints]\ncredentials_file = "/no/such/key.json"\n'),
                      environ={})


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="probez"):
        load_settings(write(tmp_path, MINIMAL + "\n[probez]\nx = 1\n"), environ={})


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stagecheck\.toml"):
        load_settings(write(tmp_path, "project = \n"), environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize("steps", [(), (50,), (50, 10, 100), (0, 100), (10, 10, 100), (10, 120)])
def test_traffic_plan_rejects_bad_steps(steps: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        TrafficPlan(steps=steps)


def test_duplicate_services_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Settings(project="demo-project", region="europe-west1", registry="r",
                 services=({"name": "a"}, {"name": "a"}))  # type: ignore[arg-type]


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[1]
    gcp = load_settings(root / "examples" / "stagecheck.gcp.toml", environ={})
    assert gcp.services[0].secrets == {"API_TOKEN": "sample-api-token:latest"}
    assert gcp.services[0].health.service.mode is ProbeMode.ADVISORY


def test_env_reads_only_settings_keys_never_the_smoke_exports(tmp_path: Path) -> None:
    # what stagecheck exports to smoke commands (a smoke step may run stagecheck itself) is not config
    cfg = write(tmp_path, 'lb_url = "http://lb.example"\n' + MINIMAL)
    env = {"STAGECHECK_BASE_URL": "http://127.0.0.1:1", "STAGECHECK_TAG_URL": "http://127.0.0.1:2",
           "STAGECHECK_LB_URL": "http://127.0.0.1:3/web", "STAGECHECK_REVISION": "web-00001-abc",
           "STAGECHECK_SERVICE": "web", "STAGECHECK_STATE_DIR": "/x", "STAGECHECK_WEBHOOK_URL": "http://h",
           "STAGECHECK_SOMETHING_ELSE": "1", "STAGECHECK_PROBES__DEADLINE_S": "42"}
    s = load_settings(cfg, environ=env)
    assert s.lb_url == "http://lb.example"
    assert s.probes.deadline_s == 42


def test_tolerated_regex_checked_at_load_substrings_untouched(tmp_path: Path) -> None:
    ok = load_settings(write(tmp_path, MINIMAL + '[logs]\ntolerated_signatures = ["(unbalanced", "/dep(r|l)ecated/"]\n'),
                       environ={})
    assert ok.logs.tolerated_signatures == ("(unbalanced", "/dep(r|l)ecated/")
    with pytest.raises(ConfigError, match=r"logs\.tolerated_signatures: \[1\] '/\[a-/' is not a valid regular"):
        load_settings(write(tmp_path, MINIMAL + '[logs]\ntolerated_signatures = ["x", "/[a-/"]\n'), environ={})


@pytest.mark.parametrize(("cpu", "valid"), [("1", True), ("0.5", True), ("0.08", True), ("500m", True), ("2", True),
                                            ("8", True), ("0.05", False), ("3", False), ("1.5", False),
                                            ("16", False), ("fast", False), ("", False)])
def test_cpu_rule(cpu: str, valid: bool) -> None:
    from stagecheck.settings import cpu_is_valid

    assert cpu_is_valid(cpu) is valid


def test_log_severity_fields_are_opt_in_json_field_names(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, MINIMAL), environ={}).logs.severity_fields == ()  # off by default
    ok = load_settings(write(tmp_path, MINIMAL + '[logs]\nseverity_fields = ["level"]\n'), environ={})
    assert ok.logs.severity_fields == ("level",)
    for bad, words in (('["lev el"]', "is not a JSON field name"), ('["severity"]', "Cloud Logging already reads it")):
        with pytest.raises(ConfigError) as info:
            load_settings(write(tmp_path, MINIMAL + f"[logs]\nseverity_fields = {bad}\n"), environ={})
        assert "logs.severity_fields" in str(info.value) and words in str(info.value)
