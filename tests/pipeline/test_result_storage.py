"""Reports survive the worker: besides `reports/` and the artifacts, the JSON report is written to the
Prefect result storage the settings name (`result_storage`: a storage block slug or a folder), and is
read back from there after the worker's `reports/` folder is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stagecheck.clients.result_storage import is_block_slug
from stagecheck.settings import load_settings
from tests.pipeline.test_e2e import run_flow


def test_a_block_slug_names_a_block_and_anything_else_is_a_folder(tmp_path: Path) -> None:
    assert is_block_slug("local-file-system/stagecheck-results") and is_block_slug("gcs-bucket/reports")
    for folder in ("/var/lib/stagecheck", "./results", "results", "~/results", "a/b/c"):
        assert not is_block_slug(folder), folder
    config = tmp_path / "stagecheck.toml"
    config.write_text('project = "p-staging"\nregion = "europe-west1"\nregistry = "r.example/p/x"\n'
                      'result_storage = "results"\n[[services]]\nname = "web"\n')
    assert load_settings(config).result_storage == str(tmp_path / "results")  # relative to the config file
    config.write_text(config.read_text().replace('"results"', '"local-file-system/shared"'))
    assert load_settings(config).result_storage == "local-file-system/shared"


@pytest.mark.docker
@pytest.mark.sandbox
async def test_the_report_is_read_back_from_result_storage_after_reports_is_deleted(
        prefect_api: None, scenario: Any, tmp_path: Path) -> None:
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    shared = tmp_path / "shared-results"  # what a bucket would be: not the worker's folder
    await LocalFileSystem(basepath=str(shared)).save("stagecheck-results", overwrite=True)
    scenario.add_service("svc")
    config = scenario.config([{"name": "kept", "source_dir": "svc"}])
    # a top-level key: before the config's tables
    config.write_text('result_storage = "local-file-system/stagecheck-results"\n' + config.read_text())
    sha = scenario.commit()
    run = await run_flow(scenario, config, dry_run=True)
    local = run.report("kept")
    assert local["git_sha"] == sha and local["verdict"] == "pass"

    shutil.rmtree(scenario.root / "reports")  # the worker goes, and its folder with it
    block = await LocalFileSystem.aload("stagecheck-results")
    store = ResultStore(result_storage=block)
    latest = (await store.aread("stagecheck-reports/kept/latest.json")).result
    assert latest == local
    keys = sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*.json"))
    assert len(keys) == 2 and "stagecheck-reports/kept/latest.json" in keys, keys
    (dated,) = [k for k in keys if not k.endswith("latest.json")]
    assert (await store.aread(dated)).result == local
    # stored as JSON (a Prefect result record around the report's JSON), readable without stagecheck
    record = json.loads((shared / dated).read_text())
    assert record["metadata"]["serializer"]["type"] == "json"
    assert json.loads(record["result"])["verdict"] == "pass"
