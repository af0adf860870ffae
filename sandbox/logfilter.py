r"""The Cloud Logging query language, as far as Cloud Run users write it: parser, AST, evaluator.

Grammar (the Logging query language / AIP-160 shape; keywords are upper case)::

    filter     = [ "AND" ] expression           # leading AND: what the Python client sends for ""
    expression = sequence { "AND" sequence }
    sequence   = factor { factor }              # juxtaposition is an implicit AND
    factor     = term { "OR" term }             # OR binds tighter than AND, as in Cloud Logging
    term       = ( "NOT" | "-" ) term | "(" expression ")" | restriction
    restriction = field op value | field op "(" value-expression ")" | value   # bare value: global search
    op         = "=" | "!=" | "<" | "<=" | ">" | ">=" | ":" | "=~" | "!~"

So ``a OR NOT b AND NOT c OR d`` means ``(a OR (NOT b)) AND ((NOT c) OR d)``, as documented for Cloud
Logging. Semantics (documented choices, matching Cloud Logging where it is documented):

- String comparisons are case-insensitive ("String comparisons aren't case sensitive"): ``=``/``!=`` compare
  case-folded strings, ``:`` is a case-insensitive substring test, ``<``... compare case-folded strings.
  ``=~`` / ``!~`` are case-sensitive regular-expression searches (Python ``re``).
- Numbers compare numerically when both sides parse as numbers (``httpRequest.status>=500`` and the
  int64-as-string fields such as ``httpRequest.responseSize``); durations (``"0.25s"``) compare numerically.
- ``severity`` compares by rank: DEFAULT < DEBUG < INFO < NOTICE < WARNING < ERROR < CRITICAL < ALERT
  < EMERGENCY (names case-insensitive, or the numbers 0..800); a missing severity is DEFAULT.
- ``timestamp`` / ``receiveTimestamp`` compare as instants; values are RFC3339 (``Z`` or ``+HH:MM``) or the
  Python client's ``%Y-%m-%dT%H:%M:%S.%f+0000`` form; precision is the microsecond.
- ``field:*`` tests presence. A restriction on a missing field is false; ``a != v`` is ``NOT a = v``.
  On a list value a restriction holds if it holds for an element; ``:`` on an object searches its leaves.
- A bare value (``"Traceback"`` or ``Traceback``) matches an entry with any leaf containing it.
- Field names may use the proto (snake_case) spelling: ``http_request.status`` == ``httpRequest.status``.
- Quoted strings take ``\\ \" \' \n \t \r \/ \uXXXX``; any other escape is kept as written, so a regex's
  ``\d`` works inside quotes. Keywords are upper case (a lower-case ``and`` is a search word).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

# ---------------------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True)
class Compare:
    """``field op value``; ``position`` is the value's offset in the filter text."""

    field: tuple[str, ...]
    op: str
    value: str
    quoted: bool
    position: int


@dataclass(frozen=True)
class Search:
    """A bare value: a global restriction over every leaf of the entry."""

    value: str
    position: int


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Compare | Search | Not | And | Or
Entry = dict[str, Any]
Predicate = Callable[[Entry], bool]

SEVERITY_RANK: dict[str, int] = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}

_OPERATORS = ("<=", ">=", "!=", "=~", "!~", "=", "<", ">", ":")  # longest first
_KEYWORDS = ("AND", "OR", "NOT")
_FIELD_STOP = set(" \t\r\n()\"'=<>!:~")
_VALUE_STOP = set(" \t\r\n()")
_TIMESTAMP_FIELDS = {("timestamp",), ("receiveTimestamp",)}


class FilterError(ValueError):
    """A filter that cannot be parsed or typed; ``position`` is a 0-based offset into the text."""

    def __init__(self, text: str, position: int, problem: str) -> None:
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        token = _token_at(text, position)
        where = f"line {line}, column {column}" + (f", token '{token}'" if token else ", at end of filter")
        super().__init__(f"Unparseable filter: {problem} at {where}")
        self.position = position
        self.problem = problem


def _token_at(text: str, position: int) -> str:
    if position >= len(text):
        return ""
    end = position + 1
    while end < len(text) and not text[end].isspace() and end - position < 20:
        end += 1
    return text[position:end]


# ---------------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str, position: int | None = None) -> FilterError:
        return FilterError(self.text, self.pos if position is None else position, problem)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek_keyword(self, keyword: str) -> bool:
        self.skip_ws()
        end = self.pos + len(keyword)
        if not self.text.startswith(keyword, self.pos):
            return False
        return end >= len(self.text) or self.text[end].isspace() or self.text[end] in '()"'

    def take_keyword(self, keyword: str) -> bool:
        if self.peek_keyword(keyword):
            self.pos += len(keyword)
            return True
        return False

    def parse(self) -> Node | None:
        if self.at_end():
            return None
        self.take_keyword("AND")  # google-cloud-logging sends " AND timestamp>=..." for filter_=""
        node = self.expression()
        if not self.at_end():
            if self.text[self.pos] == ")":
                raise self.fail("unbalanced ')'")
            raise self.fail("unexpected token")
        return node

    def expression(self) -> Node:
        parts = [self.sequence()]
        while self.take_keyword("AND"):
            parts.append(self.sequence())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def starts_term(self) -> bool:
        if self.at_end() or self.text[self.pos] == ")":
            return False
        return not (self.peek_keyword("AND") or self.peek_keyword("OR"))

    def sequence(self) -> Node:
        parts = [self.factor()]
        while self.starts_term():
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def factor(self) -> Node:
        parts = [self.term()]
        while self.take_keyword("OR"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def term(self) -> Node:
        if self.at_end():
            raise self.fail("expected a restriction")
        if self.take_keyword("NOT"):
            return Not(self.term())
        char = self.text[self.pos]
        if char == "-" and self.pos + 1 < len(self.text) and not self.text[self.pos + 1].isspace():
            self.pos += 1
            return Not(self.term())
        if char == "(":
            self.pos += 1
            inner = self.expression()
            if self.at_end() or self.text[self.pos] != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return inner
        if char == ")":
            raise self.fail("expected a restriction")
        if self.peek_keyword("AND") or self.peek_keyword("OR"):
            raise self.fail("expected a restriction")
        return self.restriction()

    def restriction(self) -> Node:
        start = self.pos
        if self.text[self.pos] in "\"'":
            value = self.quoted()
            return Search(value, start)
        field = self.field_path()
        end_of_field = self.pos
        self.skip_ws()
        op = next((o for o in _OPERATORS if self.text.startswith(o, self.pos)), None)
        if op is None:  # a bare word: global search for its text
            return Search(self.text[start:end_of_field], start)
        self.pos += len(op)
        self.skip_ws()
        if self.pos < len(self.text) and self.text[self.pos] == "(":
            self.pos += 1
            node = self.value_expression(field, op)
            if self.at_end() or self.text[self.pos] != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return node
        return self.comparison(field, op)

    def comparison(self, field: tuple[str, ...], op: str) -> Compare:
        if self.at_end():
            raise self.fail(f"expected a value after '{op}'")
        position = self.pos
        if self.text[self.pos] in "\"'":
            return Compare(field, op, self.quoted(), True, position)
        while self.pos < len(self.text) and self.text[self.pos] not in _VALUE_STOP:
            self.pos += 1
        if self.pos == position:
            raise self.fail(f"expected a value after '{op}'")
        return Compare(field, op, self.text[position : self.pos], False, position)

    def value_expression(self, field: tuple[str, ...], op: str) -> Node:
        """``field = ("a" OR "b")``: the same precedence rules, over values of one field."""
        groups: list[Node] = []
        while True:
            seq: list[Node] = []
            while True:
                alternatives = [self.comparison(field, op)]
                while self.take_keyword("OR"):
                    alternatives.append(self.comparison(field, op))
                seq.append(alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives)))
                if self.at_end() or self.text[self.pos] == ")" or self.peek_keyword("AND"):
                    break
            groups.append(seq[0] if len(seq) == 1 else And(tuple(seq)))
            if not self.take_keyword("AND"):
                break
        return groups[0] if len(groups) == 1 else And(tuple(groups))

    def field_path(self) -> tuple[str, ...]:
        segments: list[str] = []
        while True:
            if self.pos < len(self.text) and self.text[self.pos] in "\"'":
                segments.append(self.quoted())
            else:
                start = self.pos
                while (
                    self.pos < len(self.text)
                    and self.text[self.pos] not in _FIELD_STOP
                    and self.text[self.pos] != "."
                ):
                    self.pos += 1
                if self.pos == start:
                    raise self.fail("expected a field name or value")
                segments.append(self.text[start : self.pos])
            if self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                continue
            return tuple(segments)

    def quoted(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(out)
            if char == "\\":
                out.append(self.escape())
                continue
            out.append(char)
            self.pos += 1
        raise self.fail("unterminated string", start)

    def escape(self) -> str:
        start = self.pos
        if self.pos + 1 >= len(self.text):
            raise self.fail("unterminated string", start)
        code = self.text[self.pos + 1]
        simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "/": "/"}
        if code in simple:
            self.pos += 2
            return simple[code]
        if code == "u":
            digits = self.text[self.pos + 2 : self.pos + 6]
            if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                self.pos += 6
                return chr(int(digits, 16))
            raise self.fail("invalid \\u escape", start)
        self.pos += 2  # unknown escape (e.g. a regex's \d): kept as written
        return "\\" + code


@lru_cache(maxsize=256)
def parse(text: str) -> Node | None:
    """Parse a filter; ``None`` for an empty filter (matches everything). Raises FilterError."""
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------------
# Values: timestamps, severities, numbers

_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: str) -> datetime | None:
    """An aware UTC datetime for RFC3339-ish text (no zone = UTC), or None if it is not a timestamp."""
    if _is_canonical(value):  # the store's own form: the fast path
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    match = _TS_RE.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micros, tz
        )
    except ValueError:
        return None
    return moment.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """The canonical form the store uses: RFC3339 UTC with microseconds and ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def timestamp_micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _is_canonical(value: str) -> bool:
    return len(value) == 27 and value[-1] == "Z" and value[19] == "."


def severity_rank(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        if name in SEVERITY_RANK:
            return SEVERITY_RANK[name]
        if name.isdigit():
            return int(name)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _duration(value: Any) -> float | None:
    if isinstance(value, str) and value.endswith("s"):
        return _number(value[:-1])
    return None


# ---------------------------------------------------------------------------------------------------
# Field access

_CAMEL_RE = re.compile(r"_([a-z0-9])")


def _camel(name: str) -> str:
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def _canonical_field(field: tuple[str, ...]) -> tuple[str, ...]:
    """Top-level LogEntry fields and httpRequest.* in camelCase (the filter may use proto names)."""
    head = _camel(field[0])
    if head in ("httpRequest", "sourceLocation", "operation") and len(field) > 1:
        return (head, *(_camel(part) for part in field[1:]))
    return (head, *field[1:])


def _resolve(entry: Any, field: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) following dict keys; a key falls back to its camelCase spelling."""
    current = entry
    for part in field:
        if not isinstance(current, dict):
            return False, None
        if part in current:
            current = current[part]
        elif "_" in part and _camel(part) in current:
            current = current[_camel(part)]
        else:
            return False, None
    return True, current


def _any_leaf(value: Any, test: Callable[[str], bool]) -> bool:
    """Whether ``test`` holds for the text of some non-null leaf under ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None and test(item if type(item) is str else _text(item)):
            return True
    return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------------------------------
# Compilation to predicates

ValueTest = Callable[[Any], bool]
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _scalar_test(op: str, literal: str) -> ValueTest:
    """How one (non-list, non-object) field value is compared with the filter's literal."""
    folded = literal.casefold()
    number = _number(literal)
    duration = _duration(literal)
    compare = _ORDER[op]
    if number is None and duration is None and op == "=":  # the common case, kept cheap
        return lambda value: (value.casefold() if type(value) is str else _scalar_text(value)) == folded

    def test(value: Any) -> bool:
        if value is None or isinstance(value, dict | list):
            return False
        if number is not None:
            other = _number(value)
            if other is not None:
                return compare(other, number)
        if duration is not None:
            other = _duration(value)
            if other is not None:
                return compare(other, duration)
        return compare(_text(value).casefold(), folded)

    return test


def _scalar_text(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict | list) else _text(value).casefold()


def _has_test(literal: str) -> ValueTest:
    folded = literal.casefold()

    def test(value: Any) -> bool:
        return _any_leaf(value, lambda leaf: folded in leaf.casefold())

    return test


def _regex_test(node: Compare, text: str) -> ValueTest:
    try:
        pattern = re.compile(node.value)
    except re.error as exc:
        raise FilterError(text, node.position, f"invalid regular expression ({exc})") from None
    return lambda value: _any_leaf(value, lambda leaf: pattern.search(leaf) is not None)


def _any_element(test: ValueTest) -> ValueTest:
    return lambda value: any(test(item) for item in value) if isinstance(value, list) else test(value)


def _severity_predicate(node: Compare, text: str) -> Predicate:
    op = "=" if node.op == "!=" else node.op
    if op == ":":
        has = _has_test(node.value)
        return lambda entry: has(entry.get("severity") or "DEFAULT")
    wanted = severity_rank(node.value)
    if wanted is None or op not in _ORDER:
        problem = (
            f"invalid severity '{node.value}'" if wanted is None else f"operator '{node.op}' on severity"
        )
        raise FilterError(text, node.position, problem)
    compare = _ORDER[op]

    def test(entry: Entry) -> bool:
        rank = severity_rank(entry.get("severity") or "DEFAULT")
        return rank is not None and compare(rank, wanted)

    return test


def _timestamp_predicate(node: Compare, text: str) -> Predicate:
    key = node.field[0]
    op = "=" if node.op == "!=" else node.op
    if op == ":":
        has = _has_test(node.value)
        return lambda entry: key in entry and has(entry[key])
    moment = parse_timestamp(node.value)
    if moment is None or op not in _ORDER:
        problem = (
            f"invalid timestamp '{node.value}'" if moment is None else f"operator '{node.op}' on a timestamp"
        )
        raise FilterError(text, node.position, problem)
    canonical = format_timestamp(moment)
    compare = _ORDER[op]

    def test(entry: Entry) -> bool:
        value = entry.get(key)
        if not isinstance(value, str):
            return False
        if _is_canonical(value):  # fixed-width UTC text orders like the instants it names
            return compare(value, canonical)
        parsed = parse_timestamp(value)
        return parsed is not None and compare(format_timestamp(parsed), canonical)

    return test


def _compare_predicate(node: Compare, text: str) -> Predicate:
    field = _canonical_field(node.field)
    if field == ("severity",):
        base = _severity_predicate(node, text)
    elif field in _TIMESTAMP_FIELDS:
        base = _timestamp_predicate(Compare(field, node.op, node.value, node.quoted, node.position), text)
    else:
        if node.op == ":" and node.value == "*" and not node.quoted:
            return lambda entry: _resolve(entry, field)[0]
        if node.op == ":":
            test = _has_test(node.value)
        elif node.op in ("=~", "!~"):
            test = _regex_test(node, text)
        else:
            test = _any_element(_scalar_test("=" if node.op == "!=" else node.op, node.value))

        def base(entry: Entry) -> bool:
            found, value = _resolve(entry, field)
            return found and test(value)

    if node.op in ("!=", "!~"):
        return lambda entry: not base(entry)
    return base


def _compile(node: Node, text: str) -> Predicate:
    if isinstance(node, Compare):
        return _compare_predicate(node, text)
    if isinstance(node, Search):
        has = _has_test(node.value)
        return lambda entry: has(entry)
    if isinstance(node, Not):
        inner = _compile(node.operand, text)
        return lambda entry: not inner(entry)
    parts = tuple(_compile(operand, text) for operand in node.operands)
    if isinstance(node, And):
        return lambda entry: all(part(entry) for part in parts)
    return lambda entry: any(part(entry) for part in parts)


@lru_cache(maxsize=256)
def compile_filter(text: str) -> Predicate:
    """A predicate over LogEntry dicts (JSON shape). Raises FilterError with the offending position."""
    node = parse(text)
    if node is None:
        return lambda entry: True
    return _compile(node, text)


# ---------------------------------------------------------------------------------------------------
# Query planning helpers (pure): what a top-level conjunction pins down


def conjuncts(node: Node | None) -> list[Node]:
    """The restrictions that every match must satisfy (the flattened top-level AND)."""
    if node is None:
        return []
    if isinstance(node, And):
        return [part for operand in node.operands for part in conjuncts(operand)]
    return [node]


def _equality_value(node: Node, field: tuple[str, ...]) -> str | None:
    if isinstance(node, Compare) and node.op == "=" and _canonical_field(node.field) == field:
        return node.value.casefold()
    return None


def required_values(node: Node | None, field: tuple[str, ...]) -> set[str] | None:
    """The values (case-folded) one of which ``field`` must equal, from a top-level ``field = v`` or
    ``(field = v1 OR field = v2 ...)`` restriction; None when the filter does not pin the field."""
    for part in conjuncts(node):
        single = _equality_value(part, field)
        if single is not None:
            return {single}
        if isinstance(part, Or):
            values = [_equality_value(operand, field) for operand in part.operands]
            if all(value is not None for value in values):
                return {value for value in values if value is not None}
    return None


def time_bounds(node: Node | None) -> tuple[datetime | None, datetime | None]:
    """Inclusive [low, high] instants implied by top-level ``timestamp`` restrictions (a superset)."""
    low: datetime | None = None
    high: datetime | None = None
    for part in conjuncts(node):
        if not (isinstance(part, Compare) and _canonical_field(part.field) == ("timestamp",)):
            continue
        moment = parse_timestamp(part.value)
        if moment is None:
            continue
        if part.op in (">", ">=", "="):
            low = moment if low is None else max(low, moment)
        if part.op in ("<", "<=", "="):
            high = moment if high is None else min(high, moment)
    return low, high
