"""Pure parts of the pipeline's orchestration and client wrappers (no network, no Docker)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.cloud import run_v2

from stagecheck.clients.cloudrun import build_template, ready_condition, split_from_proto, split_to_proto
from stagecheck.clients.images import ImageRef, registry_base_url
from stagecheck.errors import StageError
from stagecheck.gitinfo import resolve_sha
from stagecheck.model import TrafficTarget
from stagecheck.probe_auth import probe_audience
from stagecheck.probe_targets import serving_targets, websocket_target
from stagecheck.settings import ServiceConfig, Settings, UrlKind
from stagecheck.verdict import required_for
from tasks.deploy import revision_name


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {"project": "demo-project", "region": "europe-west1", "registry": "127.0.0.1:5000",
                               "services": ({"name": "web"},)}
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def test_split_round_trips_through_the_proto() -> None:
    split = [TrafficTarget(revision=None, percent=30), TrafficTarget(revision="web-00001-abc", percent=70, tag="old")]
    proto = split_to_proto(split)
    assert proto[0].type_ == run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
    assert proto[1].type_ == run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    assert split_from_proto(proto) == split


def test_ready_condition_is_found_by_type_not_position() -> None:
    succeeded = run_v2.Condition.State.CONDITION_SUCCEEDED
    failed = run_v2.Condition.State.CONDITION_FAILED
    conditions = [
        run_v2.Condition(type_="ContainerHealthy", state=succeeded),
        run_v2.Condition(type_="Ready", state=failed, message="Container called exit(1)."),
        run_v2.Condition(type_="ResourcesAvailable", state=succeeded),
    ]
    state = ready_condition(conditions)
    assert state.ready is False and state.message == "Container called exit(1)."
    assert ready_condition([run_v2.Condition(type_="Ready", state=succeeded)]).ready is True
    pending = ready_condition([run_v2.Condition(type_="Ready", state=run_v2.Condition.State.CONDITION_RECONCILING)])
    assert pending.ready is None
    assert ready_condition([]).ready is None


def test_template_carries_resources_scaling_env_and_secret_refs() -> None:
    svc = ServiceConfig(name="web", port=9000, memory="1Gi", cpu="2", min_instances=1, max_instances=4,
                        env={"MODE": "staging"}, secrets={"DB_PASSWORD": "db-pass:3"})
    t = build_template(svc, image="r/web@sha256:abc", revision="web-abc1234-xyz", labels={"a": "b"})
    assert t.revision == "web-abc1234-xyz"
    c = t.containers[0]
    assert c.image == "r/web@sha256:abc" and c.ports[0].container_port == 9000
    assert dict(c.resources.limits) == {"cpu": "2", "memory": "1Gi"}
    assert t.scaling.min_instance_count == 1 and t.scaling.max_instance_count == 4
    env = {e.name: e for e in c.env}
    assert env["MODE"].value == "staging"
    ref = env["DB_PASSWORD"].value_source.secret_key_ref
    assert (ref.secret, ref.version) == ("db-pass", "3")
    assert env["DB_PASSWORD"].value == ""  # the secret is a reference, never a value


def test_revision_names_follow_cloud_run_rules() -> None:
    name = revision_name("web", "abc1234", "xyz")
    assert name == "web-abc1234-xyz"
    long_service = "s" * 49
    assert len(revision_name(long_service, "abc1234")) <= 63
    assert revision_name(long_service, "abc1234").startswith(long_service + "-")
    suffixes = {revision_name("web", "abc1234")[-3:] for _ in range(20)}
    assert len(suffixes) > 1


@pytest.mark.parametrize(("ref", "repo", "tag", "digest"), [
    ("127.0.0.1:5000/app:abc", "127.0.0.1:5000/app", "abc", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app", "latest", None),
    ("europe-west1-docker.pkg.dev/p/r/app@sha256:00ff", "europe-west1-docker.pkg.dev/p/r/app", None, "sha256:00ff"),
])
def test_image_refs(ref: str, repo: str, tag: str | None, digest: str | None) -> None:
    parsed = ImageRef.parse(ref)
    assert (parsed.repository, parsed.tag, parsed.digest) == (repo, tag, digest)


def test_registry_scheme_is_http_only_on_loopback() -> None:
    assert registry_base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry_base_url("localhost:5000") == "http://localhost:5000"
    assert registry_base_url("europe-west1-docker.pkg.dev") == "https://europe-west1-docker.pkg.dev"


def test_required_stages_follow_probe_modes_and_dry_run() -> None:
    s = settings()
    assert required_for(s, s.services[0])[:3] == ("syntax", "inspect", "build")
    assert "probe-tagged" in required_for(s, s.services[0])
    off = settings(services=({"name": "web", "health": {"tagged": {"mode": "off"}, "service": {"mode": "off"},
                                                        "lb": {"mode": "off"}}},))
    req = required_for(off, off.services[0])
    assert "probe-tagged" not in req and "probe-serving" not in req and "logs" in req
    dry = settings(dry_run=True)
    assert required_for(dry, dry.services[0]) == ("syntax", "build")


def test_serving_targets_build_urls_and_fail_on_missing_required_lb() -> None:
    s = settings(lb_url="http://127.0.0.1:8781")
    targets, missing = serving_targets(s, s.services[0], "http://127.0.0.1:9999")
    assert [(t.kind, t.url) for t in targets] == [
        (UrlKind.SERVICE, "http://127.0.0.1:9999/health"),
        (UrlKind.LB, "http://127.0.0.1:8781/web/api/health"),
    ]
    assert missing == []
    no_lb = settings()
    targets, missing = serving_targets(no_lb, no_lb.services[0], "http://127.0.0.1:9999")
    assert [t.kind for t in targets] == [UrlKind.SERVICE]
    assert missing[0].status.value == "FAIL" and "lb_url" in missing[0].observed


def test_probe_audiences_are_the_service_url_and_the_configured_lb_audience() -> None:
    s = settings(lb_url="http://127.0.0.1:8781")
    targets, _ = serving_targets(s, s.services[0], "http://127.0.0.1:9999")
    assert [(t.kind, t.audience) for t in targets] == [
        (UrlKind.SERVICE, "http://127.0.0.1:9999"), (UrlKind.LB, "http://127.0.0.1:9999")]
    lb_aud = settings(lb_url="http://127.0.0.1:8781", probes={"lb_audience": "https://shop.example"})
    targets, _ = serving_targets(lb_aud, lb_aud.services[0], "http://127.0.0.1:9999")
    assert [t.audience for t in targets] == ["http://127.0.0.1:9999", "https://shop.example"]
    assert probe_audience(UrlKind.TAGGED, "http://127.0.0.1:9999", lb_aud.probes) == "http://127.0.0.1:9999"
    none = settings(lb_url="http://127.0.0.1:8781", probes={"auth": "none", "lb_audience": "https://shop.example"})
    targets, _ = serving_targets(none, none.services[0], "http://127.0.0.1:9999")
    assert [t.audience for t in targets] == [None, None]  # no token at all


def test_an_unusable_key_file_is_a_stage_error_naming_it(tmp_path: Path) -> None:
    from stagecheck.clients.identity import api_credentials, identity_of

    broken = tmp_path / "key.json"
    broken.write_text("{}")
    with pytest.raises(StageError, match="unusable credentials file"):
        api_credentials(str(broken))
    assert api_credentials(None) is None  # real Google Cloud: the clients use ADC themselves
    broken.write_text('{"client_email": "ci@p.iam.gserviceaccount.com"}')
    assert identity_of(str(broken)) == "serviceAccount:ci@p.iam.gserviceaccount.com"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_git_sha_is_head_and_dirty_build_context_is_refused(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "app.py").write_text("x = 1\n")
    (tmp_path / "other.txt").write_text("a\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert resolve_sha(tmp_path, None) == head
    assert resolve_sha(tmp_path, head[:7]) == head
    with pytest.raises(StageError, match="not the requested"):
        resolve_sha(tmp_path, "0" * 40)
    with pytest.raises(StageError, match="not a hex"):
        resolve_sha(tmp_path, "main")
    (tmp_path / "other.txt").write_text("b\n")  # dirty outside the build context: fine
    assert resolve_sha(tmp_path, None, (tmp_path / "svc",)) == head
    (tmp_path / "svc" / "app.py").write_text("x = 2\n")
    with pytest.raises(StageError, match="uncommitted changes"):
        resolve_sha(tmp_path, None, (tmp_path / "svc",))


def test_not_a_git_repo_needs_an_explicit_sha(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="not a git repository"):
        resolve_sha(tmp_path, None)
    assert resolve_sha(tmp_path, "abcdef1") == "abcdef1"


def test_log_ingestion_check() -> None:
    from stagecheck.log_analysis import LogRecord
    from tasks.logs import ingested_since

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    recs = [LogRecord(timestamp=t0, severity="INFO", message="GET /health", stream="requests", revision="r")]
    assert ingested_since(recs, t0)
    assert not ingested_since(recs, t1)
    stdout_only = [LogRecord(timestamp=t1, severity="INFO", message="x", stream="stdout", revision="r")]
    assert not ingested_since(stdout_only, t0)


def test_websocket_target_only_when_configured() -> None:
    plain = settings()
    assert websocket_target(plain.services[0], "http://127.0.0.1:9") is None
    ws = settings(services=({"name": "web", "health": {"websocket_path": "/ws", "service": {"mode": "advisory"}}},))
    target = websocket_target(ws.services[0], "http://127.0.0.1:9")
    assert target is not None and target.url == "http://127.0.0.1:9/ws" and target.mode.value == "advisory"
    assert websocket_target(ws.services[0], None) is None


def test_split_result_passes_only_when_the_service_serves_what_was_asked() -> None:
    from tasks.traffic import split_result

    asked = [TrafficTarget(revision="web-2", percent=50, tag="sc-2"), TrafficTarget(revision="web-1", percent=50)]
    same = [TrafficTarget(revision="web-1", percent=50), TrafficTarget(revision="web-2", percent=50, tag="sc-2")]
    ok = split_result("traffic", "Traffic shifted", asked, same, "step 1/2: 50 %")
    assert ok.status.value == "PASS" and ok.criteria[0].status.value == "PASS"
    off = split_result("rollback", "restored", asked, [TrafficTarget(revision="web-2", percent=100)], "rolled back")
    assert off.status.value == "FAIL" and "asked" in off.summary
    assert off.evidence[0].data["applied"][0]["percent"] == 100


def test_revision_info_reads_image_resources_scaling_and_times() -> None:
    from datetime import timedelta

    from stagecheck.clients.cloudrun import revision_info

    created = datetime(2026, 1, 1, tzinfo=UTC)
    rev = run_v2.Revision(
        name="projects/p/locations/l/services/web/revisions/web-abc1234-xyz",
        create_time=created,
        containers=[run_v2.Container(image="r/web@sha256:ab",
                                     resources=run_v2.ResourceRequirements(limits={"cpu": "2", "memory": "1Gi"}))],
        scaling=run_v2.RevisionScaling(min_instance_count=1, max_instance_count=4),
        conditions=[run_v2.Condition(type_="Ready", state=run_v2.Condition.State.CONDITION_SUCCEEDED,
                                     last_transition_time=created + timedelta(seconds=3))],
    )
    info = revision_info(rev)
    assert (info.name, info.image, info.cpu, info.memory) == ("web-abc1234-xyz", "r/web@sha256:ab", "2", "1Gi")
    assert (info.min_instances, info.max_instances, info.startup_s) == (1, 4, 3.0)
    assert revision_info(run_v2.Revision(name="x/revisions/bare")).created_at is None


# ---------------------------------------------------------------- traffic as it is, ingress, LB tag URL


def test_split_result_judges_what_serves_not_what_was_asked() -> None:
    from tasks.traffic import split_result

    asked = [TrafficTarget(revision="web-2", percent=100, tag="sc-2")]
    # mid-reconcile: `traffic` already says web-2, `traffic_statuses` still serve web-1
    still_old = [TrafficTarget(revision="web-1", percent=100)]
    fooled = split_result("traffic", "Traffic shifted", asked, still_old, "step 1/1: 100 %")
    assert fooled.status.value == "FAIL" and "serving web-1 100 %" in fooled.summary
    not_done = split_result("traffic", "Traffic shifted", asked, [TrafficTarget(revision="web-2", percent=100)],
                            "step 1/1: 100 %", reconciled=False)
    assert not_done.status.value == "FAIL" and "still reconciling" in not_done.summary
    # LATEST=100 is verified against the revision it must resolve to
    latest = [TrafficTarget(revision=None, percent=100), TrafficTarget(revision="web-2", percent=0, tag="sc-2")]
    served = [TrafficTarget(revision="web-2", percent=100), TrafficTarget(revision="web-2", percent=0, tag="sc-2")]
    assert split_result("release", "released", latest, served, "release", latest="web-2").status.value == "PASS"
    assert split_result("release", "released", latest, served, "release", latest="web-1").status.value == "FAIL"


def test_split_from_statuses_resolves_latest_to_its_revision() -> None:
    from stagecheck.clients.cloudrun import split_from_statuses

    statuses = [run_v2.TrafficTargetStatus(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                                           revision="web-2", percent=100),
                run_v2.TrafficTargetStatus(revision="web-1", tag="old", uri="http://x")]
    assert split_from_statuses(statuses) == [TrafficTarget(revision="web-2", percent=100),
                                             TrafficTarget(revision="web-1", percent=0, tag="old")]


def test_ready_condition_reads_revision_reason_too() -> None:
    failed = run_v2.Condition.State.CONDITION_FAILED
    by_revision = run_v2.Condition(type_="Ready", state=failed, message="Container called exit(2).",
                                   revision_reason=run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR)
    assert ready_condition([by_revision]).reason == "HEALTH_CHECK_CONTAINER_ERROR"
    common = run_v2.Condition(type_="Ready", state=failed, reason=run_v2.Condition.CommonReason.CONTAINER_MISSING)
    assert ready_condition([common]).reason == "CONTAINER_MISSING"


def test_urls_closed_by_ingress_are_advisory_rows_and_the_lb_is_probed() -> None:
    from stagecheck.ingress import closed_by_ingress
    from stagecheck.probe_targets import tagged_targets

    lb_ingress = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert closed_by_ingress("", UrlKind.SERVICE) is None
    assert closed_by_ingress(lb_ingress, UrlKind.LB) is None
    assert "internal-and-cloud-load-balancing" in (closed_by_ingress(lb_ingress, UrlKind.TAGGED) or "")
    assert closed_by_ingress("INGRESS_TRAFFIC_INTERNAL_ONLY", UrlKind.LB) is not None

    s = settings(lb_url="http://127.0.0.1:8781", lb_tag_url="http://127.0.0.1:8781",
                 lb_tag_host="{tag}.{service}.tags.example.test")
    targets, rows = serving_targets(s, s.services[0], "http://127.0.0.1:9999", lb_ingress)
    assert [(t.kind, t.url) for t in targets] == [(UrlKind.LB, "http://127.0.0.1:8781/web/api/health")]
    assert [(r.status.value, r.name) for r in rows] == [("WARN", "service URL healthy")]
    assert rows[0].observed.startswith("closed by ingress internal-and-cloud-load-balancing")

    tagged, notes = tagged_targets(s, s.services[0], "sc-abc1234", "http://127.0.0.1:7000", lb_ingress)
    assert [(t.url, dict(t.headers or {})) for t in tagged] == [
        ("http://127.0.0.1:8781/health", {"Host": "sc-abc1234.web.tags.example.test"})]
    assert notes[0].status.value == "WARN" and "closed by ingress" in notes[0].observed
    open_tagged, open_notes = tagged_targets(s, s.services[0], "sc-abc1234", "http://127.0.0.1:7000")
    assert [t.url for t in open_tagged] == ["http://127.0.0.1:7000/health", "http://127.0.0.1:8781/health"]
    assert open_notes == []


def test_a_worker_inside_the_vpc_probes_the_run_app_urls_of_an_internal_service() -> None:
    """`worker_in_vpc`: internal ingress admits requests from the VPC (docs securing/ingress), so the tag URL is
    probed before traffic moves instead of being an advisory row; an external LB stays closed by `internal`."""
    from stagecheck.ingress import closed_by_ingress
    from stagecheck.probe_targets import tagged_targets

    internal = "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert closed_by_ingress(internal, UrlKind.TAGGED) is not None
    assert closed_by_ingress(internal, UrlKind.TAGGED, in_vpc=True) is None
    assert closed_by_ingress(internal, UrlKind.LB, in_vpc=True) is not None
    assert closed_by_ingress("INGRESS_TRAFFIC_NONE", UrlKind.SERVICE, in_vpc=True) is not None
    outside = settings()
    inside = settings(worker_in_vpc=True)
    tagged, notes = tagged_targets(outside, outside.services[0], "sc-abc1234", "http://127.0.0.1:7000", internal)
    assert tagged == [] and "closed by ingress internal" in notes[0].observed
    tagged, notes = tagged_targets(inside, inside.services[0], "sc-abc1234", "http://127.0.0.1:7000", internal)
    assert [(t.kind, t.url) for t in tagged] == [(UrlKind.TAGGED, "http://127.0.0.1:7000/health")] and notes == []
    targets, rows = serving_targets(inside, inside.services[0], "http://127.0.0.1:9999", internal)
    assert [t.kind for t in targets] == [UrlKind.SERVICE]
    assert [(r.name, r.status.value) for r in rows] == [("lb URL healthy", "WARN")]  # an external LB: still closed


def test_lb_tag_url_takes_only_tag_and_service() -> None:
    from stagecheck.settings import ConfigError, load_settings

    good = settings(lb_tag_url="https://{tag}.tags.example.com/{service}/")
    assert good.lb_tag_target("sc-1", "web") == ("https://sc-1.tags.example.com/web", {})
    assert settings().lb_tag_target("sc-1", "web") is None
    with pytest.raises(ValueError, match="only \\{tag\\} and \\{service\\}"):
        settings(lb_tag_url="https://{revision}.example.com")
    with pytest.raises(ConfigError, match="after_pass"):
        load_settings(overrides={"project": "demo-project", "region": "europe-west1", "registry": "r",
                                 "services": [{"name": "web"}], "traffic": {"after_pass": "sometimes"}})


def test_gcp_example_probes_the_lb_without_doubling_the_prefix() -> None:
    from stagecheck.settings import load_settings

    gcp = load_settings(Path(__file__).resolve().parents[2] / "examples" / "stagecheck.gcp.toml", environ={})
    targets, _ = serving_targets(gcp, gcp.services[0], "https://sample-abc-ew.a.run.app")
    assert [t.url for t in targets if t.kind is UrlKind.LB] == ["https://staging.example.com/sample/api/health"]
    assert gcp.lb_tag_target("sc-abc1234", "sample") == ("https://sc-abc1234.tags.staging.example.com", {})
    assert gcp.traffic.after_pass.value == "latest" and gcp.traffic.keep_tags == 3
