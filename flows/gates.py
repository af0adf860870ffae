"""Reading a stage task's answer the same way whether its gate passed or failed."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.states import State

from tasks.common import FailedGate

T = TypeVar("T")


async def gate_value(value: T) -> T:
    """What a stage task returned; from a Failed task run (a failed gate, see `tasks.common.gate`) the
    value its state carries, so the flow reads every gate the same way and stops at the first FAIL."""
    if not isinstance(value, State):
        return value
    data = await value.result(raise_on_failure=False)  # type: ignore[misc]
    if isinstance(data, FailedGate):
        return cast(T, data.value)
    if isinstance(data, BaseException):  # a task that crashed outside its guard: nothing to read
        raise data
    raise RuntimeError(f"task run ended {value.name}: {value.message}")
