"""Every package the code imports is one it declares (pyproject.toml), not one it happens to get through another:
the pipeline's imports are `dependencies` (what the worker image installs) or the `gcp` extra (imported only when
a GcpCredentials block is configured); the sandbox's are those or the `sandbox` extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ("stagecheck", "flows", "tasks", "deployments", "cli", "localenv")
OURS = {*PIPELINE, "sandbox", "tests", "benchmarks", "tools"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in requirements}


@cache
def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return (requirement_names(project["dependencies"]),
            {extra: requirement_names(reqs) for extra, reqs in project["optional-dependencies"].items()})


def imported_modules(package: str) -> set[str]:
    """Absolute imports of third-party modules in a package (`from a.b import c` counts as a.b.c when that is a
    module: the way to tell google.cloud.run_v2 from google.cloud.logging)."""
    found: set[str] = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in OURS and top not in sys.stdlib_module_names:
                    found.add(name)
    return found


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return dict(packages_distributions())


@cache
def _file_owners(top: str) -> dict[Path, str]:
    owners: dict[Path, str] = {}
    candidates = set(_top_level_owners().get(top, []))
    for dist in distributions():
        if dist.metadata["Name"] in candidates:
            for file in dist.files or []:
                owners[Path(str(dist.locate_file(file))).resolve()] = normalise(dist.metadata["Name"])
    return owners


def distribution_of(name: str) -> str:
    """The installed distribution that provides module `name` (or, for `from m import attr`, module m)."""
    parts = name.split(".")
    top = parts[0]
    owners = set(_top_level_owners().get(top, []))
    if len(owners) == 1:
        return normalise(owners.pop())
    for end in range(len(parts), 1, -1):  # a namespace package (google.*): the file of the deepest module
        for base in sys.path:  # found on the path, not imported
            where = Path(base or ".", *parts[:end])
            for candidate in (where / "__init__.py", where.with_suffix(".py")):
                owner = _file_owners(top).get(candidate.resolve()) if candidate.is_file() else None
                if owner:
                    return owner
    raise AssertionError(f"no installed distribution provides {name}")


@pytest.mark.parametrize(("package", "allowed_extras"), [
    *((package, ("gcp",)) for package in PIPELINE),
    ("sandbox", ("sandbox",)),
])
def test_every_third_party_import_is_a_declared_dependency(package: str, allowed_extras: tuple[str, ...]) -> None:
    core, extras = declared()
    allowed = core.union(*(extras[extra] for extra in allowed_extras))
    undeclared = {name: dist for name in imported_modules(package)
                  if (dist := distribution_of(name)) not in allowed}
    assert not undeclared, f"{package} imports packages pyproject.toml does not declare: {undeclared}"


def test_the_scan_sees_namespace_packages_and_undeclared_imports(tmp_path: Path) -> None:
    assert distribution_of("google.cloud.run_v2") == "google-cloud-run"
    assert distribution_of("google.cloud.logging") == "google-cloud-logging"
    assert distribution_of("google.api_core.retry") == "google-api-core"
    assert distribution_of("yaml") == "pyyaml"
    # a transitive package (anyio comes with httpx and prefect) is not a declared one
    assert distribution_of("anyio") not in declared()[0]
