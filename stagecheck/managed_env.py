"""Which environment variables a release sets, keeps and removes (pure).

stagecheck remembers the variables it manages the way `kubectl apply` keeps its last-applied
configuration: the names the config set are written into the candidate's template as the annotation
`stagecheck.dev/managed-env`, so every revision stagecheck created says which of its variables came
from the config. The next release starts from the revision that serves and:

- sets every variable of the config (`env` and `secrets`), replacing one of the same name;
- removes a variable the serving revision's annotation lists that the config no longer has;
- keeps every other variable (set outside stagecheck: the console, `gcloud`, another tool).

A serving revision without the annotation (deployed before stagecheck tracked it, or by another
tool) has no managed variables: nothing is removed from it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

MANAGED_ENV_ANNOTATION = "stagecheck.dev/managed-env"

# Cloud Run API v2 rejects labels and annotations in these namespaces on a template (RevisionTemplate
# proto comments); a revision read back may carry them, so a template built from one drops them.
SYSTEM_NAMESPACES = ("run.googleapis.com", "cloud.googleapis.com", "serving.knative.dev", "autoscaling.knative.dev")


def is_system_key(key: str) -> bool:
    """Pure: a label/annotation key in a namespace Cloud Run owns (`run.googleapis.com/...`, also its subdomains)."""
    prefix, sep, _ = key.partition("/")
    return bool(sep) and any(prefix == ns or prefix.endswith(f".{ns}") for ns in SYSTEM_NAMESPACES)


def user_keys(meta: Mapping[str, str]) -> dict[str, str]:
    """Pure: the labels/annotations a template may carry (the system namespaces dropped)."""
    return {k: v for k, v in meta.items() if not is_system_key(k)}


def managed_names(annotations: Mapping[str, str]) -> frozenset[str]:
    """Pure: the variables a revision's annotation says stagecheck set (none without the annotation)."""
    value = annotations.get(MANAGED_ENV_ANNOTATION, "")
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def managed_value(names: Collection[str]) -> str:
    """Pure: the annotation's value for the names the config sets (sorted, comma-separated)."""
    return ",".join(sorted(set(names)))


@dataclass(frozen=True)
class EnvPlan:
    """What a release does to the serving revision's variables."""

    configured: tuple[str, ...]  # set from the config (env, then secrets)
    kept: tuple[str, ...]  # set outside stagecheck, carried over unchanged
    removed: tuple[str, ...]  # set by an earlier release, no longer in the config


def plan_env(current: Sequence[str], managed_before: Collection[str], configured: Sequence[str]) -> EnvPlan:
    """Pure: `current` are the serving revision's variable names (in order), `managed_before` those its
    annotation lists, `configured` the names the config sets now."""
    wanted = set(configured)
    kept = tuple(n for n in current if n not in wanted and n not in managed_before)
    removed = tuple(n for n in current if n not in wanted and n in managed_before)
    return EnvPlan(configured=tuple(configured), kept=kept, removed=removed)
