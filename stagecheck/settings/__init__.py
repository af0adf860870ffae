"""One settings model for a validation target.

Sources, lowest to highest precedence: built-in defaults < the TOML file (`stagecheck.toml`) <
environment (`STAGECHECK_*`, nested with `__`, e.g. `STAGECHECK_PROBES__DEADLINE_S=90`) < explicit
overrides (flow parameters / CLI flags). `--sandbox` fills the endpoints from the sandbox's
`sandbox.json`; with no endpoints set the real Google Cloud defaults and ADC are used.
"""

from __future__ import annotations

from stagecheck.settings.contract import (
    ContractSettings,
)
from stagecheck.settings.endpoints import (
    Endpoints,
    SyntaxSettings,
)
from stagecheck.settings.files import (
    _resolve_paths,
    read_toml,
    sandbox_overrides,
)
from stagecheck.settings.logs import (
    LogRules,
)
from stagecheck.settings.model import (
    Settings,
    check_sources,
)
from stagecheck.settings.price import (
    PriceTable,
)
from stagecheck.settings.probes import (
    AUTH_STATUSES,
    HealthChecks,
    ProbeAuth,
    ProbeMode,
    ProbePolicy,
    UrlCheck,
    UrlKind,
)
from stagecheck.settings.rules import (
    BLOCK_SLUG_RE,
    CPU_RE,
    ENV_NAME_RE,
    MAX_CONFIG_BYTES,
    MAX_MEMORY_MIB,
    MAX_SERVICE_NAME,
    MAX_SLOT_WAIT_S,
    MAX_TAG_AND_SERVICE,
    MAX_WAIT_S,
    MEMORY_RE,
    NOT_CONFIG_ENV,
    PROJECT_ID_RE,
    REGION_RE,
    RESERVED_ENV,
    SECRET_REF_RE,
    SERVICE_NAME_RE,
    TRAFFIC_TAG_LENGTH,
    TRAFFIC_TAG_PREFIX,
    ConfigError,
    Strict,
    cpu_amount,
    cpu_is_valid,
    memory_ceiling_mib,
    memory_mib,
)
from stagecheck.settings.services import (
    ServiceConfig,
    SmokeCommand,
)
from stagecheck.settings.sources import (
    _format_validation_error,
    deep_merge,
    describe_error,
    env_overrides,
    load_settings,
)
from stagecheck.settings.traffic import (
    AfterPass,
    DegradedPolicy,
    TrafficPlan,
)

__all__ = [
    "AUTH_STATUSES",
    "BLOCK_SLUG_RE",
    "CPU_RE",
    "ENV_NAME_RE",
    "MAX_CONFIG_BYTES",
    "MAX_MEMORY_MIB",
    "MAX_SERVICE_NAME",
    "MAX_SLOT_WAIT_S",
    "MAX_TAG_AND_SERVICE",
    "MAX_WAIT_S",
    "MEMORY_RE",
    "NOT_CONFIG_ENV",
    "PROJECT_ID_RE",
    "REGION_RE",
    "RESERVED_ENV",
    "SECRET_REF_RE",
    "SERVICE_NAME_RE",
    "TRAFFIC_TAG_LENGTH",
    "TRAFFIC_TAG_PREFIX",
    "AfterPass",
    "ConfigError",
    "ContractSettings",
    "DegradedPolicy",
    "Endpoints",
    "HealthChecks",
    "LogRules",
    "PriceTable",
    "ProbeAuth",
    "ProbeMode",
    "ProbePolicy",
    "ServiceConfig",
    "Settings",
    "SmokeCommand",
    "Strict",
    "SyntaxSettings",
    "TrafficPlan",
    "UrlCheck",
    "UrlKind",
    "_format_validation_error",
    "_resolve_paths",
    "check_sources",
    "cpu_amount",
    "cpu_is_valid",
    "deep_merge",
    "describe_error",
    "env_overrides",
    "load_settings",
    "memory_ceiling_mib",
    "memory_mib",
    "read_toml",
    "sandbox_overrides",
]
