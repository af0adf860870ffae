"""Every Prefect task carries a docstring: Prefect shows it as the task's description in the UI."""

from __future__ import annotations

import importlib
import pkgutil

from prefect import Task

import tasks


def all_tasks() -> dict[str, Task]:  # type: ignore[type-arg]
    found = {}
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        found.update({f"{module.__name__}.{name}": obj for name, obj in vars(module).items() if isinstance(obj, Task)})
    return found


def test_every_task_has_a_description() -> None:
    found = all_tasks()
    assert "tasks.build.build_image" in found
    assert "tasks.traffic.rollback_traffic" in found
    missing = sorted(name for name, task in found.items() if not (task.description or "").strip())
    assert missing == []
