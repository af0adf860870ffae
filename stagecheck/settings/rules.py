"""Shared rules of the settings model: name and value patterns, Cloud Run's limits, the strict base model."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

SERVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
PROJECT_ID_RE = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]{1,2}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_REF_RE = re.compile(r"^(projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}:(latest|[0-9]+)$")
MEMORY_RE = re.compile(r"^[0-9]+(Mi|Gi)$")
BLOCK_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_-]*$")  # a Prefect block: type-slug/name
RESERVED_ENV = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
# stagecheck tags each candidate `sc-<sha7>`; Cloud Run: "Combined traffic tag and service name cannot
# exceed 46 characters." (gcloud/server message; policyengine-api#3729, firebase-tools#6137)
TRAFFIC_TAG_PREFIX = "sc-"
TRAFFIC_TAG_LENGTH = len(TRAFFIC_TAG_PREFIX) + 7
MAX_TAG_AND_SERVICE = 46
MAX_SERVICE_NAME = MAX_TAG_AND_SERVICE - TRAFFIC_TAG_LENGTH  # 36; revision names SERVICE-SHA7-xyz stay <= 63


def cpu_amount(cpu: str) -> float:
    """'1' / '0.5' / '500m' -> CPUs (ValueError otherwise)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m?)", cpu)
    if not m:
        raise ValueError("cpu is like '1', '2', '0.5' or '500m'")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def memory_mib(memory: str) -> int:
    return int(memory[:-2]) * (1024 if memory.endswith("Gi") else 1)


def memory_ceiling_mib(cpus: float) -> int:
    """The most memory Cloud Run allows for a CPU setting (docs: configuring/services/cpu, memory-limits)."""
    if cpus < 0.5:
        return 512
    if cpus < 1:
        return 1024
    return {1.0: 4, 2.0: 8, 4.0: 16, 6.0: 24, 8.0: 32}.get(cpus, 32) * 1024
MAX_MEMORY_MIB = 32 * 1024  # Cloud Run's maximum memory per instance
CPU_RE = re.compile(r"^(?:[0-9]+(?:\.[0-9]{1,3})?|[0-9]+m)$")
MAX_WAIT_S = 3600.0  # no single wait of a validation (deploy, probe deadline, settle, hold, smoke) beyond an hour
MAX_SLOT_WAIT_S = 86400.0
MAX_CONFIG_BYTES = 1024 * 1024
# What stagecheck itself puts in the environment of smoke commands (and its own runtime knobs): never config.
NOT_CONFIG_ENV = {"STAGECHECK_STATE_DIR", "STAGECHECK_CONFIG", "STAGECHECK_WEBHOOK_URL", "STAGECHECK_CACHE_DIR",
                  "STAGECHECK_REGISTRY_USERNAME", "STAGECHECK_REGISTRY_PASSWORD", "STAGECHECK_BASE_URL",
                  "STAGECHECK_TAG_URL", "STAGECHECK_LB_URL", "STAGECHECK_REVISION", "STAGECHECK_SERVICE"}


def cpu_is_valid(value: str) -> bool:
    """Cloud Run CPU: 0.08-1 in fractions (or 80m-1000m), above 1 only 2, 4, 6 or 8."""
    if not CPU_RE.match(value):
        return False
    cpus = cpu_amount(value)
    return 0.08 <= cpus <= 1 or cpus in {2.0, 4.0, 6.0, 8.0}


class ConfigError(Exception):
    """The configuration is unusable; the message says what and where."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
