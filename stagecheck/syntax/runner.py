"""Run the checkers over a repository: in-process for small trees, a process pool over chunks of
files for large ones. Workers read the files themselves; results come back sorted."""

from __future__ import annotations

import logging
import multiprocessing
import os
import posixpath
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from .config_check import check_json_text, check_toml_text, check_yaml_text
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

    def merge(self, other: ChunkResult) -> None:
        self.findings.extend(other.findings)
        self.checked.update(other.checked)
        self.skipped += other.skipped


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


def check_file(
    root: str, path: str, kind: str, target_version: TargetVersion | None
) -> list[SyntaxFinding] | None:
    """Read and check one file; None when it is skipped (vanished, not a regular file, binary, huge)."""
    full = os.path.join(root, path)
    try:
        info = os.lstat(full)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if kind == TEXT and (
        info.st_size > MAX_TEXT_BYTES or posixpath.splitext(path)[1].lower() in BINARY_EXTENSIONS
    ):
        return None
    try:
        with open(full, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return [SyntaxFinding(path, 1, 1, f"cannot read file: {exc.strerror or exc}", ENCODING)]
    if kind == TEXT and looks_binary(data):
        return None
    return check_bytes(data, path, kind, target_version)


def check_chunk(root: str, items: Sequence[WorkItem], target_version: TargetVersion | None) -> ChunkResult:
    """The unit of work a pool worker runs (module-level so it pickles by reference)."""
    result = ChunkResult()
    for path, kind in items:
        findings = check_file(root, path, kind, target_version)
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
) -> ChunkResult:
    """Check `items` with `jobs` worker processes (jobs <= 1: in this process)."""
    if jobs <= 1 or len(items) < 2:
        return check_chunk(root, items, target_version)
    total = ChunkResult()
    chunks = split_chunks(items, jobs * CHUNKS_PER_JOB)
    method = start_method or pool_start_method()
    try:
        workers = min(jobs, len(chunks))
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
            for partial in pool.map(
                check_chunk, [root] * len(chunks), chunks, [target_version] * len(chunks)
            ):
                total.merge(partial)
    except (BrokenProcessPool, OSError) as exc:  # e.g. no subprocesses allowed: same result, slower
        log.warning("syntax check: process pool (%s) unavailable (%s); checking in-process", method, exc)
        return check_chunk(root, items, target_version)
    return total


def check_repository(
    root: Path,
    *,
    target_version: tuple[int, int] | None = None,
    exclude: Sequence[str] = (),
    jobs: int | None = None,
    pool_threshold: int = POOL_THRESHOLD,
) -> SyntaxReport:
    """Stage 1: syntax-check every relevant file under `root`.

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
    workers = default_jobs() if jobs is None else max(1, jobs)
    if len(listing.files) < pool_threshold:
        workers = 1
    result = check_items(str(root), listing.files, target_version=target_version, jobs=workers)
    return SyntaxReport(
        root=str(root),
        files_checked={kind: result.checked.get(kind, 0) for kind in FILE_KINDS},
        findings=tuple(sorted(result.findings, key=SyntaxFinding.sort_key)),
        skipped=listing.skipped + result.skipped,
        duration_s=time.perf_counter() - started,
    )
