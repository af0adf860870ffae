"""Mask secrets before anything leaves the process: reports, artifacts, evidence, log examples.

Two layers: the caller's known secret values (the resolved Secret Manager values, tokens it holds),
and well-known credential shapes that no report should ever show whoever produced them.
Ordinary text - image digests (`sha256:...`), revision names, URLs without credentials - is left alone.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

MASK = "[REDACTED]"
MIN_SECRET_LEN = 4

# A key that names a credential: `password`, `DB_PASSWORD`, `client_secret`, `api-key`, `access_token`.
_SENSITIVE_KEY = (
    r"[A-Za-z0-9_.-]*?(?:passw(?:or)?d|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key)"
)
_SENSITIVE_KEY_RE = re.compile(rf"^{_SENSITIVE_KEY}$|^(?:authorization|cookie|set-cookie)$", re.IGNORECASE)

_Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]

_RULES: tuple[_Rule, ...] = (
    # PEM private keys, also a block cut off before its END line.
    (
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
        ),
        f"-----BEGIN PRIVATE KEY----- {MASK} -----END PRIVATE KEY-----",
    ),
    # URL credentials: scheme://user:pass@host -> keep the user.
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]+):[^\s/@]+@"), rf"\1:{MASK}@"),
    # Authorization headers with a scheme (Bearer/Basic/...) and bare bearer tokens.
    (
        re.compile(
            r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(bearer|basic|token|negotiate|digest)\s+[^\s\"',;]+"
        ),
        rf"\1\2 {MASK}",
    ),
    (
        re.compile(
            r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b|basic\b|token\b|negotiate\b|digest\b)[^\s\"',;]+"
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE), rf"\1 {MASK}"),
    # Google OAuth access tokens, API keys; JWTs; AWS access key ids; GitHub tokens.
    (re.compile(r"\bya29\.[0-9A-Za-z_\-.]+"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), MASK),
    # JSON / quoted YAML: "password": "value"
    (re.compile(rf"(?i)([\"']{_SENSITIVE_KEY}[\"']\s*:\s*)\"(?:[^\"\\]|\\.)*\""), rf'\1"{MASK}"'),
    (re.compile(rf"(?i)([\"']{_SENSITIVE_KEY}[\"']\s*:\s*)'[^']*'"), rf"\1'{MASK}'"),
    # key=value in queries, env dumps, command lines: token=abc&x=1, DB_PASSWORD=hunter2
    (re.compile(rf"(?i)(\b{_SENSITIVE_KEY}=)(?!\[REDACTED\])[^\s&\"',;]+"), rf"\1{MASK}"),
    # Headers that carry keys.
    (re.compile(r"(?i)\b((?:x-(?:goog-)?api-key|cookie)\s*:\s*)[^\r\n]+"), rf"\1{MASK}"),
)


_held: frozenset[str] = frozenset()
_held_lock = threading.Lock()


def hold_secret_values(values: Iterable[str]) -> None:
    """Remember secret values this process holds (sensitive config env values, probe header values,
    the registry password, the webhook URL): from now on every `redact` masks them, wherever it is
    called from. Values are only ever added (masking a value too many is harmless)."""
    global _held
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LEN}
    with _held_lock:
        _held = _held | new


def redact(text: str, secret_values: Iterable[str] = ()) -> str:
    """Mask the given secret values and those held by the process (each of at least 4 characters),
    and known credential shapes."""
    if not text:
        return text
    out = text
    values = sorted(
        {v for v in secret_values if isinstance(v, str) and len(v) >= MIN_SECRET_LEN} | _held, key=len, reverse=True
    )
    for value in values:
        out = out.replace(value, MASK)
        encoded = quote(value, safe="")
        if encoded != value:
            out = out.replace(encoded, MASK)
    for pattern, replacement in _RULES:
        out = pattern.sub(replacement, out)
    return out


def is_sensitive_key(key: str) -> bool:
    """A mapping key whose value is a credential (`password`, `API_KEY`, `authorization`, ...)."""
    return bool(_SENSITIVE_KEY_RE.match(key))


def redact_obj(obj: Any, secret_values: Iterable[str] = ()) -> Any:
    """Redact every string in a JSON-like structure; values under credential-named keys are masked whole.

    Dicts, lists and tuples are copied (the input is not changed); other scalars pass through.
    """
    values = tuple(secret_values)
    return _redact_any(obj, values)


def _redact_any(obj: Any, values: tuple[str, ...]) -> Any:
    if isinstance(obj, str):
        return redact(obj, values)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            new_key = redact(key, values) if isinstance(key, str) else key
            if isinstance(key, str) and is_sensitive_key(key) and isinstance(value, str | bytes) and value:
                out[new_key] = MASK
            else:
                out[new_key] = _redact_any(value, values)
        return out
    if isinstance(obj, list | tuple):
        items = [_redact_any(item, values) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's final message through `redact` (for the run
    loggers whose records are shipped to the Prefect API and printed on the console)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        return True


def redact_run_logs(names: Iterable[str] = ("prefect.flow_runs", "prefect.task_runs")) -> None:
    """Install RedactingFilter on the named loggers once (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
