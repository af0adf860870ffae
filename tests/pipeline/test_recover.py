"""Recovery of a release that died mid-canary: the rollout record a killed run left on the service (50 % on its
candidate) is restored by the recovery flow, and by the next validation before anything else, so that its
baseline is the release before the killed one. Real sandbox, real Google clients, temporary Prefect server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import run_v2

from cli.commands import recover as recover_cli
from flows.recover import crashed_run_id, recover, recovery_request
from stagecheck.clients.cloudrun import CloudRun, split_from_statuses
from stagecheck.errors import StageError
from stagecheck.liveness import ProcessRef, start_ticks, this_process
from stagecheck.model import TrafficTarget
from stagecheck.rollout import ANNOTATION_KEY, RolloutRecord
from stagecheck.settings import Settings
from stagecheck.traffic import serving_revisions
from tasks.rollout import record_annotation, write_rollout_record
from tests.pipeline.test_e2e import baseline, created, run_flow, serving  # noqa: F401 (created: a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def cloudrun_for(sandbox: Any, service: str) -> CloudRun:
    return CloudRun(Settings(project=sandbox.project, region=sandbox.region, registry=sandbox.registry,
                             services=({"name": service},),  # type: ignore[arg-type]
                             endpoints={"run_api": sandbox.run_api, "logging_api": sandbox.logging_api,  # type: ignore[arg-type]
                                        "credentials_file": sandbox.credentials_file}))


async def abandoned_canary(run_clients: Any, cloudrun: CloudRun, service: str, image: str, old: str, *,
                           flow_run_id: str | None = None, process: ProcessRef | None = None) -> str:
    """What a validation killed at its 50 % step leaves: a tagged candidate serving half, and its record
    (written by a flow run that no longer exists)."""
    from tests.fixtures_sandbox import FAST_POLL

    svc = run_clients.services.get_service(name=run_clients.service_name(service))
    svc.template.containers[0].env = [*svc.template.containers[0].env,
                                      run_v2.EnvVar(name="RELEASE", value=uuid.uuid4().hex)]
    svc.template.revision = ""
    svc = run_clients.services.update_service(service=svc).result(polling=FAST_POLL, timeout=60)
    candidate = str(svc.latest_created_revision.rsplit("/", 1)[-1])
    record = RolloutRecord(service=service, candidate=candidate, tag="sc-dead000", step=50,
                           before=[TrafficTarget(revision=old, percent=100)],
                           flow_run_id=flow_run_id or str(uuid.uuid4()),
                           flow_run_name="validate-killed-dead000", started_at=datetime.now(UTC), process=process)
    await cloudrun.set_traffic(service, [TrafficTarget(revision=candidate, percent=50, tag="sc-dead000"),
                                         TrafficTarget(revision=old, percent=50)], 60,
                               annotations=record_annotation(record))
    await cloudrun.wait_served(service, timeout_s=60)
    return candidate


async def test_the_recovery_flow_restores_the_recorded_split_and_removes_the_record(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any,  # noqa: F811
        capsys: Any) -> None:
    service = created("recover")
    old = baseline(run_clients, service, sample_image.digest_ref)
    cloudrun = cloudrun_for(scenario.sandbox, service)
    candidate = await abandoned_canary(run_clients, cloudrun, service, sample_image.digest_ref, old)
    assert serving(run_clients, service) == {candidate: 50, old: 50}
    # a new release never overwrites the record of an interrupted one (it holds the split to restore)
    mine = RolloutRecord(service=service, candidate=candidate, before=[TrafficTarget(revision=candidate, percent=100)],
                         flow_run_id=str(uuid.uuid4()), started_at=datetime.now(UTC))
    with pytest.raises(StageError, match="rollout record of an interrupted release by flow run 'validate-killed"):
        await write_rollout_record.fn(cloudrun, service, mine, 60)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}])

    state: Any = await recover(services=[service], config=str(config), sandbox=True,  # type: ignore[call-overload]
                          state_dir=scenario.sandbox.state_dir, return_state=True)
    assert state.is_completed(), state.message
    [row] = await state.result()
    assert row["status"] == "PASS" and "restored" in row["summary"]
    assert serving(run_clients, service) == {old: 100}
    svc = await cloudrun.get_service(service)
    assert svc is not None and ANNOTATION_KEY not in svc.annotations
    # the candidate keeps its tag at 0 %, reachable for debugging, as after a rollback
    assert TrafficTarget(revision=candidate, percent=0, tag="sc-dead000") in split_from_statuses(svc.traffic_statuses)

    # nothing left: `stagecheck recover` has nothing to do, and says so
    argv = ["--service", service, "--config", str(config), "--sandbox", "--state-dir", scenario.sandbox.state_dir]
    assert await asyncio.to_thread(recover_cli.main, argv) == 0
    assert f"{service}: PASS no rollout record" in capsys.readouterr().out

    # a record that cannot be read is a clear failure (exit 1), and the traffic is not touched
    await cloudrun.set_annotations(service, {ANNOTATION_KEY: "{not json"}, 60)
    assert await asyncio.to_thread(recover_cli.main, argv) == 1
    out = capsys.readouterr().out
    assert f"{service}: FAIL" in out and "is not JSON" in out and ANNOTATION_KEY in out
    assert serving(run_clients, service) == {old: 100}


async def test_the_next_validation_recovers_first_and_takes_the_release_before_as_its_baseline(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    service = created("recfirst")
    old = baseline(run_clients, service, sample_image.digest_ref)
    cloudrun = cloudrun_for(scenario.sandbox, service)
    candidate = await abandoned_canary(run_clients, cloudrun, service, sample_image.digest_ref, old)
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}], steps="[100]", bake_s=0)
    scenario.commit()

    run = await run_flow(scenario, config)
    report = run.report(service)
    assert run.stage_names(service)[0] == "recover"
    assert run.stage(service, "recover")["status"] == "PASS"
    assert report["verdict"] == "pass", report["reasons"]
    # the baseline is the release before the killed one, not the abandoned canary
    assert report["previous_revision"]["name"] == old
    assert serving_revisions([TrafficTarget(**t) for t in report["traffic_before"]]) == {old: 100}
    new = report["revision"]["name"]
    assert new not in (old, candidate) and serving(run_clients, service) == {new: 100}
    svc = await cloudrun.get_service(service)
    assert svc is not None and ANNOTATION_KEY not in svc.annotations  # the passed release removed its own record


def test_recovery_parameters() -> None:
    run = uuid.uuid4()
    assert crashed_run_id(f"prefect.flow-run.{run}") == run == crashed_run_id(str(run))
    with pytest.raises(ValueError):
        crashed_run_id("prefect.flow-run.not-a-uuid")
    crashed = {"config": "/x/stagecheck.toml", "services": ["web"], "sandbox": True, "state_dir": "/s",
               "git_sha": "abc", "traffic_steps": [50, 100]}
    request = recovery_request([], "ignored.toml", False, ".stagecheck", crashed)
    assert (request.config, request.services, request.sandbox, request.state_dir) == (
        "/x/stagecheck.toml", ["web"], True, "/s")
    assert recovery_request(["api"], "c.toml", False, ".sc", None).services == ["api"]


def test_the_command_rejects_bad_input_before_anything_runs(tmp_path: Any, capsys: Any) -> None:
    assert recover_cli.main([]) == 2
    assert "--service" in capsys.readouterr().err
    assert recover_cli.main(["--service", "web", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


async def test_a_record_whose_run_still_shows_running_is_recovered_once_its_process_is_gone(
        prefect_api: None, scenario: Any, run_clients: Any, created: Any, sample_image: Any) -> None:  # noqa: F811
    """A SIGKILLed `stagecheck validate` took its temporary server with it: its run still shows Running there.
    Recovery refuses while the recorded process lives, and restores the split once it is gone."""
    import sys

    from prefect import flow, get_client
    from prefect.states import Running

    @flow(name="killed-validation")
    def killed() -> None:
        pass

    async with get_client() as client:
        run = await client.create_flow_run(killed, state=Running())
    service = created("recproc")
    old = baseline(run_clients, service, sample_image.digest_ref)
    cloudrun = cloudrun_for(scenario.sandbox, service)
    candidate = await abandoned_canary(run_clients, cloudrun, service, sample_image.digest_ref, old,
                                       flow_run_id=str(run.id), process=this_process())
    scenario.add_service("svc")
    config = scenario.config([{"name": service, "source_dir": "svc"}])

    async def recover_now() -> dict[str, Any]:
        state: Any = await recover(services=[service], config=str(config), sandbox=True,  # type: ignore[call-overload]
                                   state_dir=scenario.sandbox.state_dir, return_state=True)
        [row] = await state.result(raise_on_failure=False)
        return dict(row)

    row = await recover_now()  # the writer's process (this one) runs: hands off
    assert row["status"] == "FAIL" and "still" in row["summary"], row
    assert serving(run_clients, service) == {candidate: 50, old: 50}

    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    gone = ProcessRef(host=this_process().host, pid=child.pid, started=start_ticks(child.pid))
    child.kill()
    await child.wait()
    record = RolloutRecord(service=service, candidate=candidate, tag="sc-dead000", step=50,
                           before=[TrafficTarget(revision=old, percent=100)], flow_run_id=str(run.id),
                           started_at=datetime.now(UTC), process=gone)
    await cloudrun.set_annotations(service, record_annotation(record), 60)
    row = await recover_now()
    assert row["status"] == "PASS" and "restored" in row["summary"], row
    assert serving(run_clients, service) == {old: 100}
