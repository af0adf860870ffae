"""Python syntax checking, as a given CPython minor version's compiler would see the file.

Nothing is imported, executed or written: the source is compiled in memory and the code object dropped.

* Target == running interpreter (the default): one full `compile()`. Besides parser errors this
  catches what CPython only reports while compiling, i.e. what `import` would fail on too
  (`'return' outside function`, `'break' outside loop`, duplicate argument names, `nonlocal` at module
  level, `'await' outside function`).
* Older target: parse with `feature_version` (which gates the grammar that changed since then:
  walrus needs 3.8, `match` 3.10, `except*` 3.11, ...), then compile that tree. `feature_version` is
  best-effort in CPython: not every newer construct is gated (parenthesised context managers, for
  instance, are accepted under any target), so this catches the common cases, not all of them.
* Newer target than the running interpreter: refused (`UnsupportedTargetVersion`) — an older parser
  cannot know a newer grammar.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
import warnings

from .model import ENCODING, PYTHON, SyntaxFinding
from .text import char_col_from_utf8_offset, decode_error_finding, line_col_of_byte

TargetVersion = tuple[int, int]

RUNNING_VERSION: TargetVersion = (sys.version_info.major, sys.version_info.minor)
MIN_TARGET_VERSION: TargetVersion = (3, 4)  # the lowest `feature_version` CPython's ast supports

_VERSION_RE = re.compile(r"^\s*(\d+)\.(\d+)\s*$")
_CODING_RE = re.compile(rb"^[ \t\f]*#.*?coding[:=]")


class UnsupportedTargetVersion(ValueError):
    """A --target-version this interpreter cannot check."""


def parse_target_version(text: str) -> TargetVersion:
    """Parse "3.11" into (3, 11); UnsupportedTargetVersion (a ValueError) otherwise."""
    match = _VERSION_RE.match(text)
    if not match:
        raise UnsupportedTargetVersion(f"malformed Python version {text!r}: expected MAJOR.MINOR, e.g. 3.11")
    return int(match.group(1)), int(match.group(2))


def feature_minor(target_version: TargetVersion | None) -> int | None:
    """The `feature_version` minor to parse with, None for "this interpreter's full grammar".

    Raises UnsupportedTargetVersion for versions this interpreter cannot check."""
    if target_version is None or tuple(target_version) == RUNNING_VERSION:
        return None
    major, minor = target_version
    shown = f"{major}.{minor}"
    running = "{}.{}".format(*RUNNING_VERSION)
    if major != 3:
        raise UnsupportedTargetVersion(
            f"target version {shown} is not supported: only Python 3.x can be checked"
        )
    if (major, minor) > RUNNING_VERSION:
        raise UnsupportedTargetVersion(
            f"target version {shown} is newer than this interpreter (Python {running}) can check: "
            f"run stagecheck under Python {shown} or newer"
        )
    if (major, minor) < MIN_TARGET_VERSION:
        lowest = "{}.{}".format(*MIN_TARGET_VERSION)
        raise UnsupportedTargetVersion(
            f"target version {shown} is older than the lowest supported ({lowest})"
        )
    return minor


def check_python_source(
    source: bytes, path: str, target_version: TargetVersion | None = None
) -> list[SyntaxFinding]:
    """Pure: the syntax (or encoding) error in `source`, as a list of at most one finding."""
    minor = feature_minor(target_version)
    decoded = decode_python_source(source, path)
    if isinstance(decoded, SyntaxFinding):
        return [decoded]
    error = _compile_error(decoded, path, minor)
    return [] if error is None else [error]


def decode_python_source(source: bytes, path: str) -> str | SyntaxFinding:
    """Decode like the interpreter does (PEP 263 cookie, UTF-8 BOM, default UTF-8)."""
    nul = source.find(b"\0")
    if nul >= 0:
        line, col = line_col_of_byte(source, nul)
        return SyntaxFinding(
            path, line, col, "source contains a null byte; Python cannot compile it", ENCODING
        )
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError as exc:  # unknown codec in the cookie, or a cookie contradicting the BOM
        first_two = source.split(b"\n", 2)[:2]
        line = next((i for i, text in enumerate(first_two, 1) if _CODING_RE.match(text)), 1)
        return SyntaxFinding(path, line, 1, str(exc.msg).replace(f" for {path!r}", ""), ENCODING)
    try:
        return source.decode(encoding)
    except UnicodeDecodeError as exc:
        return decode_error_finding(source, exc, path, encoding)


def _compile_error(text: str, path: str, minor: int | None) -> SyntaxFinding | None:
    with warnings.catch_warnings():
        # SyntaxWarning/DeprecationWarning (invalid escapes, `is` with a literal) are not errors,
        # and must not become errors under `-W error` or print to stderr.
        warnings.simplefilter("ignore")
        try:
            if minor is None:
                compile(text, path, "exec", dont_inherit=True)
                return None
            tree = ast.parse(text, path, "exec", feature_version=(3, minor))
        except SyntaxError as exc:
            if minor is None:
                return _classify_full_compile_error(text, path, exc)
            return _finding_from(exc, path)
        try:
            compile(tree, path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return _finding_from(exc, path, text=text)
    return None


def _classify_full_compile_error(text: str, path: str, exc: SyntaxError) -> SyntaxFinding:
    """Parser errors carry character offsets, compiler errors UTF-8 byte offsets: tell them apart by
    parsing alone (only done on the error path, so the happy path stays a single compile)."""
    try:
        compile(text, path, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as parse_exc:
        return _finding_from(parse_exc, path)
    return _finding_from(exc, path, text=text)


def _finding_from(exc: SyntaxError, path: str, *, text: str | None = None) -> SyntaxFinding:
    """`text` given means the error came from the compiler (offset in UTF-8 bytes of the line)."""
    line = exc.lineno if exc.lineno and exc.lineno > 0 else 1
    col = exc.offset if exc.offset and exc.offset > 0 else 1
    if text is not None:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if line <= len(lines):
            col = char_col_from_utf8_offset(lines[line - 1], col)
    return SyntaxFinding(path, line, col, f"{type(exc).__name__}: {exc.msg}", PYTHON)
