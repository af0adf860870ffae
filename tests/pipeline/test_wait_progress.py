"""Long waits show their progress: the deploy's wait for Ready, each canary hold and the bake each keep a
Prefect progress artifact that advances while the wait runs and reaches 100 when it is over (read back
through the Prefect API, during and after a real run against the sandbox)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stagecheck.clients.progress_artifact import percent, progress_key
from tests.pipeline.test_e2e import baseline, created, run_flow  # noqa: F401  (created: a fixture)


def test_progress_keys_and_percentages() -> None:
    assert progress_key("checkout", "canary hold at 50 %") == "stagecheck-wait-checkout-canary-hold-at-50"
    assert progress_key("Web_1", "deploy") == "stagecheck-wait-web-1-deploy"
    assert (percent(0, 10), percent(2.5, 10), percent(12, 10), percent(1, 0)) == (0.0, 25.0, 100.0, 100.0)


@pytest.mark.docker
@pytest.mark.sandbox
async def test_deploy_canary_hold_and_bake_progress_artifacts_advance_and_reach_100(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    service = created("prog")
    baseline(run_clients, service, sample_image.digest_ref)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[50, 100]", hold_s=4, bake_s=6)
    scenario.commit()
    keys = {wait: progress_key(service, wait) for wait in ("deploy", "canary hold at 50 %", "bake after 100 %")}
    seen: dict[str, set[float]] = {key: set() for key in keys.values()}
    finished = asyncio.Event()

    async def watch() -> None:  # what a person refreshing the UI sees while the run goes on
        async with get_client() as client:
            while not finished.is_set():
                for artifact in await client.read_artifacts(
                        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys.values())))):
                    seen[str(artifact.key)].add(float(artifact.data))  # type: ignore[arg-type]
                await asyncio.sleep(0.3)

    async def run() -> Any:
        try:
            return await run_flow(scenario, config)
        finally:
            finished.set()

    watcher = asyncio.create_task(watch())
    result = await run()
    await watcher
    assert result.report(service)["verdict"] == "pass", result.report(service)["reasons"]

    artifacts = {a.key: a for a in result.artifacts if a.type == "progress"}
    for wait, key in keys.items():
        assert key in artifacts, (wait, sorted(artifacts))
        assert float(artifacts[key].data) == 100.0, (wait, artifacts[key].data)  # type: ignore[arg-type]
    assert "watched" in (artifacts[keys["bake after 100 %"]].description or "")
    # the hold and the bake moved while they ran, not only from 0 to 100 at the end
    for wait in ("canary hold at 50 %", "bake after 100 %"):
        between = {v for v in seen[keys[wait]] if 0 < v < 100}
        assert between, (wait, sorted(seen[keys[wait]]))
