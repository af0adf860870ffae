"""Write docs/configuration.md from the settings model: every key, its type, default, rule and description.

    python -m tools.gen_config_doc           # rewrite docs/configuration.md
    python -m tools.gen_config_doc --check   # exit 1 when the committed page is stale (tests do this too)

Descriptions come from each field's `description`, else the comment on its line in the model's source;
rules from the field's constraints, its enum's values and the messages its validators raise.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from stagecheck.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "configuration.md"
EXAMPLES = ("examples/stagecheck.gcp.toml", "examples/stagecheck.sandbox.toml")
# the sections `STAGECHECK_<SECTION>__<KEY>` reaches (stagecheck.settings.sources.env_overrides); lists are file-only
SECTION_TITLES = {"": "Top level", "services[]": "`[[services]]` (one table per Cloud Run service)"}


@dataclass(frozen=True)
class Key:
    path: str  # dotted, lists as `services[]`
    type: str
    default: str
    rule: str
    description: str
    example: str


def type_name(annotation: Any) -> str:
    """A reader's spelling of a field's type: `float`, `list of str`, `"warn" | "fail"`, `table`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" (optional)" if type(None) in args else "")
    if origin in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin in (dict, typing.Mapping) or annotation is dict:
        return "table of " + " -> ".join(type_name(a) for a in args) if args else "table"
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' for a in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(f'"{m.value}"' for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    if isinstance(annotation, type):
        return {"Path": "path"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or value == () or value == {}:
        return "—"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, Enum):
        return f'`"{value.value}"`'
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, Path):
        return f'`"{value}"`'
    return f"`{value!r}`".replace("True", "true").replace("False", "false")


def constraint_text(field: FieldInfo) -> list[str]:
    words = []
    for meta in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "length ≥"),
                             ("max_length", "length ≤"), ("pattern", "matches")):
            value = getattr(meta, attr, None)
            if value is not None:
                words.append(f"{symbol} {value}")
    return words


def _literal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)  # type: ignore[misc]
    if isinstance(node, ast.BinOp):
        left, right = _literal(node.left), _literal(node.right)
        return (left or "") + (right or "") if left or right else None
    return None


def source_notes(model: type[BaseModel]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """From a model class's source: the comment on each field's line, and the messages its validators raise."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}, {}
    lines = source.splitlines()
    comments: dict[str, str] = {}
    rules: dict[str, list[str]] = {}
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef)
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.end_lineno - 1] if node.end_lineno else ""
            if "  # " in line:
                comments[node.target.id] = line.split("  # ", 1)[1].strip()
        if isinstance(node, ast.FunctionDef):
            fields = [a.value for d in node.decorator_list if isinstance(d, ast.Call)
                      and getattr(d.func, "id", "") == "field_validator"
                      for a in d.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            messages = [m for r in ast.walk(node) if isinstance(r, ast.Raise) and isinstance(r.exc, ast.Call)
                        for a in r.exc.args[:1] if (m := _literal(a))]
            for name in fields:
                rules.setdefault(name, []).extend(messages)
    return comments, rules


def example_values() -> dict[str, Any]:
    """Values the shipped example configs set, by dotted key (the first service's for `services[]`)."""
    found: dict[str, Any] = {}

    def walk(prefix: str, data: Any) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        elif isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
            walk(prefix + "[]", data[0])
        else:
            found.setdefault(prefix, data)

    for name in EXAMPLES:
        walk("", tomllib.loads((REPO / name).read_text()))
    return found


def guide_comments() -> dict[str, str]:
    """The comment on each `key = value  # comment` line of the annotated example (docs/configuration-guide.md)."""
    found: dict[str, str] = {}
    section = ""
    text = (REPO / "docs" / "configuration-guide.md").read_text()
    for block in text.split("```toml")[1:]:
        for line in block.split("```")[0].splitlines():
            stripped = line.strip()
            if stripped.startswith("[["):
                section = stripped.strip("[]").split("#")[0].strip() + "[]."
            elif stripped.startswith("["):
                name = stripped.split("]")[0].strip("[")
                section = (name.replace("services.", "services[].") if name.startswith("services.") else name) + "."
            elif "=" in stripped and "  # " in stripped and not stripped.startswith("#"):
                key = stripped.split("=", 1)[0].strip()
                found.setdefault(section + key, stripped.split("  # ", 1)[1].strip())
    return found


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings table a field holds (itself, optional, or a list of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def is_list(annotation: Any) -> bool:
    if get_origin(annotation) in (tuple, list):
        return True
    return any(is_list(a) for a in get_args(annotation) if a is not type(None))


def keys(model: type[BaseModel] = Settings, prefix: str = "", examples: dict[str, Any] | None = None,
         instance: BaseModel | None = None) -> list[Key]:
    """Every key of the model, depth first: tables are walked into, each leaf is one Key. `instance`: the
    table's own default (e.g. `health.lb` defaults to path "/api/health"), whose values are the defaults."""
    examples = example_values() if examples is None else examples
    comments, rules = source_notes(model)
    comments = {**{k[len(prefix):]: v for k, v in GUIDE.items() if k.startswith(prefix) and "." not in
                   k[len(prefix):]}, **comments}
    out: list[Key] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        inner = model_of(field.annotation)
        rule = constraint_text(field) + rules.get(name, [])
        description = field.description or comments.get(name, "")
        if inner is not None and inner is not model:
            child = f"{path}[]." if is_list(field.annotation) else f"{path}."
            kind = "list of tables" if is_list(field.annotation) else "table"
            out.append(Key(path, kind, default_text(field) if not field.is_required() else "required",
                           "; ".join(rule), description or (inner.__doc__ or "").strip().splitlines()[0]
                           if (description or inner.__doc__) else "", ""))
            table_default = field.get_default(call_default_factory=True) if not field.is_required() else None
            own = getattr(instance, name, None) if instance is not None else None
            out.extend(keys(inner, child, examples, own if isinstance(own, BaseModel) else
                            table_default if isinstance(table_default, BaseModel) else None))
            continue
        example = examples.get(path)
        default = default_text(field)
        if instance is not None and not field.is_required():
            default = default_text(FieldInfo(default=getattr(instance, name)))
        out.append(Key(path, type_name(field.annotation), default, "; ".join(rule), description,
                       "" if example is None else f"`{toml_value(example)}`"))
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_of(path: str) -> str:
    head = path.split(".")[0]
    return "" if "." not in path else head


GUIDE = guide_comments()


def render() -> str:
    all_keys = keys()
    parts = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m tools.gen_config_doc` from stagecheck/settings/; do not edit by hand -->",
        "",
        "Every key of `stagecheck.toml`, generated from the settings model (`stagecheck/settings/`). Sources,",
        "lowest to highest precedence: built-in defaults < the TOML file < environment (`STAGECHECK_<KEY>`,",
        "nested with `__`, e.g. `STAGECHECK_PROBES__DEADLINE_S=90`; lists of tables such as `services` are",
        "file-only) < overrides (flow parameters, CLI flags). A bad value stops the command with exit 2, naming",
        "the key and its rule. An annotated example: [configuration-guide.md](configuration-guide.md); the",
        "shipped configs: [stagecheck.gcp.toml](../examples/stagecheck.gcp.toml),",
        "[stagecheck.sandbox.toml](../examples/stagecheck.sandbox.toml). The *example* column shows the value",
        "those files set.",
        "",
        f"{len(all_keys)} keys.",
    ]
    sections: dict[str, list[Key]] = {}
    for key in all_keys:
        sections.setdefault(section_of(key.path), []).append(key)
    for section, members in sections.items():
        title = SECTION_TITLES.get(section, f"`[{section}]`")
        parts += ["", f"## {title}", "", "| key | type | default | rule | description | example |",
                  "|---|---|---|---|---|---|"]
        parts += [f"| `{k.path}` | {cell(k.type)} | {cell(k.default)} | {cell(k.rule)} | {cell(k.description)} "
                  f"| {cell(k.example)} |" for k in members]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(REPO)} is stale: run `python -m tools.gen_config_doc`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(REPO)} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
