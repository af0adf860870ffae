"""Run the checkers over a repository: results remembered in the content-addressed cache are
reused, the rest is checked in-process for small sets and by a process pool over chunks of files for
large ones. Workers read the files themselves and return the content id of what they checked, so a
file that changes mid-run is remembered under the content that was actually checked. Results come
back sorted."""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cache import (
    CachedResult,
    ResultStore,
    blob_id,
    check_variant,
    entry_key,
    environment_digest,
    open_store,
    settled,
    stat_signature,
)
from .config_check import check_json_text, check_toml_text, check_yaml_text, is_jsonc_path
from .conflicts import CLOSE, OPEN, find_conflict_markers
from .discovery import discover
from .model import ENCODING, FILE_KINDS, JSON, PYTHON, TEXT, TOML, YAML, SyntaxFinding, SyntaxReport
from .python_check import TargetVersion, check_python_source, feature_minor
from .text import decode_config_text, looks_binary

POOL_THRESHOLD = 200  # below this many files a process pool costs more than it saves
CHUNKS_PER_JOB = 4  # several chunks per worker so a chunk of big files does not leave a core idle
MAX_TEXT_BYTES = 8 * 1024 * 1024  # plain text files larger than this are not scanned for markers

# Never read for the conflict-marker scan.
BINARY_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .ico .webp .bmp .tiff .pdf .zip .gz .tgz .bz2 .xz .zst .7z .tar .whl .egg "
    ".so .dylib .dll .exe .bin .o .a .pyc .pyo .pyd .class .jar .woff .woff2 .ttf .otf .eot .mp3 .mp4 "
    ".mov .avi .wav .ogg .flac .sqlite .sqlite3 .db .parquet .pkl .pickle .npy .npz .h5 .onnx .pt".split()
)

_OPEN_BYTES, _CLOSE_BYTES = OPEN.encode(), CLOSE.encode()

log = logging.getLogger(__name__)

WorkItem = tuple[str, str]  # (relative path, file kind)


@dataclass
class ChunkResult:
    findings: list[SyntaxFinding] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    # (path, kind, content id, result) of every file whose content was read (only when recording)
    read: list[tuple[str, str, str, CachedResult]] = field(default_factory=list)

    def merge(self, other: ChunkResult) -> None:
        self.findings.extend(other.findings)
        self.checked.update(other.checked)
        self.skipped += other.skipped
        self.read.extend(other.read)


def check_bytes(
    data: bytes, path: str, kind: str, target_version: TargetVersion | None = None
) -> list[SyntaxFinding]:
    """Pure: every finding for one file's content, checked as `kind`."""
    findings = _STRUCTURED_CHECKERS[kind](data, path, target_version) if kind in _STRUCTURED_CHECKERS else []
    if _OPEN_BYTES in data or _CLOSE_BYTES in data:
        findings.extend(find_conflict_markers(data.decode("utf-8", errors="replace"), path))
    return findings


def _config_checker(
    check: Callable[[str, str], list[SyntaxFinding]], allow_utf16_32: bool = False
) -> Callable[[bytes, str, TargetVersion | None], list[SyntaxFinding]]:
    def run(data: bytes, path: str, _target: TargetVersion | None) -> list[SyntaxFinding]:
        text = decode_config_text(data, path, allow_utf16_32=allow_utf16_32)
        return [text] if isinstance(text, SyntaxFinding) else check(text, path)

    return run


_STRUCTURED_CHECKERS: dict[str, Callable[[bytes, str, TargetVersion | None], list[SyntaxFinding]]] = {
    PYTHON: check_python_source,
    YAML: _config_checker(check_yaml_text, allow_utf16_32=True),
    JSON: _config_checker(check_json_text),
    TOML: _config_checker(check_toml_text),
}


def path_skipped(path: str, kind: str) -> bool:
    """Files never read, whatever their content: plain text with a binary extension."""
    return kind == TEXT and posixpath.splitext(path)[1].lower() in BINARY_EXTENSIONS


def read_checkable(root: str, path: str, kind: str) -> bytes | OSError | None:
    """The file's content; None when it is not read (vanished, not a regular file, binary extension,
    huge text); the OSError when reading it failed."""
    full = os.path.join(root, path)
    try:
        info = os.lstat(full)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if path_skipped(path, kind) or (kind == TEXT and info.st_size > MAX_TEXT_BYTES):
        return None
    try:
        with open(full, "rb") as handle:
            return handle.read()
    except OSError as exc:
        return exc


def check_content(data: bytes, path: str, kind: str, target_version: TargetVersion | None) -> list[SyntaxFinding] | None:
    """Pure: the findings for one file's content; None when the content is not checkable (binary text)."""
    if kind == TEXT and looks_binary(data):
        return None
    return check_bytes(data, path, kind, target_version)


def check_file(
    root: str, path: str, kind: str, target_version: TargetVersion | None
) -> list[SyntaxFinding] | None:
    """Read and check one file; None when it is skipped (vanished, not a regular file, binary, huge)."""
    data = read_checkable(root, path, kind)
    if data is None:
        return None
    if isinstance(data, OSError):
        return [SyntaxFinding(path, 1, 1, f"cannot read file: {data.strerror or data}", ENCODING)]
    return check_content(data, path, kind, target_version)


def check_chunk(
    root: str, items: Sequence[WorkItem], target_version: TargetVersion | None, record: bool = False
) -> ChunkResult:
    """The unit of work a pool worker runs (module-level so it pickles by reference). `record`: also
    return each read file's content id and result, for the cache."""
    result = ChunkResult()
    for path, kind in items:
        data = read_checkable(root, path, kind)
        if isinstance(data, OSError):
            findings: list[SyntaxFinding] | None = [
                SyntaxFinding(path, 1, 1, f"cannot read file: {data.strerror or data}", ENCODING)
            ]
        else:
            findings = None if data is None else check_content(data, path, kind, target_version)
            if record and data is not None:
                result.read.append((path, kind, blob_id(data), CachedResult.from_findings(findings)))
        if findings is None:
            result.skipped += 1
        else:
            result.checked[kind] += 1
            result.findings.extend(findings)
    return result


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def split_chunks(items: Sequence[WorkItem], count: int) -> list[Sequence[WorkItem]]:
    """`count` contiguous, near-equal chunks (neighbouring paths share directories and disk locality)."""
    count = max(1, min(count, len(items)))
    size, extra = divmod(len(items), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def pool_start_method() -> str:
    """Fork is cheapest and never re-imports the caller's __main__, but forking a process that runs
    other threads (a Prefect worker does) can inherit a lock held mid-operation: use "forkserver" then."""
    import multiprocessing  # here, not at import: a run served from the cache never starts a pool

    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork" if threading.active_count() == 1 else "forkserver"


def check_items(
    root: str,
    items: Sequence[WorkItem],
    *,
    target_version: TargetVersion | None,
    jobs: int,
    start_method: str | None = None,
    record: bool = False,
) -> ChunkResult:
    """Check `items` with `jobs` worker processes (jobs <= 1: in this process)."""
    if jobs <= 1 or len(items) < 2:
        return check_chunk(root, items, target_version, record)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    total = ChunkResult()
    chunks = split_chunks(items, jobs * CHUNKS_PER_JOB)
    method = start_method or pool_start_method()
    try:
        workers = min(jobs, len(chunks))
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
            for partial in pool.map(
                check_chunk, [root] * len(chunks), chunks, [target_version] * len(chunks), [record] * len(chunks)
            ):
                total.merge(partial)
    except (BrokenProcessPool, OSError) as exc:  # e.g. no subprocesses allowed: same result, slower
        log.warning("syntax check: process pool (%s) unavailable (%s); checking in-process", method, exc)
        return check_chunk(root, items, target_version, record)
    return total


def content_ids(
    root: str, items: Sequence[WorkItem], known: dict[str, str], store: ResultStore | None = None
) -> dict[str, str]:
    """The content id of every item that can have one: git's blob id where the listing vouches for
    it, else the id recorded for the file's unchanged stat signature, else the file is read and
    hashed the same way (and its signature recorded once it has settled)."""
    ids: dict[str, str] = {}
    unknown = []
    for path, kind in items:
        known_id = known.get(path)
        if known_id is None:
            unknown.append((path, kind))
        else:
            ids[path] = known_id
    if not unknown:
        return ids
    recorded = store.known_contents(root) if store is not None else {}
    fresh: dict[str, tuple[str, str]] = {}
    now_ns = time.time_ns()
    for path, kind in unknown:
        full = os.path.join(root, path)
        try:
            info = os.lstat(full)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        signature = stat_signature(info)
        previous = recorded.get(path)
        if previous is not None and previous[0] == signature:
            ids[path] = previous[1]
            continue
        data = read_checkable(root, path, kind)
        if not isinstance(data, bytes):
            continue
        ids[path] = blob_id(data)
        if settled(info, now_ns) and stat_signature(os.lstat(full)) == signature:
            fresh[path] = (signature, ids[path])
    if store is not None:
        store.remember_contents(root, fresh)
    return ids


def variant_of(path: str, kind: str) -> str:
    return check_variant(kind, kind == JSON and is_jsonc_path(path))


def check_repository(
    root: Path,
    *,
    target_version: tuple[int, int] | None = None,
    exclude: Sequence[str] = (),
    jobs: int | None = None,
    pool_threshold: int = POOL_THRESHOLD,
    cache: bool = True,
    cache_dir: Path | None = None,
    store: ResultStore | None = None,
) -> SyntaxReport:
    """Stage 1: syntax-check every relevant file under `root`, reusing remembered results for
    content already checked (by any clone) with the same interpreter, target and checker.

    `cache=False` checks everything and remembers nothing; `cache_dir` (default: see
    cache.default_cache_dir) or `store` choose where results are remembered.

    Raises NotADirectoryError/FileNotFoundError for a bad root and UnsupportedTargetVersion (a
    ValueError) for a target version this interpreter cannot check."""
    started = time.perf_counter()
    feature_minor(target_version)  # validate up front, not once per worker
    root = Path(root).resolve()
    if not root.exists():
        raise FileNotFoundError(f"no such directory: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    listing = discover(root, exclude)
    total = ChunkResult()
    pending: Sequence[WorkItem] = listing.files
    from_cache = 0
    if cache:
        store = store if store is not None else open_store(cache_dir)
        environment = environment_digest(target_version)
        readable = [(p, k) for p, k in listing.files if not path_skipped(p, k)]
        total.skipped += len(listing.files) - len(readable)
        ids = content_ids(str(root), readable, listing.blob_ids, store)
        keys = {
            path: entry_key(environment, variant_of(path, kind), ids[path])
            for path, kind in readable
            if path in ids
        }
        remembered = store.lookup(keys.values())
        pending = []
        for path, kind in readable:
            hit = remembered.get(keys.get(path, ""))
            if hit is None:
                pending.append((path, kind))
            elif hit.skipped:
                total.skipped += 1
                from_cache += 1
            else:
                total.checked[kind] += 1
                total.findings.extend(hit.findings_for(path))
                from_cache += 1
    workers = default_jobs() if jobs is None else max(1, jobs)
    if len(pending) < pool_threshold:
        workers = 1
    if pending:
        total.merge(check_items(str(root), pending, target_version=target_version, jobs=workers, record=cache))
    if cache and store is not None:
        store.store(
            {
                entry_key(environment, variant_of(path, kind), content_id): result
                for path, kind, content_id, result in total.read
            }
        )
        store.close()
    return SyntaxReport(
        root=str(root),
        files_checked={kind: total.checked.get(kind, 0) for kind in FILE_KINDS},
        findings=tuple(sorted(total.findings, key=SyntaxFinding.sort_key)),
        skipped=listing.skipped + total.skipped,
        duration_s=time.perf_counter() - started,
        from_cache=from_cache,
    )
