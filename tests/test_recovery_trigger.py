"""The recovery deployment's trigger (pure): a crashed run of the validation flow, nothing else."""

from __future__ import annotations

from deployments.definitions import CRASHED_EVENT, FLOW_NAME, RECOVERY_ENTRYPOINT, recovery_trigger


def test_the_trigger_fires_on_a_crashed_validation_run_and_passes_the_run() -> None:
    trigger = recovery_trigger()
    assert trigger.expect == {CRASHED_EVENT} == {"prefect.flow-run.Crashed"}
    dumped = trigger.model_dump(mode="json")
    assert dumped["match"] == {"prefect.resource.id": "prefect.flow-run.*"}
    assert dumped["match_related"] == {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME}
    assert trigger.parameters == {"crashed_run": "{{ event.resource.id }}"}
    assert RECOVERY_ENTRYPOINT == "flows/recover.py:recover"
