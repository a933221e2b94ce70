"""Encoding IMAP data and responses as bytes (RFC 3501 §4 and §7).

Values map to the wire like this: ``None`` → NIL, ``int`` → number,
``bytes``/``str`` → string (quoted when it is short plain ASCII, else a
literal), ``list``/``tuple`` → parenthesised list, :class:`Atom` → sent as
is, :class:`Literal` → always a literal, :class:`Raw` → bytes already encoded.
Nothing here writes to a socket; the I/O layer sends what these return.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CRLF = b"\r\n"
MAX_QUOTED = 1000          # longer strings go as literals; some clients choke on long quoted lines
_QUOTABLE = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_SAFE_TEXT = re.compile(rb"[\x00\r\n]")


class Atom(str):
    """Text sent without quoting: flags, keywords, capability names, ``BODY[1]``."""


class Literal(bytes):
    """Bytes always sent as a ``{n}`` literal (section contents)."""


class Raw(bytes):
    """Bytes already in wire form."""


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def string(data: bytes | str) -> bytes:
    """An IMAP string: quoted if short plain ASCII without ``"`` or ``\\``, else a literal."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) <= MAX_QUOTED and _QUOTABLE.fullmatch(raw):
        return b'"' + raw + b'"'
    return literal(raw)


def encode(value: object) -> bytes:
    """One IMAP value as bytes (see the module docstring for the mapping)."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are unsigned")
        return b"%d" % value
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, Atom):
        return value.encode("ascii")
    if isinstance(value, Literal):
        return literal(bytes(value))
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return string(bytes(value) if not isinstance(value, str) else value)
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(encode(item) for item in value) + b")"
    raise TypeError(f"no IMAP form for {type(value).__name__}")


def encode_all(values: Iterable[object]) -> bytes:
    """Values separated by single spaces, without surrounding parentheses."""
    return b" ".join(encode(value) for value in values)


def _text(text: str | bytes) -> bytes:
    """Human-readable response text, with CR, LF and NUL removed so it cannot end the line."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return _SAFE_TEXT.sub(b" ", raw)


@dataclass(frozen=True)
class Code:
    """A response code such as ``[UIDNEXT 4]`` or ``[BADCHARSET (UTF-8 US-ASCII)]``."""

    name: str
    args: tuple = ()

    @classmethod
    def of(cls, name: str, *args: object) -> Code:
        return cls(name, args)

    def encode(self) -> bytes:
        inner = self.name.encode("ascii")
        if self.args:
            inner += b" " + encode_all(self.args)
        return b"[" + inner + b"]"


def status_line(tag: str, status: str, text: str | bytes = b"", code: Code | None = None) -> bytes:
    """``tag OK [code] text`` with CRLF; ``tag`` is ``*`` for untagged status."""
    parts = [tag.encode("ascii"), status.encode("ascii")]
    if code is not None:
        parts.append(code.encode())
    if text:
        parts.append(_text(text))
    return b" ".join(parts) + CRLF


def tagged(tag: str, status: str, text: str | bytes, code: Code | None = None) -> bytes:
    """The completion of a command: ``a1 OK [READ-WRITE] SELECT completed``."""
    return status_line(tag, status, text, code)


def untagged_status(status: str, text: str | bytes, code: Code | None = None) -> bytes:
    """``* OK``, ``* NO``, ``* BAD``, ``* BYE`` or ``* PREAUTH`` lines."""
    return status_line("*", status, text, code)


def untagged(*items: object) -> bytes:
    """``* <items>`` from values: ``untagged(3, Atom("EXISTS"))`` → ``* 3 EXISTS``."""
    return b"* " + encode_all(items) + CRLF


def continuation(text: str | bytes = b"") -> bytes:
    """The ``+`` line asking for a literal or the next SASL step (``text`` is base64 there)."""
    return b"+ " + _text(text) + CRLF if text else b"+ \r\n"


def fetch(sequence_number: int, items: Sequence[tuple[str, object]]) -> bytes:
    """``* n FETCH (NAME value ...)``; names come from :func:`fetchspec.response_name`."""
    body = b" ".join(name.encode("ascii") + b" " + encode(value) for name, value in items)
    return b"* %d FETCH (" % sequence_number + body + b")" + CRLF


def flags(names: Iterable[str]) -> list[Atom]:
    """A flag list value (``(\\Seen $Forwarded)``) from flag names."""
    return [Atom(name) for name in names]


def mailbox_name(name: str) -> bytes | Atom:
    """A mailbox name for LIST/STATUS: INBOX as an atom, everything else as a string."""
    return Atom("INBOX") if name.upper() == "INBOX" else name.encode("utf-8")
