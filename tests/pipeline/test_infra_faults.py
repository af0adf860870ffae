"""Real processes stopped mid-stage: a Docker Engine killed during a build, a registry killed during a
push. Each test starts its OWN engine or registry (own state dir under /tmp, free port, own socket)
and kills only that process; the shared engine and registry are never touched (the push test only
builds its image on the shared engine). Each stage ends in a FAIL with a one-line cause."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from localenv import processes
from localenv.infra import (
    _cleanup_after_engine,
    dockerd_argv,
    engine_answers,
    infra_paths,
    registry_state,
    start_registry,
)
from stagecheck.clients.images import Images
from stagecheck.model import ImageInfo, Status
from stagecheck.settings import ServiceConfig

pytestmark = [pytest.mark.docker]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_under(root: Path) -> list[int]:
    """Processes whose command line names `root` (our engine's containerd shims): ours only."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmdline:
                out.append(int(entry.name))
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class OwnEngine:
    root: Path
    docker_host: str
    record: processes.ProcessRecord
    container_pids: list[int]


@pytest.fixture
def own_engine() -> Iterator[OwnEngine]:
    root = Path(tempfile.mkdtemp(prefix="scf-", dir="/tmp"))  # short: unix socket paths
    paths = infra_paths(root)
    paths.docker_dir.mkdir(parents=True, exist_ok=True)
    paths.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = processes.spawn_detached("dockerd", dockerd_argv(paths), paths.dockerd_log)
    engine = OwnEngine(root, paths.docker_host, record, [])
    try:
        assert processes.wait_until(lambda: engine_answers(paths.docker_host), 60), "own dockerd did not start"
        yield engine
    finally:
        processes.signal_until_gone(record, wait_s=15)
        for pid in [*_pids_under(root), *engine.container_pids]:  # shims and the build container it left
            _kill(pid)
        processes.wait_until(lambda: not _pids_under(root), 10)
        _cleanup_after_engine(paths, record)
        with open("/proc/mounts") as mounts:
            for point in [line.split()[1] for line in mounts if str(root) in line]:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


async def test_the_docker_engine_stopped_during_the_build_fails_the_build_with_one_line(
        prefect_api: None, own_engine: OwnEngine) -> None:
    from prefect import flow

    from tasks.build import build_image

    ctx = own_engine.root / "ctx"
    ctx.mkdir()
    shutil.copy("/usr/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY busybox /busybox\nRUN ["/busybox", "sleep", "20"]\n')
    client = docker.DockerClient(base_url=own_engine.docker_host)

    def kill_when_the_build_runs() -> None:  # watches our engine; kills it once a build step runs
        def running() -> bool:
            try:
                containers = client.api.containers()
            except Exception:
                return False
            for c in containers:
                own_engine.container_pids.append(int(client.api.inspect_container(c["Id"])["State"]["Pid"]))
            return bool(containers)
        if processes.wait_until(running, 60):
            os.kill(own_engine.record.pid, signal.SIGKILL)

    watcher = threading.Thread(target=kill_when_the_build_runs, daemon=True)
    images = Images(own_engine.docker_host)

    @flow
    async def build_only() -> Any:
        # a failed gate ends its task run Failed; the flow reads the stage result back, as flows/validate does
        from flows.validate import gate_value

        return await gate_value(
            await build_image(images, ServiceConfig(name="web", source_dir=ctx), "127.0.0.1:1/web", "a" * 40))

    watcher.start()
    started = time.monotonic()
    stage, info = await build_only()
    watcher.join(timeout=30)
    assert time.monotonic() - started < 20  # not the 20 s of the RUN step: the stop was noticed at once
    assert stage.status is Status.FAIL and info is None
    assert re.fullmatch(rf"build failed: the Docker Engine at {re.escape(own_engine.docker_host)} stopped answering "
                        r"during the build \(ProtocolError\) after \d+ log lines", stage.summary), stage.summary
    assert any('RUN ["/busybox", "sleep", "20"]' in line for line in stage.evidence[0].data["log_tail"])


async def test_the_registry_stopped_during_the_push_fails_the_push_with_one_line(
        docker_env: Any, docker_client: docker.DockerClient) -> None:
    from tasks.push import push_image

    root = Path(tempfile.mkdtemp(prefix="scr-", dir="/tmp"))
    paths = infra_paths(root)
    addr = f"127.0.0.1:{_free_port()}"
    record = start_registry(paths, addr)
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "blob").write_bytes(os.urandom(64 * 1024 * 1024))  # incompressible: the upload takes a while
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
    repository = f"{addr}/push-fault-{uuid.uuid4().hex[:6]}"
    image, _ = docker_client.images.build(path=str(ctx), tag=f"{repository}:v1", rm=True)
    uploads = paths.registry_dir / "data" / "docker" / "registry" / "v2" / "repositories" / repository.split("/", 1)[1]
    try:
        def kill_when_the_upload_starts() -> None:
            if processes.wait_until(lambda: (uploads / "_uploads").exists(), 60):
                os.kill(record.pid, signal.SIGKILL)

        watcher = threading.Thread(target=kill_when_the_upload_starts, daemon=True)
        watcher.start()
        images = Images(docker_env.docker_host)
        try:
            stage, pushed = await push_image.fn(images, ImageInfo(reference=f"{repository}:v1", tags=["v1"]),
                                                repository, None)
        finally:
            await images.aclose()
        watcher.join(timeout=30)
        assert registry_state(addr) != "registry"  # it really is gone
        assert stage.status is Status.FAIL and pushed.digest is None
        assert stage.summary.startswith(f"push of {repository}:v1 failed: ")
        # the engine retries the upload, then finds nothing listening
        assert f"failed: registry unreachable (dial tcp {addr}: connect: connection refused)" in stage.summary
        assert "\n" not in stage.summary and len(stage.summary) < 400
    finally:
        processes.signal_until_gone(record, wait_s=5)
        try:
            docker_client.images.remove(str(image.id), force=True)
        except docker.errors.ImageNotFound:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.sandbox
async def test_the_sandbox_api_killed_during_a_traffic_shift_fails_the_shift_and_the_rollback_says_so(
        docker_env: Any, sample_image: Any, tmp_path: Path) -> None:
    """Its own sandbox server (free ports, own state dir): the traffic update is accepted, the API dies
    while the operation is polled; the shift FAILs naming the unreachable API and the rollback that
    follows FAILs too: the report cannot claim where traffic is, and says so."""
    import httpx

    from localenv.control import start, stop
    from stagecheck.clients.cloudrun import CloudRun
    from stagecheck.model import TrafficTarget
    from stagecheck.settings import load_settings
    from tasks.traffic import rollback_traffic, shift_traffic
    from tests.fixtures_sandbox import clients_for, deploy

    state = tmp_path / "own-sandbox"
    info = start(state, port=0, lb_port=0, docker_host=docker_env.docker_host, registry=docker_env.registry,
                 startup_timeout_s=30, cold_start_hold_s=10.0, ready_timeout=30.0)
    try:
        clients = clients_for(info)  # the sandbox's own key file: its APIs want credentials
        svc = deploy(clients, "web", sample_image.ref)
        rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
        settings = load_settings(None, environ={}, sandbox_json=state / "sandbox.json",
                                 overrides={"services": [{"name": "web"}]})
        cloudrun = CloudRun(settings)
        # the operation's first poll hangs 5 s: the update has been accepted when the API dies
        clients.admin("POST", "/sandbox/v1/faults", {"method": "Operations.GetOperation", "latency_s": 5})

        def kill_when_polled() -> None:
            def polled() -> bool:
                try:
                    return not httpx.get(f"{info.admin_url}/sandbox/v1/faults", timeout=2, trust_env=False).json()["faults"]
                except httpx.HTTPError:
                    return False
            if processes.wait_until(polled, 30):
                os.kill(info.pid, signal.SIGKILL)

        watcher = threading.Thread(target=kill_when_polled, daemon=True)
        watcher.start()
        split = [TrafficTarget(revision=rev, percent=100, tag="sc-candidate")]
        shifted, applied = await shift_traffic.fn(cloudrun, "web", split, 30.0, "step 1/1: 100 %")
        watcher.join(timeout=30)
        assert shifted.status is Status.FAIL and applied == []
        assert shifted.summary == "set traffic of web: Cloud Run API unreachable (is the endpoint right / the sandbox up?)"
        restore = [TrafficTarget(revision=None, percent=100)]
        rolled, restored = await rollback_traffic.fn(cloudrun, "web", restore, 30.0, "traffic")
        assert rolled.status is Status.FAIL and restored == []
        assert rolled.summary == "get service web: Cloud Run API unreachable (is the endpoint right / the sandbox up?)"
    finally:
        stop(state)  # removes the containers the killed server left


@pytest.mark.sandbox
async def test_the_whole_flow_with_the_api_killed_mid_shift_reports_traffic_unknown(
        prefect_api: None, docker_env: Any, sample_image: Any, tmp_path: Path) -> None:
    """The real flow on its own sandbox: once the candidate is deployed with no traffic, the next
    operation poll (the traffic shift's) hangs and the sandbox server is killed. The run FAILs at
    `traffic`, the rollback FAILs, and the report says that where traffic is now is unknown."""
    import httpx

    from localenv.control import start, stop
    from tests.fixtures_sandbox import clients_for, deploy
    from tests.pipeline.conftest import Scenario
    from tests.pipeline.test_e2e import run_flow

    state = tmp_path / "own-sandbox"
    info = start(state, port=0, lb_port=0, docker_host=docker_env.docker_host, registry=docker_env.registry,
                 startup_timeout_s=30, cold_start_hold_s=10.0, ready_timeout=30.0)
    try:
        clients = clients_for(info)  # the sandbox's own key file: its APIs want credentials
        deploy(clients, "web", sample_image.digest_ref)
        scenario = Scenario(tmp_path / "repo", info)
        scenario.add_service("svc")
        config = scenario.config([{"name": "web", "source_dir": "svc"}], steps="[100]")
        sha = scenario.commit()

        def faults_left() -> list[Any]:
            try:
                return list(httpx.get(f"{info.admin_url}/sandbox/v1/faults", timeout=2, trust_env=False).json()["faults"])
            except httpx.HTTPError:
                return [None]

        # the first request to the candidate's tagged URL (probe-tagged: the deploy is over) consumes this
        clients.admin("POST", "/sandbox/v1/faults", {"method": f"proxy.tag.web.sc-{sha[:7]}", "latency_s": 0.01})
        # ... and this the contract stage's read of the serving revision's document through the tag it added
        # (sc-base): that tag's operation is over, so the next operation poll is the traffic shift's
        clients.admin("POST", "/sandbox/v1/faults", {"method": "proxy.tag.web.sc-base", "latency_s": 0.01})

        def kill_at_the_shift() -> None:
            if processes.wait_until(lambda: not faults_left(), 120):
                # the next operation poll is the traffic shift's: it hangs, and the server dies meanwhile
                clients.admin("POST", "/sandbox/v1/faults", {"method": "Operations.GetOperation", "latency_s": 10})
                if processes.wait_until(lambda: not faults_left(), 60):
                    os.kill(info.pid, signal.SIGKILL)

        watcher = threading.Thread(target=kill_at_the_shift, daemon=True)
        watcher.start()
        run = await run_flow(scenario, config)
        watcher.join(timeout=30)
        report = run.report("web")
        assert report["verdict"] == "fail" and report["decided_by"] == "traffic"
        # the shift's request is dropped when the server dies (a transient answer: Prefect retries the step);
        # the retry's first call, reading the service, then finds nothing listening (refused: not retried)
        assert run.stage("web", "traffic")["summary"] == (
            "get service web: Cloud Run API unreachable (is the endpoint right / the sandbox up?)")
        assert report["rollback"]["performed"] is True and report["rollback"]["ok"] is False
        assert report["rollback"]["message"].startswith("rollback FAILED: ")
        assert report["rollback"]["message"].endswith(
            "where traffic is now is unknown: check the service before the next release")
    finally:
        stop(state)
