"""Service annotations as Cloud Run v2 takes them: Kubernetes' key rules and 256 KiB limit, the reserved
namespaces, and an annotations-only update (etag + `update_mask=annotations`) that changes nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from sandbox import model
from tests.fixtures_sandbox import RunClients
from tests.sandbox.test_templates import create, field_violations, rpc_status, update

pytestmark = [pytest.mark.sandbox, pytest.mark.docker]


@pytest.mark.parametrize(("key", "says"), [
    ("-starts-with-a-dash", "must start and end with an alphanumeric character"),
    ("has space", "must start and end with an alphanumeric character"),
    ("n" * 64, "no more than 63 characters"),
    ("Bad_Prefix!/name", "prefix part must be a DNS subdomain"),
    ("a/b/c", "at most one '/'"),
    ("example.com/", "name part must be non-empty"),
])
def test_invalid_annotation_keys_are_rejected(key: str, says: str) -> None:
    assert model.annotation_key_problem(key) is not None and says in str(model.annotation_key_problem(key))


@pytest.mark.parametrize("key", ["stagecheck.dev/rollout", "Team", "a.b-c_d", "x" * 63, "MyName", "example.com/MyName"])
def test_valid_annotation_keys_pass(key: str) -> None:
    assert model.annotation_key_problem(key) is None


def test_annotation_rules_on_the_api(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("ann")
    template = run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref)])
    for metadata, says in (({"bad key": "x"}, "is invalid"),
                           ({"big": "x" * (model.MAX_ANNOTATIONS_BYTES - 2)}, "too long")):
        with pytest.raises(gexc.BadRequest) as info:
            create(run_clients, name, template, annotations=metadata)
        assert field_violations(info.value) == ["service.annotations"] and says in info.value.message
    # exactly the limit (keys and values together) is accepted
    svc = create(run_clients, name, template, annotations={"big": "x" * (model.MAX_ANNOTATIONS_BYTES - 3)})
    assert len(svc.annotations["big"]) == model.MAX_ANNOTATIONS_BYTES - 3


def test_an_annotations_only_update_changes_nothing_else_and_is_guarded_by_the_etag(
    run_clients: RunClients, sample_image: Any, new_service: Callable[[str], str]
) -> None:
    name = new_service("annupd")
    template = run_v2.RevisionTemplate(containers=[run_v2.Container(image=sample_image.ref)])
    svc = create(run_clients, name, template, annotations={"owner": "team-a"})
    revision, traffic = svc.latest_ready_revision, list(svc.traffic)

    body = run_v2.Service(svc)
    body.annotations["stagecheck.dev/rollout"] = '{"version": 1}'
    body.template.containers[0].env = [run_v2.EnvVar(name="IGNORED", value="1")]  # outside the mask: ignored
    body.traffic = []  # outside the mask: ignored
    after = update(run_clients, body, mask=["annotations"])
    assert dict(after.annotations) == {"owner": "team-a", "stagecheck.dev/rollout": '{"version": 1}'}
    assert after.latest_created_revision == revision and list(after.traffic) == traffic
    assert not after.template.containers[0].env

    stale = run_v2.Service(svc)  # the etag read before the update above
    stale.annotations.pop("owner")
    with pytest.raises(gexc.Conflict) as info:
        update(run_clients, stale, mask=["annotations"])
    assert rpc_status(info.value) == "ABORTED"

    # removing the key (the map without it, the mask naming the map) clears it
    cleared = run_v2.Service(after)
    cleared.annotations.pop("stagecheck.dev/rollout")
    final = update(run_clients, cleared, mask=["annotations"])
    assert dict(final.annotations) == {"owner": "team-a"}
