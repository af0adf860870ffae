"""A content-addressed store of syntax results, shared by every clone on the machine.

An entry is keyed by what decides the result and nothing else:

* the file's content: its git blob id (`git ls-files -s` gives it for files that match the index;
  for any other file it is computed the same way, sha1 of `blob <size>\\0<content>`, so a plain
  copy of a checkout hits the same entries as the checkout);
* how the file is checked (its kind, and for JSON whether comments are allowed);
* the environment: the interpreter (implementation and full version string), the target Python
  version, and the checker's version (a digest of the syntax package's own sources, plus the YAML
  library's version), so a changed checker never reads an old checker's verdicts.

Entries record findings (without the path, which is the caller's) as well as passes and "not
checkable" skips. An entry that does not parse, has the wrong shape or carries another key is
ignored (a miss) and rewritten by the next store; a store file that is not a database is replaced.
Any other cache failure costs speed, never a result: the stage checks the files instead.

Files without a git id are read and hashed, except where a file's stat signature (inode, size,
mtime and ctime in ns) matches the one recorded when it was last hashed under the same root (git's
own trick for its index); a file modified less than RACY_WINDOW_S before it was hashed is never
recorded, so a same-timestamp edit cannot hide behind an old signature.

Store: one SQLite file (WAL; batched lookups and one transaction per run). Measured against one
file per entry in benchmarks/bench_syntax_cache.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .model import FILE_KINDS, SyntaxFinding

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "STAGECHECK_CACHE_DIR"
SCHEMA = "syntax-v1"
DB_NAME = f"{SCHEMA}.sqlite3"
_YAML_VERSION = re.compile(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", re.M)
RACY_WINDOW_S = 2.0
MAX_STORE_BYTES = 256 * 1024 * 1024  # a store grown past this (~2M entries) starts over: no unbounded growth
LOOKUP_BATCH = 900  # bound parameters per SELECT (SQLite's historic limit is 999)
FINDING_KINDS = frozenset(("python", "yaml", "json", "toml", "conflict", "encoding"))


def default_cache_dir() -> Path:
    """$STAGECHECK_CACHE_DIR, else $XDG_CACHE_HOME/stagecheck, else ~/.cache/stagecheck."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "stagecheck"


def blob_id(data: bytes) -> str:
    """Git's object id for a blob with this content (sha1 object format)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return digest.hexdigest()


def checker_fingerprint() -> str:
    """Changes whenever the checker could answer differently: the syntax package's own sources (any
    edit is a new checker version) and the YAML library's (its version and whether its C loader is
    there), read from its files so that a run served from the cache need not import it."""
    digest = hashlib.sha1(usedforsecurity=False)
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    spec = importlib.util.find_spec("yaml")
    if spec is None or spec.origin is None:
        return f"{digest.hexdigest()[:16]}/no-yaml"
    origin = Path(spec.origin)
    found = _YAML_VERSION.search(origin.read_text(encoding="utf-8", errors="replace"))
    version = found.group(1) if found else "unknown"
    libyaml = "c" if any(origin.parent.glob("_yaml*.so")) or any(origin.parent.glob("_yaml*.pyd")) else "py"
    return f"{digest.hexdigest()[:16]}/yaml-{version}-{libyaml}"


def environment_digest(target_version: tuple[int, int] | None) -> str:
    """The part of every key shared by one run: interpreter, target version, checker."""
    target = "running" if target_version is None else "{}.{}".format(*target_version)
    material = "\0".join(
        (SCHEMA, sys.implementation.name, sys.version, target, checker_fingerprint())
    )
    return hashlib.sha1(material.encode(), usedforsecurity=False).hexdigest()[:24]


def entry_key(environment: str, variant: str, content_id: str) -> str:
    return f"{environment}:{variant}:{content_id}"


@dataclass(frozen=True)
class CachedResult:
    """What the checker said about one content: skipped (not checkable: binary, huge), or its
    findings (empty: it passed). Positions and messages only; the path is the caller's."""

    skipped: bool
    findings: tuple[tuple[int, int, str, str], ...]  # (line, col, kind, message)

    @staticmethod
    def from_findings(findings: list[SyntaxFinding] | None) -> CachedResult:
        if findings is None:
            return CachedResult(True, ())
        return CachedResult(False, tuple((f.line, f.col, f.kind, f.message) for f in findings))

    def findings_for(self, path: str) -> list[SyntaxFinding]:
        return [SyntaxFinding(path, line, col, message, kind) for line, col, kind, message in self.findings]

    def encode(self, key: str) -> str:
        return json.dumps(
            {"key": key, "skipped": self.skipped, "findings": [list(f) for f in self.findings]},
            separators=(",", ":"),
        )


def decode_entry(key: str, raw: object) -> CachedResult | None:
    """The stored result if `raw` is a well-formed entry written for `key`; None otherwise."""
    if not isinstance(raw, str):
        return None
    if raw == '{"key":"' + key + '","skipped":false,"findings":[]}':  # a pass, as encode() writes it
        return PASSED
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {"key", "skipped", "findings"}:
        return None
    if value["key"] != key or not isinstance(value["skipped"], bool):
        return None
    findings = value["findings"]
    if not isinstance(findings, list) or (value["skipped"] and findings):
        return None
    parsed: list[tuple[int, int, str, str]] = []
    for item in findings:
        if not (isinstance(item, list) and len(item) == 4):
            return None
        line, col, kind, message = item
        if not (
            type(line) is int and type(col) is int and line >= 1 and col >= 1
            and kind in FINDING_KINDS and isinstance(message, str) and message
        ):  # fmt: skip
            return None
        parsed.append((line, col, kind, message))
    return CachedResult(value["skipped"], tuple(parsed))


PASSED = CachedResult(False, ())


def stat_signature(info: os.stat_result) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def settled(info: os.stat_result, now_ns: int) -> bool:
    """Old enough that a later edit cannot share its timestamps (see RACY_WINDOW_S)."""
    horizon = now_ns - int(RACY_WINDOW_S * 1e9)
    return info.st_mtime_ns < horizon and info.st_ctime_ns < horizon


class ResultStore(Protocol):
    def lookup(self, keys: Iterable[str]) -> dict[str, CachedResult]: ...

    def store(self, entries: Mapping[str, CachedResult]) -> None: ...

    def known_contents(self, root: str) -> dict[str, tuple[str, str]]:
        """path -> (stat signature, content id) recorded for files under `root`."""
        ...

    def remember_contents(self, root: str, contents: Mapping[str, tuple[str, str]]) -> None: ...

    def close(self) -> None: ...


class SqliteStore:
    """All entries in one SQLite file: a lookup of thousands of keys is a few batched queries."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / DB_NAME
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                too_big = self.path.stat().st_size > MAX_STORE_BYTES
            except OSError:
                too_big = False
            if too_big:
                log.info("syntax cache %s is over %d bytes; starting a new one", self.path, MAX_STORE_BYTES)
                self._remove()
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:  # not a database (truncated, overwritten): start over
                log.warning("syntax cache %s is unreadable (%s); starting a new one", self.path, exc)
                self._remove()
                self._db = self._open()
        return self._db

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID")
            db.execute(
                "CREATE TABLE IF NOT EXISTS contents (root TEXT, path TEXT, signature TEXT, content_id TEXT,"
                " PRIMARY KEY (root, path)) WITHOUT ROWID"
            )
            db.execute("SELECT count(*) FROM (SELECT 1 FROM results LIMIT 1)").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def lookup(self, keys: Iterable[str]) -> dict[str, CachedResult]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedResult] = {}
        if not wanted:
            return found
        try:
            db = self._connect()
            for start in range(0, len(wanted), LOOKUP_BATCH):
                batch = wanted[start : start + LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                for key, raw in db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", batch):
                    result = decode_entry(key, raw)
                    if result is not None:
                        found[key] = result
        except (sqlite3.Error, OSError) as exc:
            log.warning("syntax cache %s: lookup failed (%s); checking without it", self.path, exc)
            return {}
        return found

    def store(self, entries: Mapping[str, CachedResult]) -> None:
        if not entries:
            return
        self._write("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                    [(key, result.encode(key)) for key, result in entries.items()], "; results not remembered")

    def known_contents(self, root: str) -> dict[str, tuple[str, str]]:
        known: dict[str, tuple[str, str]] = {}
        try:
            query = "SELECT path, signature, content_id FROM contents WHERE root = ?"
            for path, signature, content_id in self._connect().execute(query, (root,)):
                if isinstance(signature, str) and isinstance(content_id, str) and isinstance(path, str):
                    known[path] = (signature, content_id)
        except (sqlite3.Error, OSError) as exc:
            log.warning("syntax cache %s: lookup failed (%s); hashing every file", self.path, exc)
            return {}
        return known

    def remember_contents(self, root: str, contents: Mapping[str, tuple[str, str]]) -> None:
        if not contents:
            return
        self._write("INSERT OR REPLACE INTO contents (root, path, signature, content_id) VALUES (?, ?, ?, ?)",
                    [(root, path, signature, content_id) for path, (signature, content_id) in contents.items()], "")

    def _write(self, sql: str, rows: list[tuple[str, ...]], consequence: str) -> None:
        """One transaction of upserts; a failure costs the remembering, never a result."""
        try:
            db = self._connect()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, rows)
        except (sqlite3.Error, OSError) as exc:
            log.warning("syntax cache %s: store failed (%s)%s", self.path, exc, consequence)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class FileStore:
    """One small file per entry (sharded by the key's digest). Kept for the benchmark's comparison
    of store formats; SqliteStore is the default."""

    def __init__(self, directory: Path) -> None:
        self.root = Path(directory) / f"{SCHEMA}-files"

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        return self.root / digest[:2] / digest[2:]

    def lookup(self, keys: Iterable[str]) -> dict[str, CachedResult]:
        found: dict[str, CachedResult] = {}
        for key in dict.fromkeys(keys):
            try:
                raw = self._path(key).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            result = decode_entry(key, raw)
            if result is not None:
                found[key] = result
        return found

    def store(self, entries: Mapping[str, CachedResult]) -> None:
        try:
            for key, result in entries.items():
                path = self._path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                temporary.write_text(result.encode(key), encoding="utf-8")
                os.replace(temporary, path)
        except OSError as exc:
            log.warning("syntax cache %s: store failed (%s)", self.root, exc)

    def known_contents(self, root: str) -> dict[str, tuple[str, str]]:
        return {}

    def remember_contents(self, root: str, contents: Mapping[str, tuple[str, str]]) -> None:
        pass

    def close(self) -> None:
        pass


def open_store(directory: Path | None = None, kind: str = "sqlite") -> ResultStore:
    directory = default_cache_dir() if directory is None else Path(directory)
    return FileStore(directory) if kind == "files" else SqliteStore(directory)


def check_variant(kind: str, jsonc: bool) -> str:
    """How a file is checked: its kind, and for JSON whether comments are allowed."""
    if kind not in FILE_KINDS:
        raise ValueError(f"unknown file kind {kind!r}")
    return "jsonc" if kind == "json" and jsonc else kind
