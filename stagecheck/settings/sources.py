"""Where settings come from, lowest to highest precedence: defaults < TOML < `STAGECHECK_*` environment <
sandbox endpoints < overrides; and the readable message for a bad value."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stagecheck.settings.model import Settings
from stagecheck.settings.rules import BLOCK_SLUG_RE, MAX_CONFIG_BYTES, NOT_CONFIG_ENV, ConfigError


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str], prefix: str = "STAGECHECK_") -> dict[str, Any]:
    """`STAGECHECK_PROBES__DEADLINE_S=90` -> {"probes": {"deadline_s": "90"}} (pydantic coerces).

    Only the documented keys are read: a variable whose first part names a Settings field. The
    variables stagecheck itself exports to smoke commands (STAGECHECK_BASE_URL, ..._LB_URL, ...) and
    its runtime knobs (STAGECHECK_STATE_DIR, ...) are never configuration, nor is anything else."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(prefix) or key in NOT_CONFIG_ENV:
            continue
        path = key[len(prefix) :].lower().split("__")
        if path[0] not in Settings.model_fields:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if value.startswith(("[", "{")):
            try:
                node[path[-1]] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        node[path[-1]] = value
    return out


def sandbox_overrides(sandbox_json: Path) -> dict[str, Any]:
    """Endpoints, project, region, registry and LB of a running sandbox (`stagecheck sandbox up`)."""
    try:
        info = json.loads(sandbox_json.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no sandbox running: {sandbox_json} not found (run `make up`)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{sandbox_json} is not valid JSON: {exc}") from None
    try:
        return {
            "project": info["project"],
            "region": info["region"],
            "registry": info["registry"],
            "lb_url": info["lb_url"],
            "docker_host": info.get("docker_host"),
            "endpoints": {"run_api": info["run_api"], "logging_api": info["logging_api"],
                          "credentials_file": info["credentials_file"]},
        }
    except KeyError as exc:
        hint = " (a sandbox from an older version: restart it with `make down && make up`)" \
            if exc.args[0] == "credentials_file" else ""
        raise ConfigError(f"{sandbox_json} lacks {exc.args[0]!r}{hint}") from None


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


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; ConfigError naming the file (and the line) when it is missing or malformed."""
    try:
        if path.exists() and not path.is_dir() and not path.is_file():  # a FIFO or a device would block or never end
            raise ConfigError(f"{what} {path} is not a regular file")
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a stagecheck config")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a UTF-8 text file (binary?)") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if "\x00" in text:
        raise ConfigError(f"{what} {path} is not a text file (it contains NUL bytes)")
    if not text.strip():
        raise ConfigError(f"{what} {path} is empty")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


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
    data: dict[str, Any] = {}
    source = "defaults"
    if config is not None:
        source = str(config)
        data = _resolve_paths(read_toml(config, "config file"), config.resolve().parent)
    if environ is not None:
        data = deep_merge(data, env_overrides(environ))
    if sandbox_json is not None:
        data = deep_merge(data, sandbox_overrides(sandbox_json))
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(data)
    for key in ("repo_root", "report_dir"):
        if key in out:
            out[key] = str((base / out[key]).resolve())
    storage = out.get("result_storage")
    if isinstance(storage, str) and not BLOCK_SLUG_RE.match(storage):
        out["result_storage"] = str((base / Path(storage).expanduser()).resolve())  # a folder, not a block slug
    out.setdefault("repo_root", str(base))
    out.setdefault("report_dir", str(base / "reports"))
    services = []
    for svc in out.get("services", []) or []:
        if isinstance(svc, dict) and "source_dir" in svc:
            svc = {**svc, "source_dir": str((base / svc["source_dir"]).resolve())}
        contract = svc.get("contract") if isinstance(svc, dict) else None
        if isinstance(contract, dict) and isinstance(contract.get("ignore_file"), str):
            svc = {**svc, "contract": {**contract, "ignore_file": str((base / contract["ignore_file"]).resolve())}}
        services.append(svc)
    if services:
        out["services"] = services
    return out
