"""Is a fetched document an OpenAPI 3.0 / 3.1 description? `openapi-spec-validator`, pure (no I/O: a
document with references outside itself is reported, never followed)."""

from __future__ import annotations

import json
from typing import Any


def parse(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None) or (None, why it is not a JSON object)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    return doc, None


def _external_refs(node: Any, found: list[str]) -> None:
    stack = [node]
    while stack and len(found) < 3:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                found.append(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def problems(doc: dict[str, Any], max_errors: int = 3) -> list[str]:
    """Why `doc` is not a valid OpenAPI 3.0/3.1 document (empty when it is)."""
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    version = str(doc.get("openapi", ""))
    if version.startswith("3.0"):
        validator: Any = OpenAPIV30SpecValidator
    elif version.startswith("3.1"):
        validator = OpenAPIV31SpecValidator
    else:
        return [f"not an OpenAPI 3.0/3.1 document (openapi: {version or 'missing'})"]
    external: list[str] = []
    _external_refs(doc, external)
    if external:
        return [f"references outside the document are not followed: {', '.join(external)}"]
    out: list[str] = []
    for error in validator(doc).iter_errors():
        where = "/".join(str(p) for p in getattr(error, "absolute_path", ())) or "(root)"
        out.append(f"{where}: {str(getattr(error, 'message', error)).splitlines()[0]}")
        if len(out) >= max_errors:
            break
    return out
