"""The import contracts of `make lint` (pyproject [tool.importlinter]) hold for the code as it is, and an
import that breaks one makes the checker fail, naming the contract and the offending line. The checker runs
on a copy of the packages, so the injected import never touches the working tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "localenv", "deployments", "flows", "tasks", "stagecheck", "sandbox")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def copy_project(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    # the copy comes first on the path, ahead of the editable install of the working tree
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)


def inject(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}  # injected by the test\n")


def test_the_code_keeps_every_contract(tmp_path: Path) -> None:
    proc = lint_imports(copy_project(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 5 kept, 0 broken." in proc.stdout


LAYERS = "layers: cli -> deployments -> flows -> tasks -> stagecheck"
CORE = "the core imports no flow, task, deployment, cli or tooling"


@pytest.mark.parametrize(("module", "line", "contracts", "finding"), [
    # the core reaching up breaks the layers and the core's own contract
    ("stagecheck/verdict.py", "import tasks.common", (LAYERS, CORE), "stagecheck.verdict -> tasks.common"),
    ("flows/validate.py", "import cli.main", (LAYERS,), "flows.validate -> cli.main"),
    ("tasks/probe.py", "import sandbox.model", ("the pipeline never imports the sandbox",),
     "tasks.probe -> sandbox.model"),
    ("sandbox/model.py", "import stagecheck.redact", ("the sandbox imports neither the pipeline nor localenv",),
     "sandbox.model -> stagecheck.redact"),
    ("localenv/control.py", "import deployments.events", ("localenv never imports the pipeline",),
     "localenv.control -> deployments.events"),
])
def test_an_import_that_breaks_a_contract_fails_the_lint(tmp_path: Path, module: str, line: str,
                                                        contracts: tuple[str, ...], finding: str) -> None:
    project = copy_project(tmp_path)
    inject(project / module, line)
    proc = lint_imports(project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())
    for contract in contracts:
        assert f"{contract} BROKEN" in text
    assert finding in proc.stdout
    assert f"Contracts: {5 - len(contracts)} kept, {len(contracts)} broken." in proc.stdout
