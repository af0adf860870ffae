"""Stage 1 of the pipeline: repository syntax validation (Python, YAML, JSON, TOML, merge-conflict
markers). Pure checkers per file kind, file discovery honouring .gitignore, and a parallel runner.
Nothing is built, imported or executed, and no bytecode is written."""

from .config_check import check_json_text, check_toml_text, check_yaml_text, is_jsonc_path
from .conflicts import find_conflict_markers
from .model import SyntaxFinding, SyntaxReport
from .python_check import (
    RUNNING_VERSION,
    UnsupportedTargetVersion,
    check_python_source,
    parse_target_version,
)
from .runner import check_bytes, check_repository

__all__ = [
    "RUNNING_VERSION",
    "SyntaxFinding",
    "SyntaxReport",
    "UnsupportedTargetVersion",
    "check_bytes",
    "check_json_text",
    "check_python_source",
    "check_repository",
    "check_toml_text",
    "check_yaml_text",
    "find_conflict_markers",
    "is_jsonc_path",
    "parse_target_version",
]
