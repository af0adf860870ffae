"""The docs stay true: the configuration reference is what the settings model generates and names every key;
no README or docs page links to a file or heading that does not exist, or names a path outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from stagecheck.settings import Settings
from tools import gen_config_doc

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)|^\[[^\]]+\]:\s*(\S+)",
                  re.MULTILINE)


def model_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a settings model, read from pydantic's own field list (not the generator's walk)."""
    out = []
    for name, field in model.model_fields.items():
        path = prefix + name
        out.append(path)
        annotation = field.annotation
        inner = [a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type)
                 and issubclass(a, BaseModel)]
        if inner and inner[0] is not model:
            listed = getattr(annotation, "__origin__", None) in (tuple, list)
            out += model_paths(inner[0], f"{path}[]." if listed else f"{path}.")
    return out


def test_the_configuration_reference_is_what_the_model_generates() -> None:
    assert gen_config_doc.main(["--check"]) == 0, "run `python -m tools.gen_config_doc` and commit docs/configuration.md"


def test_the_configuration_reference_names_every_key_of_the_model() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    paths = model_paths(Settings)
    assert len(paths) > 90  # the walk reached the nested tables (services[], probes, logs, ...)
    assert [p for p in paths if f"| `{p}` |" not in page] == []


def test_every_key_has_a_description() -> None:
    """From its Field description or the comment on its line in stagecheck/settings/ (or the annotated guide)."""
    assert [k.path for k in gen_config_doc.keys() if not k.description] == []


def test_the_generated_rows_carry_type_default_and_rule() -> None:
    rows = {k.path: k for k in gen_config_doc.keys()}
    assert rows["probes.deadline_s"].type == "float" and rows["probes.deadline_s"].default == "`60.0`"
    assert "> 0" in rows["probes.deadline_s"].rule
    assert rows["project"].default == "required" and "6-30 characters" in rows["project"].rule
    assert rows["traffic.after_pass"].type == '"latest" | "pinned"'
    assert rows["services[].health.lb.path"].default == '`"/api/health"`'  # the table's own default, not UrlCheck's


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [next(g for g in m.groups() if g) for m in LINK.finditer(text)]


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http(s), mailto: not checked here
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (path and REPO not in (file, *file.parents)):
            dead.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            dead.append(target)
    return dead


def test_no_page_has_a_dead_relative_link() -> None:
    assert {p.name: dead_links(p) for p in PAGES if dead_links(p)} == {}


def test_no_page_names_a_path_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|/work/|(?<![\w.])\.\./\.\./")
    assert {p.name: outside.findall(p.read_text()) for p in PAGES if outside.search(p.read_text())} == {}


def test_the_link_checker_sees_a_dead_link_and_an_outside_path(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad anchor](#nowhere)\n")
    assert dead_links(page) == ["missing.md", "#nowhere"]
