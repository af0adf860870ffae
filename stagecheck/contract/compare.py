"""Compare two normalised OpenAPI documents, pure: the findings, each under one rule of `rules.RULES`.

Request side contravariant (the candidate may accept more, never less), response side covariant (it
may promise more, never less). Equal sub-schemas are skipped by identity or equality before any walk,
so two large documents that share most of their schemas compare fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from stagecheck.contract.findings import Finding, finding
from stagecheck.contract.normalize import Body, Operation, Parameter, Schema

_SUCCESS = ("2",)


def compare(base: dict[tuple[str, str], Operation], cand: dict[tuple[str, str], Operation],
            today: date | None = None) -> list[Finding]:
    """Every change from `base` to `cand` that a rule knows, in document order."""
    today = today or datetime.now(UTC).date()
    out: list[Finding] = []
    cand_paths = {key[1] for key in cand}
    for key, old in base.items():
        new = cand.get(key)
        if new is None:
            out.extend(_removed(old, whole_path=key[1] not in cand_paths, today=today))
        else:
            out.extend(_operation(old, new))
    out.extend(finding("endpoint-added", new.label, "operation") for key, new in cand.items() if key not in base)
    return out


def _removed(op: Operation, *, whole_path: bool, today: date) -> Iterator[Finding]:
    prefix = "api-path-removed" if whole_path else "api-removed"
    if not op.deprecated:
        yield finding(f"{prefix}-without-deprecation", op.label, "operation")
        return
    sunset = _date(op.sunset)
    if sunset is not None and today < sunset:
        yield finding(f"{prefix}-before-sunset", op.label, "operation", sunset.isoformat())
    else:  # deprecated, and its sunset (if any) has passed: removable
        yield finding(f"{prefix}-with-deprecation", op.label, "operation")


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _operation(old: Operation, new: Operation) -> Iterator[Finding]:
    label = new.label
    for key, param in new.parameters.items():
        if key not in old.parameters:
            rule = "new-required-request-parameter" if param.required else "new-optional-request-parameter"
            yield finding(rule, label, f"request {param.location} {param.name}", param.location, param.name)
    for key, was in old.parameters.items():
        now = new.parameters.get(key)
        if now is None:
            yield finding("request-parameter-removed", label, f"request {was.location} {was.name}", was.location,
                          was.name)
        else:
            yield from _parameter(label, was, now)
    yield from _body(label, old.body, new.body)
    for status, media in old.responses.items():
        now_media = new.responses.get(status)
        if now_media is None:
            if status.startswith(_SUCCESS):
                yield finding("response-success-status-removed", label, f"response {status}", status)
            continue
        for name, schema in media.items():
            if name not in now_media:
                yield finding("response-media-type-removed", label, f"response {status} {name}", name, status)
            else:
                yield from _schema(_Where(label, "response", name, status), schema, now_media[name], ())
        for name in now_media:
            if name not in media:
                yield finding("response-media-type-added", label, f"response {status} {name}", name, status)
    for status in new.responses:
        if status not in old.responses and status.startswith(_SUCCESS):
            yield finding("response-success-status-added", label, f"response {status}", status)


def _parameter(label: str, was: Parameter, now: Parameter) -> Iterator[Finding]:
    where = f"request {now.location} {now.name}"
    if now.required and not was.required:
        yield finding("request-parameter-became-required", label, where, now.location, now.name)
    elif was.required and not now.required:
        yield finding("request-parameter-became-optional", label, where, now.location, now.name)
    old, new = was.schema, now.schema
    if old is new or old == new:
        return
    loc, name = now.location, now.name
    changed = _type_change(old, new)
    if changed is not None:
        rule = "request-parameter-type-generalized" if _widened(old, new) else "request-parameter-type-changed"
        yield finding(rule, label, where, loc, name, "type/format", *changed)
    if old.get("nullable") and not new.get("nullable"):
        yield finding("request-parameter-became-not-nullable", label, where, loc, name)
    for value in _enum_removed(old, new):
        yield finding("request-parameter-enum-value-removed", label, where, value, loc, name)
    for value in _enum_removed(new, old):
        yield finding("request-parameter-enum-value-added", label, where, value, loc, name)
    for bound, rule in (("maximum", "request-parameter-max-decreased"),
                        ("maxLength", "request-parameter-max-length-decreased")):
        if _tighter_max(old.get(bound), new.get(bound)):
            yield finding(rule, label, where, loc, name, _bound(old.get(bound)), _bound(new.get(bound)))
    for bound, rule in (("minimum", "request-parameter-min-increased"),
                        ("minLength", "request-parameter-min-length-increased")):
        if _tighter_min(old.get(bound), new.get(bound)):
            yield finding(rule, label, where, loc, name, _bound(old.get(bound)), _bound(new.get(bound)))
    if new.get("pattern") and not old.get("pattern"):
        yield finding("request-parameter-pattern-added", label, where, new["pattern"], loc, name)


def _body(label: str, old: Body | None, new: Body | None) -> Iterator[Finding]:
    if new is None:
        return
    if old is None:
        if new.required:
            yield finding("request-body-added-required", label, "request body")
        return
    if new.required and not old.required:
        yield finding("request-body-became-required", label, "request body")
    for media, schema in old.content.items():
        if media not in new.content:
            yield finding("request-body-media-type-removed", label, f"request body {media}", media)
        else:
            yield from _schema(_Where(label, "request", media, ""), schema, new.content[media], ())
    for media in new.content:
        if media not in old.content:
            yield finding("request-body-media-type-added", label, f"request body {media}", media)


class _Where:
    __slots__ = ("label", "media", "side", "status")

    def __init__(self, label: str, side: str, media: str, status: str) -> None:
        self.label, self.side, self.media, self.status = label, side, media, status

    def location(self, path: tuple[str, ...]) -> str:
        head = f"response {self.status}" if self.side == "response" else "request body"
        dotted = "".join("[]" if p == "items" and i else f".{p}" for i, p in enumerate(path))
        media = "" if self.media == "application/json" else f" ({self.media})"
        return f"{head}{media} {dotted}".rstrip() if dotted else f"{head}{media}"


def _schema(where: _Where, old: Schema, new: Schema, path: tuple[str, ...]) -> Iterator[Finding]:
    """The changes inside one schema at property `path` (oasdiff's `a/items/b`), recursively."""
    if old is new or old == new or old.get("cycle") or new.get("cycle"):
        return
    request = where.side == "request"
    name = "/".join(path)
    loc = where.location(path)
    label, media, status = where.label, where.media, where.status
    changed = _type_change(old, new)
    if changed is not None:
        if request:
            if not path:
                yield finding("request-body-type-changed", label, loc, media, *changed)
            elif _widened(old, new):
                yield finding("request-property-type-generalized", label, loc, media, name, *changed)
            else:
                yield finding("request-property-type-changed", label, loc, media, name, *changed)
        elif not path:
            yield finding("response-body-type-changed", label, loc, media, *changed, status)
        elif _widened(new, old):
            yield finding("response-property-type-specialized", label, loc, media, name, *changed, status)
        else:
            yield finding("response-property-type-changed", label, loc, media, name, *changed, status)
        if not (_widened(old, new) if request else _widened(new, old)):
            return  # a different kind of value: what it contains is not comparable
    if request and path:
        if old.get("nullable") and not new.get("nullable"):
            yield finding("request-property-became-not-nullable", label, loc, name)
        for value in _enum_removed(old, new):
            yield finding("request-property-enum-value-removed", label, loc, value, name)
        for value in _enum_removed(new, old):
            yield finding("request-property-enum-value-added", label, loc, value, name)
        for bound, rule in (("maximum", "request-property-max-decreased"),
                            ("maxLength", "request-property-max-length-decreased")):
            if _tighter_max(old.get(bound), new.get(bound)):
                yield finding(rule, label, loc, name, _bound(new.get(bound)))
        if _tighter_min(old.get("minimum"), new.get("minimum")):
            yield finding("request-property-min-increased", label, loc, name, _bound(new.get("minimum")))
        if _tighter_min(old.get("minLength"), new.get("minLength")):
            yield finding("request-property-min-length-increased", label, loc, name, _bound(old.get("minLength")),
                          _bound(new.get("minLength")))
        if new.get("pattern") and not old.get("pattern"):
            yield finding("request-property-pattern-added", label, loc, new["pattern"], name)
    elif not request:
        if new.get("nullable") and not old.get("nullable"):
            if path:
                yield finding("response-property-became-nullable", label, loc, name, status)
            else:
                yield finding("response-body-became-nullable", label, loc)
        if path:
            for value in _enum_removed(new, old):
                yield finding("response-property-enum-value-added", label, loc, value, name, status)
    yield from _properties(where, old, new, path)
    old_items, new_items = old.get("items"), new.get("items")
    if old_items is not None and new_items is not None:
        yield from _schema(where, old_items, new_items, (*path, "items"))


def _properties(where: _Where, old: Schema, new: Schema, path: tuple[str, ...]) -> Iterator[Finding]:
    old_props: dict[str, Schema] = old.get("properties") or {}
    new_props: dict[str, Schema] = new.get("properties") or {}
    if not old_props and not new_props:
        return
    old_req: frozenset[str] = old.get("required") or frozenset()
    new_req: frozenset[str] = new.get("required") or frozenset()
    label, status = where.label, where.status
    request = where.side == "request"
    for prop, schema in new_props.items():
        sub = (*path, prop)
        name, loc = "/".join(sub), where.location(sub)
        if prop not in old_props:
            if request and not schema.get("readOnly"):
                rule = "new-required-request-property" if prop in new_req else "new-optional-request-property"
                yield finding(rule, label, loc, name)
            elif not request and not schema.get("writeOnly"):
                rule = "response-required-property-added" if prop in new_req else "response-optional-property-added"
                yield finding(rule, label, loc, name, status)
            continue
        was_required, now_required = prop in old_req, prop in new_req
        if request and now_required and not was_required and not schema.get("readOnly"):
            yield finding("request-property-became-required", label, loc, name)
        elif request and was_required and not now_required:
            yield finding("request-property-became-optional", label, loc, name)
        elif not request and was_required and not now_required and not schema.get("writeOnly"):
            yield finding("response-property-became-optional", label, loc, name, status)
        elif not request and now_required and not was_required:
            yield finding("response-property-became-required", label, loc, name, status)
        yield from _schema(where, old_props[prop], schema, sub)
    for prop, schema in old_props.items():
        if prop in new_props:
            continue
        sub = (*path, prop)
        name, loc = "/".join(sub), where.location(sub)
        if request:
            if not schema.get("readOnly"):
                yield finding("request-property-removed", label, loc, name)
        elif not schema.get("writeOnly"):
            rule = "response-required-property-removed" if prop in old_req else "response-optional-property-removed"
            yield finding(rule, label, loc, name, status)


def _type_text(schema: Schema) -> str:
    kinds = "/".join(schema.get("type") or ("any",))
    return f"{kinds}/{schema['format']}" if schema.get("format") else kinds


def _type_change(old: Schema, new: Schema) -> tuple[str, str] | None:
    """(old, new) as `type/format` when the type or format changed (an untyped side: no change known)."""
    if "type" not in old or "type" not in new:
        return None
    if old["type"] == new["type"] and old.get("format") == new.get("format"):
        return None
    return _type_text(old), _type_text(new)


def _widened(narrow: Schema, wide: Schema) -> bool:
    """Every value of `narrow` is a value of `wide` (more types, integer -> number, a format dropped)."""
    kinds = set(wide.get("type") or ())
    covered = all(k in kinds or (k == "integer" and "number" in kinds) for k in narrow.get("type") or ())
    same_format = not wide.get("format") or wide.get("format") == narrow.get("format")
    return covered and same_format


def _enum_removed(old: Schema, new: Schema) -> list[Any]:
    """Values `old` allowed that `new` does not (none when `new` has no enum: anything goes)."""
    if "enum" not in old or "enum" not in new:
        return []
    kept = {repr(v) for v in new["enum"]}
    return [v for v in old["enum"] if repr(v) not in kept]


def _value(bound: Any) -> tuple[float, bool] | None:
    if bound is None:
        return None
    if isinstance(bound, tuple):
        return float(bound[0]), bool(bound[1])
    return float(bound), False


def _bound(bound: Any) -> str:
    if bound is None:
        return "none"
    value = bound[0] if isinstance(bound, tuple) else bound
    return str(value)


def _tighter_max(old: Any, new: Any) -> bool:
    a, b = _value(old), _value(new)
    if b is None:
        return False
    if a is None:
        return False  # a max set where none was: oasdiff's WARN `*-max-set` (not in this rule set)
    return b[0] < a[0] or (b[0] == a[0] and b[1] and not a[1])


def _tighter_min(old: Any, new: Any) -> bool:
    a, b = _value(old), _value(new)
    if a is None or b is None:
        return False
    return b[0] > a[0] or (b[0] == a[0] and b[1] and not a[1])
