"""An OpenAPI 3.0 / 3.1 document reduced to what a client depends on, pure.

- internal `$ref`s resolved (a reference back into a schema being resolved becomes a `cycle` marker);
  the component names vanish with them, so pydantic's `Item-Input` / `Item-Output` churn is no change;
- the three nullability spellings (`nullable: true`, `type: [X, "null"]`, `anyOf: [X, {type: null}]`,
  also `oneOf`, and a `null` enum value) become one `nullable` flag;
- `allOf` merged into one schema; 3.0's boolean `exclusiveMaximum` becomes 3.1's number;
- documentation-only fields (descriptions, titles, examples, `x-*` extensions, tags, operation ids) dropped;
- operations keyed by method and path with parameter names blanked (`/items/{}`), path parameters by
  position, other parameters by location and name (headers case-insensitive).

A normalised schema is a plain dict (fast to build and compare): `type` (sorted tuple, absent = any),
`format`, `nullable`, `properties`, `required` (frozenset), `items`, `enum` (tuple), `maximum` /
`minimum` ((value, exclusive)), `maxLength`, `minLength`, `maxItems`, `minItems`, `pattern`,
`readOnly`, `writeOnly`, `variants` (remaining oneOf/anyOf), `cycle`, `ref` (an external reference).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{[^}/]*\}")
_KEEP = frozenset(("format", "pattern", "maxLength", "minLength", "maxItems", "minItems", "readOnly", "writeOnly"))
_BOUNDS = frozenset(("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"))
_TEXT = json.JSONEncoder(default=str, check_circular=False)  # one encoder: json.dumps(default=...) builds one per call
_COMBINERS = frozenset(("oneOf", "anyOf"))
_READ = _KEEP | _BOUNDS | {"type", "nullable", "enum", "const", "properties", "required", "items",
                           "additionalProperties", "oneOf", "anyOf", "allOf"}


@dataclass
class Parameter:
    location: str  # path | query | header | cookie
    name: str
    required: bool
    schema: Schema


@dataclass
class Body:
    required: bool
    content: dict[str, Schema]  # media type -> schema


@dataclass
class Operation:
    method: str  # upper case
    path: str  # as the document writes it
    deprecated: bool = False
    sunset: str | None = None  # x-sunset
    parameters: dict[tuple[str, str], Parameter] = field(default_factory=dict)
    body: Body | None = None
    responses: dict[str, dict[str, Schema]] = field(default_factory=dict)  # status -> media type -> schema

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def path_key(path: str) -> str:
    """`/items/{id}` and `/items/{item_id}` are the same endpoint."""
    return _PARAM.sub("{}", path)


class _Resolver:
    def __init__(self, doc: dict[str, Any], leaves: dict[Any, Schema] | None = None) -> None:
        self.doc = doc
        self.memo: dict[str, Schema] = {}
        self.stack: list[str] = []
        # flat schemas (`{"type": "integer"}`: most of a document) by their items and value types: built
        # once, and shared by both documents of a comparison, so equal leaves compare by identity
        self.leaves: dict[Any, Schema] = {} if leaves is None else leaves

    def target(self, ref: str) -> Any:
        node: Any = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def deref(self, node: Any) -> Any:
        """A non-schema object ($ref to a parameter, response, request body), followed to its target."""
        seen: set[str] = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            ref = node["$ref"]
            if ref in seen:
                return {}
            seen.add(ref)
            node = self.target(ref)
        return node if isinstance(node, dict) else {}

    def whole(self, raw: Any) -> Schema:
        """A schema a document names as a whole (a response's, a body's, a parameter's, a component): when
        it refers to nothing, normalised once per JSON text for both documents of a comparison, so
        what the two share (most of it) is built once and compares by identity."""
        if not isinstance(raw, dict) or not raw:
            return self.schema(raw)
        text = _TEXT.encode(raw)
        if '"$ref"' in text:
            return self.schema(raw)
        cached = self.leaves.get(text)
        if cached is None:
            cached = self.leaves[text] = self.schema(raw)
        return cached

    def schema(self, raw: Any) -> Schema:
        if raw is True or raw is None:
            return {}
        if raw is False:
            return {"never": True}
        if not isinstance(raw, dict):
            return {}
        ref = raw.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#/"):
                return {"ref": ref}
            if ref in self.stack:
                return {"cycle": True}
            if ref in self.memo:
                return self.memo[ref]
            self.stack.append(ref)
            try:
                out = self.whole(self.target(ref))
            finally:
                self.stack.pop()
            self.memo[ref] = out
            return out
        try:  # unhashable (nested dicts, enum lists): not a flat schema
            key = (tuple(raw.items()), tuple(map(type, raw.values())))
            cached = self.leaves.get(key)
        except TypeError:
            return self._build(raw)
        if cached is None:
            cached = self.leaves[key] = self._build(raw)
        return cached

    def _build(self, raw: dict[str, Any]) -> Schema:
        present = _READ.intersection(raw)  # most schemas carry two or three of these: test only those
        out: Schema = {}
        kept = present & _KEEP
        if kept:
            for key in kept:
                out[key] = raw[key]
        nullable = raw.get("nullable") is True
        if "type" in present:
            kind = raw["type"]
            if isinstance(kind, list):
                nullable = nullable or "null" in kind
                kinds = tuple(sorted(k for k in kind if k != "null")) or (("null",) if "null" in kind else ())
            else:
                kinds = (kind,) if isinstance(kind, str) else ()
            if kinds:
                out["type"] = kinds
        if present & _BOUNDS:
            for bound, flag in (("maximum", "exclusiveMaximum"), ("minimum", "exclusiveMinimum")):
                exclusive = raw.get(flag)
                if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
                    out[bound] = (exclusive, True)
                elif isinstance(raw.get(bound), int | float):
                    out[bound] = (raw[bound], exclusive is True)
        if "enum" in present and isinstance(raw["enum"], list):
            values = raw["enum"]
            nullable = nullable or None in values
            out["enum"] = tuple(v for v in values if v is not None)
        if "const" in present:
            out["enum"] = (raw["const"],)
        if "properties" in present and isinstance(raw["properties"], dict):
            schema = self.schema
            out["properties"] = {name: schema(sub) for name, sub in raw["properties"].items()}
        if "required" in present and isinstance(raw["required"], list):
            out["required"] = frozenset(raw["required"])
        if "items" in present and not isinstance(raw["items"], list):
            out["items"] = self.schema(raw["items"])
        if "additionalProperties" in present and isinstance(raw["additionalProperties"], dict):
            out["additionalProperties"] = self.schema(raw["additionalProperties"])
        for combiner in present & _COMBINERS:
            variants = raw[combiner]
            if isinstance(variants, list):
                subs = [self.schema(v) for v in variants]
                nulls = [s for s in subs if s.get("type") == ("null",)]
                rest = [s for s in subs if s.get("type") != ("null",)]
                nullable = nullable or bool(nulls)
                if len(rest) == 1:
                    out = merge(out, rest[0])
                elif rest:
                    out["variants"] = tuple(rest)
        if "allOf" in present and isinstance(raw["allOf"], list):
            for sub in raw["allOf"]:
                out = merge(out, self.schema(sub))
        if nullable:
            out["nullable"] = True
        return out


def merge(a: Schema, b: Schema) -> Schema:
    """`allOf` of two normalised schemas: properties merged, required united, types intersected."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties":
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = merge(props[name], sub) if name in props else sub
            out[key] = props
        elif key == "required":
            out[key] = out[key] | value
        elif key == "type":
            both = tuple(t for t in out[key] if t in value)
            out[key] = both or value
        elif key == "items":
            out[key] = merge(out[key], value)
    if a.get("nullable") and not b.get("nullable") and b:  # allOf: null only when every part allows it
        out.pop("nullable", None)
    return out


def _content(resolver: _Resolver, content: Any) -> dict[str, Schema]:
    if not isinstance(content, dict):
        return {}
    return {str(media).lower(): resolver.whole(item.get("schema") if isinstance(item, dict) else None)
            for media, item in content.items()}


def _parameters(resolver: _Resolver, path: str, raw: list[Any]) -> dict[tuple[str, str], Parameter]:
    positions = {name[1:-1]: str(i) for i, name in enumerate(_PARAM.findall(path))}
    out: dict[tuple[str, str], Parameter] = {}
    for item in raw:
        param = resolver.deref(item)
        location, name = str(param.get("in", "")), str(param.get("name", ""))
        if not location or not name:
            continue
        if location == "path":
            key = ("path", positions.get(name, name))
        else:
            key = (location, name.lower() if location == "header" else name)
        schema = param.get("schema")
        if schema is None and isinstance(param.get("content"), dict):
            first: Any = next(iter(param["content"].values()), {})
            schema = first.get("schema") if isinstance(first, dict) else None
        out[key] = Parameter(location=location, name=name, required=location == "path" or param.get("required") is True,
                             schema=resolver.schema(schema))  # small: flat ones are shared by content
    return out


def operations(doc: dict[str, Any], leaves: dict[Any, Schema] | None = None) -> dict[tuple[str, str], Operation]:
    """(METHOD, path key) -> the operation, normalised. `leaves`: a cache of flat schemas to share with the
    other document of a comparison (equal leaves then compare by identity)."""
    resolver = _Resolver(doc, leaves)
    out: dict[tuple[str, str], Operation] = {}
    paths = doc.get("paths") if isinstance(doc.get("paths"), dict) else {}
    for path, raw_item in (paths or {}).items():
        item = resolver.deref(raw_item)
        shared: list[Any] = item["parameters"] if isinstance(item.get("parameters"), list) else []
        for method in METHODS:
            raw = item.get(method)
            if not isinstance(raw, dict):
                continue
            own: list[Any] = raw["parameters"] if isinstance(raw.get("parameters"), list) else []
            op = Operation(method=method.upper(), path=str(path), deprecated=raw.get("deprecated") is True,
                           sunset=str(raw["x-sunset"]) if "x-sunset" in raw else None,
                           parameters=_parameters(resolver, str(path), [*shared, *own]))
            if "requestBody" in raw:
                body = resolver.deref(raw["requestBody"])
                op.body = Body(required=body.get("required") is True, content=_content(resolver, body.get("content")))
            responses = raw.get("responses") if isinstance(raw.get("responses"), dict) else {}
            for status, response in (responses or {}).items():
                op.responses[str(status).upper()] = _content(resolver, resolver.deref(response).get("content"))
            out[(op.method, path_key(str(path)))] = op
    return out
