"""Where settings come from, lowest to highest precedence: defaults < TOML < `STAGECHECK_*` environment <
sandbox endpoints < overrides, layered by pydantic-settings' sources; and the readable message for a bad value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import SkipValidation, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stagecheck.settings.files import _resolve_paths, read_toml, sandbox_overrides
from stagecheck.settings.model import Settings
from stagecheck.settings.rules import NOT_CONFIG_ENV, ConfigError

ENV_PREFIX = "STAGECHECK_"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, tables merged key by key (the rule the sources are layered by)."""
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _Layers(BaseSettings):
    """The sources, merged by pydantic-settings (a dict at any depth merged key by key, anything else replaced).

    It reads only the sources `load_settings` hands it (none otherwise: never the process environment), and
    keeps each of Settings' keys as read, so `Settings` validates and words every problem."""

    model_config = SettingsConfigDict(
        extra="allow", case_sensitive=True, env_prefix=ENV_PREFIX, env_nested_delimiter="__")

    @classmethod
    def settings_customise_sources(cls, *_: Any, **__: Any) -> tuple[PydanticBaseSettingsSource, ...]:
        return _SOURCES.get()


_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar("settings_sources", default=())
# Settings' keys as raw fields: a dict type, so every key takes `__` nesting from the environment.
_LAYERS = create_model(  # type: ignore[call-overload]
    "SettingsLayers", __base__=_Layers,
    **{name: (Annotated[dict[str, Any] | Any, SkipValidation], None) for name in Settings.model_fields})


class _Environment(EnvSettingsSource):
    """`STAGECHECK_PROBES__DEADLINE_S=90` -> {"probes": {"deadline_s": "90"}} (pydantic coerces), from `environ`.

    Only the documented keys are read: a variable whose first part names a Settings field. The
    variables stagecheck itself exports to smoke commands (STAGECHECK_BASE_URL, ..._LB_URL, ...) and
    its runtime knobs (STAGECHECK_STATE_DIR, ...) are never configuration, nor is anything else.
    A value starting with `[` or `{` is read as JSON when it parses; anything else stays text."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, Any]:
        return {ENV_PREFIX + key[len(ENV_PREFIX):].lower(): _json_or_text(value) for key, value in self._environ.items()
                if key.startswith(ENV_PREFIX) and key not in NOT_CONFIG_ENV}

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        return value  # read in _load_env_vars, by the rule above


def _json_or_text(value: str) -> Any:
    if value.startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


class _ConfigFile(TomlConfigSettingsSource):
    """`stagecheck.toml` by `read_toml` (a missing or bad file is a ConfigError naming it), its relative paths
    (repo_root, source_dir, report_dir, ...) resolved against the file's folder."""

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        path = Path(files)
        return _resolve_paths(read_toml(path, "config file"), path.resolve().parent)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings the `STAGECHECK_*` variables of `environ` give (see `_Environment`)."""
    return _Environment(_LAYERS, environ)()


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {describe_error(err)}" if loc else f"  {describe_error(err)}")
    missing = {str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]}
    if missing & {"project", "region", "registry"}:
        lines.append("  hint: set project/region/registry in the config, or use --sandbox for the local sandbox")
    return "\n".join(lines)


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as a short rule: no error-type prefix, no documentation URL."""
    kind = str(err.get("type", ""))
    if kind == "extra_forbidden":
        return "unknown key (not a stagecheck setting)"
    if kind == "missing":
        return "required, not set"
    message = str(err.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.endswith("_parsing") or kind.endswith("_type"):
        got = repr(err.get("input"))
        message = f"{message} (got {got if len(got) <= 60 else got[:57] + '...'})"
    return message


def load_settings(
    config: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    sandbox_json: Path | None = None,
) -> Settings:
    """Build the Settings: TOML file < env < sandbox endpoints < explicit overrides.

    Relative paths in the file (repo_root, source_dir, report_dir) are resolved against the file's folder.
    Raises ConfigError with a readable message for every problem.
    """
    layers: list[PydanticBaseSettingsSource] = []  # lowest precedence first, each read in that order
    if config is not None:
        layers.append(_ConfigFile(_LAYERS, config))
    if environ is not None:
        layers.append(_Environment(_LAYERS, environ))
    if sandbox_json is not None:
        layers.append(InitSettingsSource(_LAYERS, sandbox_overrides(sandbox_json)))
    if overrides:
        layers.append(InitSettingsSource(_LAYERS, dict(overrides)))

    token = _SOURCES.set(tuple(reversed(layers)))  # pydantic-settings takes the highest first
    try:
        merged = _LAYERS()
    finally:
        _SOURCES.reset(token)
    data = {key: value for key, value in merged if key in merged.model_fields_set}  # as read, in order
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(config) if config is not None else "defaults")) from None
