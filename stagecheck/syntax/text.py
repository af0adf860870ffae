"""Pure helpers for positions and decoding shared by every checker."""

from __future__ import annotations

from .model import ENCODING, SyntaxFinding

BINARY_SNIFF_BYTES = 8192

# Byte-order marks other than UTF-8's, which YAML (and only YAML) allows.
_UTF16_32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")


def looks_binary(head: bytes) -> bool:
    """Git's heuristic: a NUL byte in the first 8 KiB means binary."""
    return b"\0" in head[:BINARY_SNIFF_BYTES]


def line_col_of_char(text: str, index: int) -> tuple[int, int]:
    """1-based (line, col) of a character index in `text`."""
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    line_start = text.rfind("\n", 0, index) + 1
    return line, index - line_start + 1


def line_col_of_byte(data: bytes, offset: int, encoding: str = "utf-8") -> tuple[int, int]:
    """1-based (line, col-in-characters) of a byte offset in `data` (lines split on b"\\n")."""
    offset = max(0, min(offset, len(data)))
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    prefix = data[line_start:offset].decode(encoding, errors="replace")
    return line, len(prefix) + 1


def char_col_from_utf8_offset(line_text: str, offset: int) -> int:
    """Convert a 1-based UTF-8 byte offset within one line (what CPython's compiler reports for
    errors found after parsing) into a 1-based character column."""
    if offset <= 1:
        return 1
    prefix = line_text.encode("utf-8", errors="surrogateescape")[: offset - 1]
    return len(prefix.decode("utf-8", errors="ignore")) + 1


def decode_error_finding(data: bytes, exc: UnicodeDecodeError, path: str, codec: str) -> SyntaxFinding:
    """An "encoding" finding at the first undecodable byte (`codec` is the codec that failed)."""
    prefix = data[: exc.start].decode(codec, errors="replace")
    line, col = line_col_of_char(prefix, len(prefix))
    bad = data[exc.start : exc.start + 1].hex()
    name = "utf-8" if codec == "utf-8-sig" else codec
    return SyntaxFinding(path, line, col, f"cannot decode as {name}: byte 0x{bad} ({exc.reason})", ENCODING)


def decode_config_text(data: bytes, path: str, *, allow_utf16_32: bool = False) -> str | SyntaxFinding:
    """Decode a config file as UTF-8 (a UTF-8 BOM is tolerated). YAML may also be UTF-16/32 with a BOM."""
    if allow_utf16_32 and data.startswith(_UTF16_32_BOMS):
        codec = "utf-32" if data[:4] in _UTF16_32_BOMS[:2] else "utf-16"
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            return decode_error_finding(data, exc, path, codec)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return decode_error_finding(data, exc, path, "utf-8-sig")
