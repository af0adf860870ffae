"""The sandbox's template and update-mask rules as pure functions (no server, no Docker)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import model
from sandbox.errors import ApiError

CURRENT: dict[str, Any] = {
    "labels": {"team": "a"},
    "template": model.normalize_template({
        "serviceAccount": "sa@p.iam.gserviceaccount.com",
        "scaling": {"minInstanceCount": 1, "maxInstanceCount": 5},
        "containers": [{"image": "img:1"}],
    }),
    "traffic": [{"type": 1, "percent": 100}],
}


def test_no_mask_or_star_replaces_the_whole_resource() -> None:
    incoming = {"template": model.normalize_template({"containers": [{"image": "img:2"}]})}
    for mask in (None, "", "*"):
        assert model.apply_update_mask(CURRENT, incoming, model.parse_update_mask(mask)) == incoming


def test_nested_and_snake_case_paths_change_only_that_field() -> None:
    incoming = {"template": model.normalize_template({"scaling": {"maxInstanceCount": 9},
                                                      "containers": [{"image": "img:2"}]})}
    for mask in ("template.scaling.maxInstanceCount", "template.scaling.max_instance_count"):
        merged = model.apply_update_mask(CURRENT, incoming, model.parse_update_mask(mask))
        assert merged["template"]["scaling"] == {"minInstanceCount": 1, "maxInstanceCount": 9}
        assert merged["template"]["containers"][0]["image"] == "img:1"
        assert merged["template"]["serviceAccount"] == "sa@p.iam.gserviceaccount.com"
        assert merged["labels"] == {"team": "a"} and merged["traffic"] == CURRENT["traffic"]
    assert CURRENT["template"]["scaling"]["maxInstanceCount"] == 5  # the stored spec is not modified


def test_a_named_path_missing_from_the_body_is_cleared_and_output_only_paths_are_ignored() -> None:
    merged = model.apply_update_mask(CURRENT, {"template": CURRENT["template"], "uri": "x"},
                                    model.parse_update_mask("labels,uri,etag"))
    assert "labels" not in merged and "uri" not in merged
    assert merged["template"] == CURRENT["template"]


@pytest.mark.parametrize("mask", ["bogus", "template.bogus", "traffic.percent", "template.scaling.minInstanceCount.x",
                                  "labels.team"])
def test_unknown_mask_paths_are_rejected(mask: str) -> None:
    with pytest.raises(ApiError) as info:
        model.parse_update_mask(mask)
    assert info.value.http_status == 400 and info.value.field == "update_mask"


def test_an_omitted_mask_read_as_populated_fields_keeps_the_rest() -> None:
    """fidelity `no_mask="populated"` (AIP-134): the fields the body populates replace theirs, the rest stay."""
    incoming = {"labels": {"team": "b"}, "template": model.normalize_template({})}
    merged = model.apply_update_mask(CURRENT, incoming, model.populated_paths({"labels": {"team": "b"},
                                                                               "etag": '"x"'}))
    assert merged["labels"] == {"team": "b"}
    assert merged["template"] == CURRENT["template"] and merged["traffic"] == CURRENT["traffic"]


def test_unknown_mask_paths_are_dropped_when_the_switch_says_ignore() -> None:
    assert model.parse_update_mask("bogus,traffic", unknown="ignore") == [["traffic"]]


def test_enums_sent_as_integers_are_stored_as_names_so_templates_compare_equal() -> None:
    as_ints = model.normalize_template({"executionEnvironment": 2, "vpcAccess": {"connector": "c", "egress": 1},
                                        "containers": [{"image": "i"}]})
    as_names = model.normalize_template({"executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
                                         "vpcAccess": {"connector": "c", "egress": "ALL_TRAFFIC"},
                                         "containers": [{"image": "i"}]})
    assert as_ints == as_names and as_ints["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN2"
    assert model.normalize_template(as_ints) == as_ints  # idempotent


def test_cpu_idle_and_concurrency_defaults() -> None:
    without = model.normalize_template({"containers": [{"image": "i"}]})
    assert without["containers"][0]["resources"]["cpuIdle"] is True
    assert without["maxInstanceRequestConcurrency"] == 80
    sent = model.normalize_template({"containers": [{"image": "i", "resources": {"limits": {"cpu": "0.5"}}}]})
    assert "cpuIdle" not in sent["containers"][0]["resources"]  # absent = false = always-on CPU
    assert sent["maxInstanceRequestConcurrency"] == 1


@pytest.mark.parametrize(("cpus", "ceiling_mib"), [(0.08, 512), (0.49, 512), (0.5, 1024), (0.99, 1024), (1, 4096),
                                                   (2, 8192), (4, 16384), (6, 24576), (8, 32768)])
def test_memory_ceiling_follows_the_cpu_table(cpus: float, ceiling_mib: int) -> None:
    assert model.memory_ceiling(cpus) == ceiling_mib * 2**20


def _sidecar_template(*containers: dict[str, Any]) -> dict[str, Any]:
    return model.normalize_template({"containers": list(containers)})


SIDECAR = {"name": "otel", "image": "otel/collector:1"}
INGRESS = {"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}], "dependsOn": ["otel"]}


def test_a_multi_container_template_runs_its_ingress_container_and_keeps_the_sidecars() -> None:
    """Cloud Run sidecars: one ingress container (the one with a port, wherever it stands), the others kept."""
    tpl = _sidecar_template(SIDECAR, INGRESS)
    model.validate_template(tpl)
    spec = model.container_spec(tpl)
    assert spec.image == "web:1" and spec.container_port == 8080
    assert "ports" not in tpl["containers"][0]  # no default port is added to a sidecar
    assert [c["name"] for c in tpl["containers"]] == ["otel", "web"]
    assert model.start_order({"web": ["otel"], "otel": []}) == ["otel", "web"]


@pytest.mark.parametrize(("containers", "field", "text"), [
    ([SIDECAR, {**SIDECAR, "name": "log"}], "service.template.containers", "exactly one container"),
    ([{**INGRESS, "dependsOn": []}, {**INGRESS, "name": "api", "dependsOn": []}], "service.template.containers",
     "exactly one container"),
    ([SIDECAR, {**INGRESS, "dependsOn": ["db"]}], "service.template.containers[1].depends_on", "'db'"),
    ([{**SIDECAR, "dependsOn": ["web"]}, INGRESS], "service.template.containers", "cycle"),
    ([SIDECAR, {**INGRESS, "name": "otel", "dependsOn": []}], "service.template.containers[1].name", "unique"),
    ([{"image": "otel/collector:1"}, INGRESS], "service.template.containers[0].name", "DNS label"),
    ([{**SIDECAR, "name": f"s{i}"} for i in range(10)] + [INGRESS], "service.template.containers", "at most 10"),
    ([{**INGRESS, "ports": [{"containerPort": 8080}, {"containerPort": 9090}], "dependsOn": []}],
     "service.template.containers[0].ports", "single port"),
])
def test_multi_container_templates_are_validated_like_cloud_run(containers: list[dict[str, Any]], field: str,
                                                                text: str) -> None:
    with pytest.raises(ApiError) as info:
        model.validate_template(_sidecar_template(*containers))
    assert info.value.http_status == 400 and info.value.field == field
    assert text in str(info.value)
