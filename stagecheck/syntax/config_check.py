"""YAML, JSON (and JSON-with-comments) and TOML syntax checks. Pure: text in, findings out."""

from __future__ import annotations

import functools
import json
import posixpath
import re
from fnmatch import fnmatchcase
from typing import Any

from .model import JSON, TOML, YAML, SyntaxFinding
from .text import line_col_of_char

# ---------------------------------------------------------------------------------------------- YAML

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"


@functools.cache
def tolerant_loader() -> Any:
    """SafeLoader (libyaml's when available) that accepts application-specific tags (CloudFormation
    `!Ref`, `!GetAtt`, Ansible `!vault`, ...) by constructing the plain node underneath, and that
    reports a value that fails to construct (`!!int abc`) as a YAML error at the node instead of a
    bare ValueError. Built on first use: a run with no YAML to check never imports the YAML library."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class TolerantSafeLoader(base):  # type: ignore[misc,valid-type]
        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except yaml.YAMLError:
                raise
            except Exception as exc:  # a constructor choking on a value: a finding, not a crash
                raise yaml.constructor.ConstructorError(
                    None, None, f"invalid value for tag {_short_tag(node.tag)}: {exc}", node.start_mark
                ) from exc

    def construct_untagged(loader: Any, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)

    # `None` is PyYAML's fallback for any tag without a constructor (SafeLoader's raises).
    TolerantSafeLoader.add_constructor(None, construct_untagged)
    return TolerantSafeLoader


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG_PREFIX) if tag.startswith(_YAML_TAG_PREFIX) else tag


def check_yaml_text(text: str, path: str) -> list[SyntaxFinding]:
    """Every document of a (multi-document) YAML stream must load."""
    import yaml

    try:
        for _ in yaml.load_all(text, Loader=tolerant_loader()):  # a SafeLoader subclass
            pass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.problem} ({exc.context}"
            if exc.context_mark is not None and exc.context_mark.line != (line - 1):
                message += f" started at line {exc.context_mark.line + 1}"
            message += ")"
        return [SyntaxFinding(path, line, col, message, YAML)]
    except yaml.reader.ReaderError as exc:
        line, col = line_col_of_char(text, exc.position)
        return [SyntaxFinding(path, line, col, f"invalid character {exc.character!r}: {exc.reason}", YAML)]
    except yaml.YAMLError as exc:
        return [SyntaxFinding(path, 1, 1, f"invalid YAML: {exc}", YAML)]
    return []


# ---------------------------------------------------------------------------------------------- JSON

# Files that are JSON-with-comments by convention (VS Code, TypeScript, devcontainers): comments and
# trailing commas are allowed there, everything else must be strict JSON.
JSONC_NAME_PATTERNS = (
    "*.jsonc",
    "tsconfig*.json",
    "jsconfig*.json",
    "devcontainer.json",
    ".devcontainer.json",
)
JSONC_DIRECTORIES = (".vscode", ".devcontainer")

_JSONC_COMMENT_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?(?:\*/|\Z)', re.DOTALL)
_JSONC_TRAILING_COMMA_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|,(?=\s*[}\]])')


def is_jsonc_path(path: str) -> bool:
    name = posixpath.basename(path)
    parts = path.split("/")[:-1]
    return any(fnmatchcase(name, p) for p in JSONC_NAME_PATTERNS) or any(
        d in parts for d in JSONC_DIRECTORIES
    )


def strip_jsonc(text: str) -> str:
    """Blank out comments and trailing commas, keeping every other character where it was (so error
    positions still point into the original text)."""

    def blank_comment(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else re.sub(r"[^\n]", " ", token)

    def blank_comma(match: re.Match[str]) -> str:
        token = match.group(0)
        return token if token.startswith('"') else " "

    return _JSONC_TRAILING_COMMA_RE.sub(blank_comma, _JSONC_COMMENT_RE.sub(blank_comment, text))


def check_json_text(text: str, path: str, *, allow_comments: bool | None = None) -> list[SyntaxFinding]:
    """Strict JSON, except JSON-with-comments files (`allow_comments`; by default decided from the
    path with `is_jsonc_path`)."""
    lenient = is_jsonc_path(path) if allow_comments is None else allow_comments
    try:
        json.loads(strip_jsonc(text) if lenient else text)
    except json.JSONDecodeError as exc:
        return [SyntaxFinding(path, exc.lineno, exc.colno, exc.msg, JSON)]
    except RecursionError:
        return [SyntaxFinding(path, 1, 1, "nesting too deep to parse", JSON)]
    return []


# ---------------------------------------------------------------------------------------------- TOML

_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END_RE = re.compile(r"\s*\(at end of document\)\s*$")


def check_toml_text(text: str, path: str) -> list[SyntaxFinding]:
    import tomllib  # here: most runs check no TOML, or take its result from the cache

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION_RE.search(message)
        if position:
            line, col = int(position.group(1)), int(position.group(2))
            message = message[: position.start()]
        elif _TOML_AT_END_RE.search(message):
            line, col = line_col_of_char(text, len(text))
            message = _TOML_AT_END_RE.sub("", message) + " (at end of document)"
        else:
            line, col = 1, 1
        return [SyntaxFinding(path, line, col, message, TOML)]
    return []
