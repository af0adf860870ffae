"""Benchmark for stage 1 (syntax validation). Prints figures; not a test.

    .venv/bin/python benchmarks/bench_syntax.py [--files 5000] [--repeat 3] [--git] [--corpus stdlib|synthetic]

Generates a corpus in a temp dir (80% Python modules — copies of this interpreter's stdlib modules
up to 1200 lines by default — plus YAML/JSON/TOML/Markdown), then times `check_repository` in-process and with process pools (each start method), every
measurement in a fresh interpreter so nothing is warm but the OS page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

MIX = {"py": 0.80, "yaml": 0.08, "json": 0.06, "toml": 0.02, "md": 0.04}


def python_module(rng: random.Random, index: int) -> str:
    out = [
        f'"""Module {index}: generated for the syntax benchmark."""',
        "",
        "from __future__ import annotations",
        "",
    ]
    out += ["import dataclasses", "import json", "from collections.abc import Iterable", ""]
    size = rng.choices(["tiny", "medium", "large"], weights=[2, 6, 2])[0]  # many small files, a long tail
    if size == "tiny":
        return "\n".join([*out, '__all__ = ["dataclasses", "json", "Iterable"]', ""])
    classes, methods, helpers = {"medium": ((0, 2), (1, 4), (1, 4)), "large": ((2, 4), (3, 7), (4, 10))}[size]
    for c in range(rng.randint(*classes)):
        out += [
            "@dataclasses.dataclass(frozen=True)",
            f"class Record{c}:",
            f'    """A record with a few fields ({c})."""',
            "",
            "    name: str",
            "    count: int = 0",
            "    tags: tuple[str, ...] = ()",
            "",
        ]
        for m in range(rng.randint(*methods)):
            out += [
                f"    def method_{m}(self, values: Iterable[int], *, scale: float = 1.0) -> dict[str, float]:",
                f'        """Scale and summarise ({m})."""',
                "        total = 0.0",
                "        for position, value in enumerate(values):",
                "            if value % 2 == 0 and (doubled := value * 2) > 10:",
                "                total += doubled * scale",
                "            elif value < 0:",
                "                raise ValueError(f'negative value {value} at {position}')",
                "            else:",
                "                total += value",
                "        squares = {str(k): k * k for k in range(self.count) if k not in self.tags}",
                "        return {'total': total, **{k: float(v) for k, v in squares.items()}}",
                "",
            ]
    for f in range(rng.randint(*helpers)):
        out += [
            f"def helper_{f}(payload: str, retries: int = 3) -> list[dict[str, object]]:",
            "    result: list[dict[str, object]] = []",
            "    for attempt in range(retries):",
            "        try:",
            "            data = json.loads(payload)",
            "        except json.JSONDecodeError as exc:",
            "            result.append({'attempt': attempt, 'error': str(exc)})",
            "            continue",
            "        with open('/dev/null', 'w') as sink:",
            "            sink.write(repr(data))",
            "        match data:",
            "            case {'kind': 'a', **rest}:",
            "                result.append(rest)",
            "            case [first, *_]:",
            "                result.append({'first': first})",
            "            case _:",
            "                pass",
            "    return sorted(result, key=lambda item: str(item.get('attempt', '')))",
            "",
            "",
        ]
    return "\n".join(out)


def yaml_doc(rng: random.Random, index: int) -> str:
    steps = "\n".join(
        f"      - name: step {s}\n        run: make target-{s} ARGS='--n {s}'"
        for s in range(rng.randint(3, 12))
    )
    return f"name: workflow-{index}\non:\n  push:\n    branches: [main]\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n{steps}\n"


def json_doc(rng: random.Random, index: int) -> str:
    return json.dumps(
        {
            "id": index,
            "items": [{"k": i, "v": rng.random(), "tags": ["a", "b"]} for i in range(rng.randint(5, 60))],
        },
        indent=2,
    )


def toml_doc(rng: random.Random, index: int) -> str:
    deps = "\n".join(f'"dep{d}>=1.{d}",' for d in range(rng.randint(2, 15)))
    return f'[project]\nname = "pkg{index}"\nversion = "1.0.{index}"\ndependencies = [\n{deps}\n]\n\n[tool.x]\nflag = true\n'


def markdown_doc(rng: random.Random, index: int) -> str:
    return f"Title {index}\n=======\n\n" + "\n\n".join(
        "Lorem ipsum dolor sit amet. " * rng.randint(2, 8) for _ in range(6)
    )


GENERATORS = {"py": python_module, "yaml": yaml_doc, "json": json_doc, "toml": toml_doc, "md": markdown_doc}


def stdlib_sources(max_lines: int = 1200) -> list[str]:
    """Real Python: this interpreter's standard library (tests and huge modules left out), every file
    one that compiles cleanly, in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).parts
        if {"test", "tests", "site-packages", "idlelib", "lib2to3"} & set(rel):
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if text.count("\n") > max_lines:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(text, str(path), "exec", dont_inherit=True)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        sources.append(text)
    return sources


def generate(root: Path, total: int, corpus: str, max_lines: int = 1200, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    counts = {ext: int(total * share) for ext, share in MIX.items()}
    counts["py"] += total - sum(counts.values())
    real = stdlib_sources(max_lines) if corpus == "stdlib" else []
    index = 0
    for ext, count in counts.items():
        for _ in range(count):
            directory = root / f"pkg{index % 40}" / f"sub{index % 7}"
            directory.mkdir(parents=True, exist_ok=True)
            text = real[index % len(real)] if ext == "py" and real else GENERATORS[ext](rng, index)
            (directory / f"file{index}.{ext}").write_text(text, encoding="utf-8")
            index += 1
    return counts


def measure(root: Path, jobs: int, start_method: str) -> None:
    """Runs in a fresh interpreter; prints one JSON line: discovery + check wall time and CPU seconds
    of this process and its workers (CPU seconds stay meaningful when the machine is busy)."""
    started = time.perf_counter()
    from stagecheck.syntax.discovery import discover
    from stagecheck.syntax.runner import check_items

    imported = time.perf_counter()
    listing = discover(root)
    listed = time.perf_counter()
    result = check_items(str(root), listing.files, target_version=None, jobs=jobs, start_method=start_method)
    done = time.perf_counter()
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "discover_s": listed - imported,
                "check_s": done - imported,
                "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage),
                "files": sum(result.checked.values()),
                "findings": len(result.findings),
            }
        )
    )


def run_case(root: Path, jobs: int, start_method: str) -> dict[str, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            str(root),
            "--jobs",
            str(jobs),
            "--start-method",
            start_method,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - started
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--corpus",
        choices=("stdlib", "synthetic"),
        default="stdlib",
        help="Python files: copies of this interpreter's stdlib modules (real code, default) or generated, "
        "statement-dense modules (roughly twice the parse cost per line)",
    )
    parser.add_argument("--max-lines", type=int, default=1200, help="stdlib corpus: leave out longer modules")
    parser.add_argument("--git", action="store_true", help="make the corpus a git repo (ls-files discovery)")
    parser.add_argument(
        "--methods", default="fork,forkserver,spawn", help="pool start methods to compare (comma-separated)"
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start-method", default="fork", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.jobs, args.start_method)
        return 0

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="stagecheck-bench-") as tmp:
        root = Path(tmp)
        counts = generate(root, args.files, args.corpus, args.max_lines)
        if args.git:
            subprocess.run(["git", "init", "-q", str(root)], check=True)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        py_lines = sum(p.read_text().count("\n") for p in root.rglob("*.py"))
        print(
            f"corpus: {args.files} files {counts}, {size / 1e6:.1f} MB, {py_lines / counts['py']:.0f} lines/.py "
            f"({py_lines} Python lines, {args.corpus}), discovery={'git' if args.git else 'walk'}, cores={cores}, "
            f"python {sys.version.split()[0]}, load average before: {os.getloadavg()[0]:.1f}"
        )
        cases = [("in-process", 1, "fork")] + [
            (f"pool x{cores} {method}", cores, method) for method in args.methods.split(",")
        ]
        print(
            f"{'mode':<22}{'wall s':>8}{'files/s':>9}{'cpu s':>8}{'discover s':>12}{'process s':>11}"
            f"   (median of {args.repeat}, fresh interpreter each)"
        )
        for label, jobs, method in cases:
            runs = [run_case(root, jobs, method) for _ in range(args.repeat)]

            def median(key: str, runs: list[dict[str, float]] = runs) -> float:
                return statistics.median(r[key] for r in runs)

            print(
                f"{label:<22}{median('check_s'):>8.2f}{runs[0]['files'] / median('check_s'):>9.0f}"
                f"{median('cpu_s'):>8.2f}{median('discover_s'):>12.3f}{median('process_s'):>11.2f}"
                f"   findings={runs[0]['findings']:.0f}"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
