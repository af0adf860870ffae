"""localenv.infra against the real dockerd and docker-registry binaries.

Every test uses its own state dir, registry port and engine socket; the shared engine/registry
(`docker_env`) are only ever reused, never started or stopped here."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from localenv import infra, processes
from localenv.infra import InfraError, InfraInfo, ensure_up, stop_started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry_answers(addr: str) -> bool:
    return infra.registry_state(addr) == "registry"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A private state dir; whatever ensure_up started in it is stopped even if the test fails."""
    path = tmp_path / "state"
    yield path
    stop_started(path)


# --- pure decisions -------------------------------------------------------------------------


def test_run_dir_stays_in_state_dir_when_short_enough() -> None:
    assert infra.run_dir_for(Path("/srv/app/.stagecheck"), Path("/run")) == Path(
        "/srv/app/.stagecheck/docker"
    )


def test_run_dir_falls_back_to_a_short_hashed_path_for_long_state_dirs() -> None:
    long_a = Path("/work/" + "x" * 80 + "/.stagecheck")
    long_b = Path("/work/" + "y" * 80 + "/.stagecheck")
    run_a = infra.run_dir_for(long_a, Path("/run"))
    assert run_a.parent == Path("/run") and run_a.name.startswith("stagecheck-")
    assert run_a == infra.run_dir_for(long_a, Path("/run"))  # stable for one state dir
    assert run_a != infra.run_dir_for(long_b, Path("/run"))
    paths = infra.InfraPaths(state_dir=long_a, run_dir=run_a, docker_sock=run_a / "docker.sock")
    assert len(str(paths.exec_root / "containerd" / "containerd.sock.ttrpc")) <= 107


@pytest.mark.parametrize(
    "addr", ["10.0.0.5:5000", "example.com:5000", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:x"]
)
def test_registry_address_must_be_loopback_host_and_port(addr: str) -> None:
    with pytest.raises(InfraError, match="registry address"):
        infra.parse_registry_addr(addr)


def test_registry_config_keeps_storage_in_state_dir_and_enables_delete(tmp_path: Path) -> None:
    paths = infra.infra_paths(tmp_path)
    config = infra.registry_config(paths, "127.0.0.1:5123")
    assert config["http"] == {"addr": "127.0.0.1:5123"}
    assert config["storage"] == {
        "filesystem": {"rootdirectory": str(tmp_path.resolve() / "registry" / "data")},
        "delete": {"enabled": True},
    }


# --- real processes -------------------------------------------------------------------------


@pytest.mark.docker
def test_starts_engine_and_registry_idempotently_and_stops_only_those(
    state_dir: Path, docker_env: InfraInfo
) -> None:
    registry = f"127.0.0.1:{free_port()}"
    docker_host = f"unix://{state_dir}/docker.sock"
    # A stale pidfile whose pid now belongs to an unrelated process (here: this test) is cleared.
    (state_dir / "docker").mkdir(parents=True)
    (state_dir / "docker" / "dockerd.pid").write_text(f"{os.getpid()}\n")

    info = ensure_up(state_dir, registry_addr=registry, docker_host=docker_host)

    assert info == InfraInfo(docker_host=docker_host, registry=registry, started=["dockerd", "registry"])
    assert json.loads((state_dir / "infra.json").read_text()) == {
        "docker_host": docker_host,
        "registry": registry,
        "started": ["dockerd", "registry"],
    }
    client = docker.DockerClient(base_url=docker_host)
    try:
        assert client.ping()
        assert client.info()["DockerRootDir"] == str((state_dir / "docker" / "data").resolve())
    finally:
        client.close()
    assert registry_answers(registry)
    paths = infra.infra_paths(state_dir)
    records = {name: processes.read_record(paths.record_file(name)) for name in ("dockerd", "registry")}
    assert all(record is not None and processes.is_running(record) for record in records.values())

    again = ensure_up(state_dir, registry_addr=registry, docker_host=docker_host)
    assert again == info
    assert {name: processes.read_record(paths.record_file(name)) for name in records} == records

    assert stop_started(state_dir) == ["registry", "dockerd"]
    assert not any(processes.is_running(record) for record in records.values() if record)
    assert not registry_answers(registry)
    assert not infra.engine_answers(docker_host)
    assert not list((state_dir / "pids").glob("*.pid"))
    assert not (state_dir / "infra.json").exists()
    assert not any(point.startswith(str(paths.run_dir)) for point in infra._mount_points())
    assert infra.engine_answers(docker_env.docker_host), "the shared engine must be untouched"
    assert stop_started(state_dir) == []


@pytest.mark.docker
def test_reused_registry_is_not_stopped_by_a_state_dir_that_did_not_start_it(
    tmp_path: Path, docker_env: InfraInfo
) -> None:
    registry = f"127.0.0.1:{free_port()}"
    owner, borrower = tmp_path / "owner", tmp_path / "borrower"
    try:
        owned = ensure_up(owner, registry_addr=registry, docker_host=docker_env.docker_host)
        borrowed = ensure_up(borrower, registry_addr=registry, docker_host=docker_env.docker_host)
        assert owned.started == ["registry"]
        assert borrowed.started == []

        assert stop_started(borrower) == []
        assert registry_answers(registry)
        assert stop_started(owner) == ["registry"]
        assert not registry_answers(registry)
        assert infra.engine_answers(docker_env.docker_host)
    finally:
        stop_started(owner)


@pytest.mark.docker
def test_started_registry_serves_the_distribution_api(state_dir: Path, docker_env: InfraInfo) -> None:
    """The registry ensure_up starts is a working, empty one with its storage in the state dir."""
    registry = f"127.0.0.1:{free_port()}"
    ensure_up(state_dir, registry_addr=registry, docker_host=docker_env.docker_host)
    with httpx.Client(trust_env=False, timeout=5) as http:
        assert http.get(f"http://{registry}/v2/_catalog").json() == {"repositories": []}
    assert (state_dir / "registry" / "config.yml").is_file()


def test_missing_dockerd_is_a_one_line_error(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    args = [
        "up",
        "--state-dir",
        str(state_dir),
        "--registry",
        f"127.0.0.1:{free_port()}",
        "--docker-host",
        f"unix://{tmp_path}/none/docker.sock",
    ]

    assert infra.main(args) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "`dockerd` is not installed" in err and "make setup" in err


@pytest.mark.docker
def test_missing_registry_binary_is_a_clear_error(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_env: InfraInfo
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(InfraError, match=r"`docker-registry` is not installed .*make setup"):
        ensure_up(state_dir, registry_addr=f"127.0.0.1:{free_port()}", docker_host=docker_env.docker_host)


@pytest.mark.docker
def test_port_taken_by_something_else_is_refused(state_dir: Path, docker_env: InfraInfo) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        addr = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(InfraError, match="not a Docker registry"):
            ensure_up(state_dir, registry_addr=addr, docker_host=docker_env.docker_host)
    finally:
        server.shutdown()
        server.server_close()
    assert not (state_dir / "pids" / "infra-registry.pid").exists()


def test_engine_that_dies_on_startup_points_at_its_log(state_dir: Path, tmp_path: Path) -> None:
    (state_dir / "docker").mkdir(parents=True)
    (state_dir / "docker" / "data").write_text("a file where the data root should be")
    with pytest.raises(InfraError) as caught:
        ensure_up(
            state_dir,
            registry_addr=f"127.0.0.1:{free_port()}",
            docker_host=f"unix://{tmp_path}/d/docker.sock",
        )
    message = str(caught.value)
    assert "dockerd exited during startup" in message
    assert str(state_dir.resolve() / "docker" / "dockerd.log") in message
    assert "\n" not in message
    assert not (state_dir / "pids" / "infra-dockerd.pid").exists()
    assert not infra.infra_paths(state_dir).exec_root.exists()


def test_status_reports_down_with_nonzero_exit(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    port = free_port()
    code = infra.main(
        [
            "status",
            "--state-dir",
            str(state_dir),
            "--registry",
            f"127.0.0.1:{port}",
            "--docker-host",
            f"unix://{tmp_path}/none/docker.sock",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert f"127.0.0.1:{port}: DOWN" in out and "docker engine" in out and "DOWN (not started" in out


@pytest.mark.docker
def test_docker_host_from_environment_is_reused(
    state_dir: Path, docker_env: InfraInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_env.docker_host)
    info = ensure_up(state_dir, registry_addr=docker_env.registry)
    assert info == InfraInfo(docker_host=docker_env.docker_host, registry=docker_env.registry, started=[])
    assert not (state_dir / "pids").exists()


@pytest.mark.docker
def test_concurrent_ensure_up_starts_one_registry(state_dir: Path, docker_env: InfraInfo) -> None:
    registry = f"127.0.0.1:{free_port()}"
    results: list[InfraInfo] = []

    def bring_up() -> None:
        results.append(ensure_up(state_dir, registry_addr=registry, docker_host=docker_env.docker_host))

    threads = [threading.Thread(target=bring_up) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 3 and all(info.started == ["registry"] for info in results)
    log = (state_dir / "registry" / "registry.log").read_text()
    assert "address already in use" not in log
    assert stop_started(state_dir) == ["registry"]
