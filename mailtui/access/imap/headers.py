"""Header blocks as bytes: where the header ends, its fields, their values.

IMAP needs exact bytes (``BODY[HEADER]`` includes the blank line, and
``HEADER.FIELDS`` returns the original lines, folds and all), which the
``email`` package does not keep, so the header block is split here. The
``email`` package decodes what we find: RFC 2047 encoded-words for SEARCH.
"""

from __future__ import annotations

import email.errors
import email.header
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

_HEADER_END = re.compile(rb"(?:\A|\n)\r?\n")
MAX_HEADER_READ = 1 << 20     # read_header() gives up on a "header" longer than this


def header_length(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Length of the header block at ``data[start:end]``, blank line included.

    With no blank line the whole range is header, as Dovecot treats it.
    """
    stop = len(data) if end is None else end
    for empty in (b"\r\n", b"\n"):                 # no header at all, just the blank line
        if data.startswith(empty, start) and start + len(empty) <= stop:
            return len(empty)
    found = _HEADER_END.search(data, start, stop)
    return (found.end() - start) if found else (stop - start)


def read_header(stream: BinaryIO, limit: int = MAX_HEADER_READ) -> bytes:
    """Read a message's header block (with its blank line) from a binary file.

    The store uses this to answer ENVELOPE or ``BODY[HEADER]`` without reading
    the body; reading stops at ``limit`` octets.
    """
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        line = stream.readline(limit - total)
        if not line:
            break
        chunks.append(line)
        total += len(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Field:
    """One header field: its name and its original lines (CRLF and folds kept)."""

    name: bytes
    lines: bytes

    @property
    def key(self) -> bytes:
        """Lower-cased name, for case-insensitive lookup."""
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """The unfolded value, trimmed of surrounding white space."""
        raw = self.lines.split(b":", 1)[1]
        return raw.replace(b"\r\n", b"").replace(b"\n", b"").strip(b" \t\r")


def split_fields(header: bytes) -> list[Field]:
    """Split a header block into fields; lines that are not fields are dropped."""
    fields: list[Field] = []
    current: list[bytes] = []

    def close() -> None:
        if current:
            first = current[0]
            colon = first.find(b":")
            if colon > 0:
                fields.append(Field(first[:colon].rstrip(b" \t"), b"".join(current)))
            current.clear()

    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        close()
        current.append(line)
    close()
    return fields


class Headers:
    """The fields of one header block, looked up by case-insensitive name."""

    def __init__(self, block: bytes):
        self.block = block
        self.fields = split_fields(block)

    def first(self, name: str) -> bytes | None:
        """Unfolded value of the first field called ``name``, or None."""
        key = name.lower().encode("ascii")
        for field in self.fields:
            if field.key == key:
                return field.value
        return None

    def last(self, name: str) -> bytes | None:
        """Unfolded value of the last field called ``name`` (what ENVELOPE reports), or None."""
        key = name.lower().encode("ascii")
        for field in reversed(self.fields):
            if field.key == key:
                return field.value
        return None

    def all(self, name: str) -> list[bytes]:
        key = name.lower().encode("ascii")
        return [field.value for field in self.fields if field.key == key]

    def select(self, names: Iterable[str], exclude: bool = False) -> bytes:
        """The ``HEADER.FIELDS`` (or ``.NOT``) subset, original lines plus a blank line."""
        keys = {name.lower().encode("ascii", "replace") for name in names}
        kept = [field.lines for field in self.fields if (field.key in keys) != exclude]
        text = b"".join(line if line.endswith(b"\n") else line + b"\r\n" for line in kept)
        # HEADER.FIELDS always ends with a blank line; HEADER.FIELDS.NOT keeps the
        # block's own ending, so a header with no blank line gets none (as Dovecot does).
        if exclude and not self.block.endswith((b"\r\n\r\n", b"\n\n")) and self.block not in (b"\r\n", b"\n"):
            return text
        return text + b"\r\n"


def decode_text(value: bytes) -> str:
    """A header value as text: encoded-words decoded, raw 8-bit read as UTF-8.

    Never raises; undecodable pieces are kept as they are.
    """
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        pieces = email.header.decode_header(text)
        return str(email.header.make_header(pieces))
    except (ValueError, LookupError, UnicodeError, AssertionError, email.errors.HeaderParseError):
        return text
