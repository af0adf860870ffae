"""The data the syntax stage produces: one finding per problem, one report per repository."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Finding kinds.
PYTHON: Final = "python"
YAML: Final = "yaml"
JSON: Final = "json"
TOML: Final = "toml"
CONFLICT: Final = "conflict"
ENCODING: Final = "encoding"

# File kinds (keys of SyntaxReport.files_checked). "text" files are only scanned for conflict markers;
# every other kind is parsed *and* scanned for conflict markers.
TEXT: Final = "text"
FILE_KINDS: Final = (PYTHON, YAML, JSON, TOML, TEXT)


@dataclass(frozen=True)
class SyntaxFinding:
    path: str  # relative to the root, POSIX separators
    line: int  # 1-based
    col: int  # 1-based, in characters
    message: str
    kind: str  # "python" | "yaml" | "json" | "toml" | "conflict" | "encoding"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.col, self.kind, self.message)

    def to_dict(self) -> dict[str, str | int]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "message": self.message,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class SyntaxReport:
    root: str
    files_checked: dict[str, int]  # by file kind: python, yaml, json, toml, text
    findings: tuple[SyntaxFinding, ...]  # sorted by (path, line, col)
    skipped: int  # listed files skipped: vendored/excluded paths, binary, symlinks, oversized text
    duration_s: float
    from_cache: int = 0  # files whose result came from the result cache (checked or skipped)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def total_checked(self) -> int:
        return sum(self.files_checked.values())

    def summary(self) -> str:
        by_kind = ", ".join(f"{kind} {n}" for kind, n in self.files_checked.items() if n)
        noun = "finding" if len(self.findings) == 1 else "findings"
        return (
            f"{self.total_checked} files checked ({by_kind or 'none'}), {len(self.findings)} {noun}, "
            f"{self.skipped} skipped, {self.duration_s:.2f}s"
            + (f" ({self.from_cache} from cache)" if self.from_cache else "")
        )
