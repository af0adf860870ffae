"""The two files settings are read from: the config file (`stagecheck.toml`, its relative paths resolved against
its folder) and a running sandbox's `sandbox.json`; each problem a ConfigError naming the file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from stagecheck.settings.rules import BLOCK_SLUG_RE, MAX_CONFIG_BYTES, ConfigError


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
                          "iam_credentials_api": info["run_api"], "credentials_file": info["credentials_file"]},
        }
    except KeyError as exc:
        hint = " (a sandbox from an older version: restart it with `make down && make up`)" \
            if exc.args[0] == "credentials_file" else ""
        raise ConfigError(f"{sandbox_json} lacks {exc.args[0]!r}{hint}") from None


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
