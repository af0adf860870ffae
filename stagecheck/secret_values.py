"""Which values of a run are secrets: collected once from the settings and the environment, then
held by `stagecheck.redact` so that every output (console, run logs, artifacts, JSON report,
webhook body) masks them."""

from __future__ import annotations

from collections.abc import Mapping

from stagecheck.redact import is_sensitive_key
from stagecheck.settings import Settings

REGISTRY_USERNAME_ENV = "STAGECHECK_REGISTRY_USERNAME"
REGISTRY_PASSWORD_ENV = "STAGECHECK_REGISTRY_PASSWORD"
WEBHOOK_ENV = "STAGECHECK_WEBHOOK_URL"


def registry_auth(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(username, password) for a registry that is not Google's, from the environment, or None."""
    password = environ.get(REGISTRY_PASSWORD_ENV, "")
    if not password:
        return None
    return environ.get(REGISTRY_USERNAME_ENV, "") or "stagecheck", password


def secret_values(settings: Settings, environ: Mapping[str, str]) -> set[str]:
    """Pure: the values a run must never show — env values under credential-named keys
    (`DB_PASSWORD`, `API_KEY`...), every probe header value, the registry password, the webhook URL."""
    values = {value for svc in settings.services for key, value in svc.env.items() if is_sensitive_key(key)}
    values |= set(settings.probes.headers.values())
    auth = registry_auth(environ)
    if auth is not None:
        values.add(auth[1])
    webhook = environ.get(WEBHOOK_ENV, "").strip()
    if webhook:
        values.add(webhook)
    return {v for v in values if v}
