"""The request mix from an OpenAPI document (pure): GET operations a load generator may call unprompted.

An operation qualifies when it is a GET, its path has no template (`{id}`), and neither the path item nor
the operation declares a required parameter or a required request body. Used when `[analysis] paths` is
empty; the mix is the operations both arms document (a path the baseline lacks would only measure 404s).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stagecheck.analysis.config import RequestSpec


def _required(params: Any) -> bool:
    return any(isinstance(p, Mapping) and p.get("required") for p in params or [])


def get_operations(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """Paths of the GET operations without required parameters, in document order."""
    out: list[str] = []
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, Mapping) or not isinstance(path, str) or "{" in path or not path.startswith("/"):
            continue
        op = item.get("get")
        if not isinstance(op, Mapping) or _required(item.get("parameters")) or _required(op.get("parameters")):
            continue
        body = op.get("requestBody")
        if isinstance(body, Mapping) and body.get("required"):
            continue
        out.append(path)
    return tuple(out)


def request_mix(baseline_doc: Mapping[str, Any], candidate_doc: Mapping[str, Any]) -> tuple[RequestSpec, ...]:
    """Equal-weight GETs of the operations both documents list."""
    theirs = set(get_operations(candidate_doc))
    return tuple(RequestSpec(path=p) for p in get_operations(baseline_doc) if p in theirs and not p.startswith("//"))
