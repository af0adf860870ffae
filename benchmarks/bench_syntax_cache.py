"""Benchmark: the syntax stage with its result cache, against what users run today. Prints figures;
not a test.

    .venv/bin/python benchmarks/bench_syntax_cache.py [--repeat 5] [--heavy-repeat 3] [--modes git,plain]

Corpus: the `.py` files of the installed dependencies (this venv's site-packages; code nobody here
wrote), copied into a temp dir (paths under vendored-directory names left out, so every tool sees the
same files). Every comparison runs both sides in this run, interleaved (A B A B ...), and reports
medians and their ratio; `stagecheck check-syntax` runs as users run it (a fresh process, default
jobs), with its cache in a temp dir (STAGECHECK_CACHE_DIR):

  first run ever      empty cache, fresh copy          vs `python -m compileall -q -j0 -f`
  fresh copy          warm cache, new paths + mtimes   vs compileall (a `git clone` in git mode)
  nothing changed     same tree again                  vs `ruff check --select E9 --no-cache`
  one file changed    one file edited between runs     vs the unchanged case

Modes: "git" (the corpus is a git checkout: ids from `git ls-files -s`) and "plain" (no git: every
file is hashed). Also: the first run's findings against CPython's own `compile()` of every file, the
store formats (one SQLite file vs one file per entry) on the corpus's entries, and the peak RSS of
each run (the largest single process: parent or a pool worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stagecheck.syntax.discovery import DEFAULT_SKIP_DIRS  # noqa: E402

BIN = Path(sys.executable).parent
STAGECHECK = BIN / "stagecheck"
RUFF = BIN / "ruff"


@dataclass
class Run:
    wall_s: float
    max_rss_mb: float
    stdout: str


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Wall time and the largest single-process peak RSS (wait4's ru_maxrss covers waited-for
    descendants: a pool worker counts if it is the biggest)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd, text=True
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} exited {process.returncode}")
    return Run(wall, usage.ru_maxrss / 1024, out)


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def build_corpus(dest: Path) -> int:
    skip = {d for d in DEFAULT_SKIP_DIRS if "*" not in d} - {"site-packages"}
    source = site_packages()
    count = 0
    for path in sorted(source.rglob("*.py")):
        rel = path.relative_to(source)
        if skip & set(rel.parts[:-1]) or any(p.endswith(".egg-info") for p in rel.parts):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        count += 1
    return count


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd, check=True, capture_output=True,
    )  # fmt: skip


def fresh_copy(base: Path, dest: Path, mode: str) -> Path:
    """New paths, new mtimes: `cp -r` (plain: without the base's `.git`, so the copy is not a checkout)
    or `git clone` (git; a fresh checkout and index)."""
    if mode == "git":
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(base), str(dest)], check=True)
    else:
        subprocess.run(["cp", "-r", str(base), str(dest)], check=True)
        shutil.rmtree(dest / ".git")
    return dest


def compile_reference(path: str) -> tuple[int, str] | None:
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(data, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return (exc.lineno or 1, f"{type(exc).__name__}: {exc.msg}")
    except ValueError as exc:  # null bytes
        return (1, f"ValueError: {exc}")
    return None


def reference_findings(root: Path) -> dict[str, tuple[int, str]]:
    files = sorted(str(p) for p in root.rglob("*.py"))
    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        results = pool.map(compile_reference, files, chunksize=64)
        return {str(Path(f).relative_to(root)): r for f, r in zip(files, results, strict=True) if r}


def stagecheck_cmd(root: Path) -> list[str]:
    return [str(STAGECHECK), "check-syntax", "--format", "json", str(root)]


def compileall_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "compileall", "-q", "-j0", "-f", str(root)]


def ruff_cmd(root: Path) -> list[str]:
    return [str(RUFF), "check", "--select", "E9", "--no-cache", "--isolated", "-q", str(root)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def show(label: str, ours: list[Run], theirs: list[Run], their_name: str, target: str) -> None:
    a, b = median([r.wall_s for r in ours]), median([r.wall_s for r in theirs])
    print(
        f"  {label:<20} stagecheck {a:7.2f}s  {their_name:<18} {b:7.2f}s  ratio {b / a:6.1f}x faster  "
        f"(target {target}; n={len(ours)}; peak RSS {max(r.max_rss_mb for r in ours):.0f} MB)"
    )


def interleave(count: int, first: Callable[[int], Run], second: Callable[[int], Run]) -> tuple[list[Run], list[Run]]:
    a: list[Run] = []
    b: list[Run] = []
    for index in range(count):
        a.append(first(index))
        b.append(second(index))
    return a, b


def bench_mode(mode: str, base: Path, work: Path, args: argparse.Namespace, reference: dict[str, tuple[int, str]]) -> None:
    print(f"\n[{mode}] corpus is {'a git checkout (git clone per fresh copy)' if mode == 'git' else 'a plain directory'}")
    counter = iter(range(10_000))

    def new_tree() -> Path:
        return fresh_copy(base, work / f"{mode}-tree-{next(counter)}", mode)

    def cache_env(cache: Path) -> dict[str, str]:
        return {**os.environ, "STAGECHECK_CACHE_DIR": str(cache)}

    def compileall(_: int) -> Run:
        tree = new_tree()
        pyc = work / f"pyc-{next(counter)}"
        result = run(compileall_cmd(tree), env={**os.environ, "PYTHONPYCACHEPREFIX": str(pyc)})
        shutil.rmtree(pyc, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
        return result

    # 1. first run ever: an empty cache, a fresh copy.
    def first_run(index: int) -> Run:
        tree = new_tree()
        result = run(stagecheck_cmd(tree), env=cache_env(work / f"{mode}-empty-cache-{index}"))
        findings = json.loads(result.stdout)["findings"]
        ours = {f["path"]: (f["line"], f["message"]) for f in findings}
        status = "identical" if ours == reference else f"DIFFERENT: ours {ours} vs compile() {reference}"
        print(f"    first run {index}: {len(findings)} finding(s), {status} to CPython's compile()")
        shutil.rmtree(tree, ignore_errors=True)
        return result

    ours, theirs = interleave(args.heavy_repeat, first_run, compileall)
    show("first run ever", ours, theirs, "compileall -j0", ">= 1x")

    # The warm cache every later case uses.
    warm = work / f"{mode}-warm-cache"
    seed = new_tree()
    run(stagecheck_cmd(seed), env=cache_env(warm))

    # 2. a fresh copy of unchanged content: new paths, new mtimes.
    def fresh(_: int) -> Run:
        tree = new_tree()
        result = run(stagecheck_cmd(tree), env=cache_env(warm))
        shutil.rmtree(tree, ignore_errors=True)
        return result

    ours, theirs = interleave(args.heavy_repeat, fresh, compileall)
    show("fresh copy", ours, theirs, "compileall -j0", ">= 8x")

    # 3. nothing changed since the last run.
    run(stagecheck_cmd(seed), env=cache_env(warm))
    unchanged, ruff = interleave(
        args.repeat, lambda _: run(stagecheck_cmd(seed), env=cache_env(warm)), lambda _: run(ruff_cmd(seed))
    )
    show("nothing changed", unchanged, ruff, "ruff E9 no-cache", ">= 2x")

    # 4. one file changed (a different file, new content, before every run) vs unchanged.
    files = sorted(p for p in seed.rglob("*.py") if ".git" not in p.parts)

    def changed(index: int) -> Run:
        target = files[(index * 997) % len(files)]
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(f"\n_bench_edit_{index} = {index}\n")
        return run(stagecheck_cmd(seed), env=cache_env(warm))

    def same(_: int) -> Run:
        return run(stagecheck_cmd(seed), env=cache_env(warm))

    edited, unchanged = interleave(args.repeat, changed, same)
    a, b = median([r.wall_s for r in edited]), median([r.wall_s for r in unchanged])
    print(
        f"  {'one file changed':<20} stagecheck {a:7.2f}s  {'unchanged':<18} {b:7.2f}s  "
        f"ratio {a / b:6.2f} (target <= 1.20; n={len(edited)})"
    )


def bench_stores(base: Path, work: Path, repeat: int) -> None:
    """Both store formats on the same entries: store all, then look all up (warm page cache)."""
    from stagecheck.syntax.cache import PASSED, FileStore, SqliteStore, blob_id, entry_key

    keys = [entry_key("bench", "python", blob_id(p.read_bytes())) for p in sorted(base.rglob("*.py"))]
    entries = {key: PASSED for key in keys}
    figures: dict[str, dict[str, list[float]]] = {"sqlite": {"store": [], "lookup": []}, "files": {"store": [], "lookup": []}}
    for index in range(repeat):
        for name, factory in (("sqlite", SqliteStore), ("files", FileStore)):
            directory = work / f"store-{name}-{index}"
            store = factory(directory)
            started = time.perf_counter()
            store.store(entries)
            store.close()
            stored = time.perf_counter()
            store = factory(directory)
            found = store.lookup(keys)
            store.close()
            looked = time.perf_counter()
            assert len(found) == len(entries)
            figures[name]["store"].append(stored - started)
            figures[name]["lookup"].append(looked - stored)
    print(f"\nstore formats, {len(entries)} entries (median of {repeat}, interleaved):")
    for name, values in figures.items():
        print(f"  {name:<7} store all {median(values['store']):6.3f}s   look up all {median(values['lookup']):6.3f}s")
    ratio = median(figures["files"]["lookup"]) / median(figures["sqlite"]["lookup"])
    print(f"  lookup: sqlite {ratio:.1f}x faster than one file per entry")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="runs per side for the cheap cases")
    parser.add_argument("--heavy-repeat", type=int, default=3, help="runs per side for the full-check cases")
    parser.add_argument("--modes", default="git,plain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stagecheck-bench-syntax-") as tmp:
        work = Path(tmp)
        base = work / "base"
        count = build_corpus(base)
        size = sum(p.stat().st_size for p in base.rglob("*.py"))
        git(base, "init", "-q")
        git(base, "add", "-A")
        git(base, "commit", "-q", "-m", "corpus")
        reference = reference_findings(base)
        print(
            f"corpus: {count} .py files of this venv's site-packages, {size / 1e6:.0f} MB; "
            f"CPython compile() finds {len(reference)} file(s) with errors; cores={len(os.sched_getaffinity(0))}, "
            f"python {sys.version.split()[0]}, load average before: {os.getloadavg()[0]:.1f}"
        )
        for mode in args.modes.split(","):
            bench_mode(mode, base, work, args, reference)
        bench_stores(base, work, args.heavy_repeat)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
