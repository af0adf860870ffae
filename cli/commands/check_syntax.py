"""`stagecheck check-syntax PATH`: stage 1 (syntax validation) on its own, for pre-commit hooks and CI.

Findings go to stdout (`path:line:col: message`, paths relative to PATH, or JSON with --format json),
a one-line summary to stderr. Exit 0 clean, 1 findings, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stagecheck.syntax import (
    RUNNING_VERSION,
    SyntaxReport,
    UnsupportedTargetVersion,
    check_repository,
    parse_target_version,
)
from stagecheck.syntax.python_check import feature_minor

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
PROG = "stagecheck check-syntax"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Syntax-check a repository: Python, YAML, JSON, TOML and merge-conflict markers. "
        "Honours .gitignore; skips vendored directories; writes no bytecode.",
    )
    parser.add_argument("path", metavar="PATH", help="repository (or any directory) to check")
    parser.add_argument(
        "--target-version",
        metavar="X.Y",
        help="Python version to check the grammar against (default: this interpreter, {}.{})".format(
            *RUNNING_VERSION
        ),
    )
    parser.add_argument(
        "--exclude",
        metavar="GLOB",
        action="append",
        default=[],
        help="skip paths matching this .gitignore-style pattern (repeatable), e.g. 'legacy/' or '*_pb2.py'",
    )
    parser.add_argument("--jobs", metavar="N", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument(
        "--no-cache", action="store_true", help="check every file; neither use nor update the result cache"
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where results are remembered, by content (default: $STAGECHECK_CACHE_DIR, else "
        "$XDG_CACHE_HOME/stagecheck, else ~/.cache/stagecheck; shared by every clone)",
    )
    return parser


def render_json(report: SyntaxReport) -> str:
    return json.dumps(
        {
            "root": report.root,
            "ok": report.ok,
            "files_checked": report.files_checked,
            "skipped": report.skipped,
            "duration_s": round(report.duration_s, 3),
            "from_cache": report.from_cache,
            "findings": [finding.to_dict() for finding in report.findings],
        },
        indent=2,
    )


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage/help
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    root = Path(args.path)
    if not root.exists():
        return _usage_error(f"no such directory: {args.path}")
    if not root.is_dir():
        return _usage_error(f"not a directory: {args.path}")
    if args.jobs is not None and args.jobs < 1:
        return _usage_error("--jobs must be at least 1")
    target = None
    if args.target_version is not None:
        try:
            target = parse_target_version(args.target_version)
            feature_minor(target)
        except UnsupportedTargetVersion as exc:
            return _usage_error(f"--target-version: {exc}")
    try:
        report = check_repository(
            root,
            target_version=target,
            exclude=args.exclude,
            jobs=args.jobs,
            cache=not args.no_cache,
            cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        )
    except OSError as exc:
        return _usage_error(f"cannot read {args.path}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    if args.format == "json":
        print(render_json(report))
    else:
        for finding in report.findings:
            print(finding)
    print(f"{PROG}: {report.summary()}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FINDINGS
