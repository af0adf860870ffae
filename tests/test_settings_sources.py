"""The sources behind `load_settings` (file < `STAGECHECK_*` env < sandbox < overrides), merged by pydantic-settings:
the environment is read only from the `environ` given, and a section's variables merge whatever their order."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecheck.settings import ConfigError, Settings, env_overrides, load_settings
from tests.test_settings import MINIMAL, write


def test_a_section_given_whole_and_by_key_merges_in_either_order(tmp_path: Path) -> None:
    cfg = write(tmp_path, MINIMAL + "\n[probes]\nsuccess_interval_s = 3\n")
    whole, by_key = ("STAGECHECK_PROBES", '{"request_timeout_s": 7}'), ("STAGECHECK_PROBES__DEADLINE_S", "20")
    for env in (dict([whole, by_key]), dict([by_key, whole])):
        probes = load_settings(cfg, environ=env).probes
        assert (probes.request_timeout_s, probes.deadline_s, probes.success_interval_s) == (7, 20, 3), env
    assert env_overrides(dict([by_key, whole])) == {"probes": {"request_timeout_s": 7, "deadline_s": "20"}}


def test_a_section_set_to_text_and_by_key_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    env = {"STAGECHECK_PROBES": "fast", "STAGECHECK_PROBES__DEADLINE_S": "5"}
    with pytest.raises(ConfigError) as bad:
        load_settings(write(tmp_path, MINIMAL), environ=env)
    assert str(bad.value).splitlines()[1] == (
        "  probes: Input should be a valid dictionary or instance of ProbePolicy (got 'fast')")


def test_only_the_given_environ_is_read_and_settings_built_in_code_read_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECHECK_PROBES__DEADLINE_S", "42")
    monkeypatch.setenv("STAGECHECK_PROJECT", "from-the-process")
    cfg = write(tmp_path, MINIMAL)
    assert load_settings(cfg, environ={}).probes.deadline_s == 60
    assert load_settings(cfg).project == "demo-project"  # environ=None: no environment at all
    assert load_settings(cfg, environ={"STAGECHECK_PROBES__DEADLINE_S": "9"}).probes.deadline_s == 9
    built = Settings(project="demo-project", region="europe-west1", registry="r", services=[{"name": "web"}])
    assert built.project == "demo-project" and built.probes.deadline_s == 60


def test_keys_keep_their_case_in_the_file_and_only_the_upper_case_prefix_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\n  Region: unknown key \(not a stagecheck setting\)"):
        load_settings(write(tmp_path, 'Region = "us-east1"\n' + MINIMAL), environ={})
    env = {"stagecheck_region": "us-east1", "STAGECHECK_Probes__Deadline_S": "8"}
    s = load_settings(write(tmp_path, MINIMAL), environ=env)
    assert (s.region, s.probes.deadline_s) == ("europe-west1", 8)
