"""Address lists (RFC 5322 §3.4) as IMAP ENVELOPE addresses.

Each address becomes ``(name adl mailbox host)`` as raw bytes. Display names
stay as they are on the wire (encoded-words included: clients decode them),
quoted strings lose their quotes, a comment stands in for a missing display
name, and groups become a start marker ``(NIL NIL "group" NIL)`` and an end
marker ``(NIL NIL NIL NIL)`` (RFC 3501 §7.4.2). Anything unparsable yields
Dovecot's placeholders ``MISSING_MAILBOX`` / ``MISSING_DOMAIN`` rather than an
error: a FETCH must never fail because of a sender's typo.
"""

from __future__ import annotations

from typing import NamedTuple

MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
_SPECIALS = b"()<>@,;:\\\".[]"


class Address(NamedTuple):
    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


GROUP_END = Address(None, None, None, None)


class _Token(NamedTuple):
    kind: str          # "atom", "quoted", "literal", "comment" or the special character itself
    text: bytes


def _read_delimited(data: bytes, i: int, close: int, nests: bool) -> tuple[bytes, int]:
    """Text of a quoted string or comment starting after ``data[i]``; escapes undone."""
    out = bytearray()
    depth = 1
    i += 1
    while i < len(data):
        c = data[i]
        if c == 0x5C and i + 1 < len(data):          # backslash
            out.append(data[i + 1])
            i += 2
            continue
        if nests and c == 0x28:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1
    return bytes(out), i


def tokenize(data: bytes) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(data):
        c = data[i]
        if c in b" \t\r\n" or c < 0x20 or c == 0x7F:
            i += 1
        elif c == 0x22:                              # "
            text, i = _read_delimited(data, i, 0x22, False)
            tokens.append(_Token("quoted", text))
        elif c == 0x28:                              # (
            text, i = _read_delimited(data, i, 0x29, True)
            tokens.append(_Token("comment", text))
        elif c == 0x5B:                              # [
            end = data.find(b"]", i)
            end = len(data) if end < 0 else end + 1
            tokens.append(_Token("literal", data[i:end]))
            i = end
        elif c in _SPECIALS:
            tokens.append(_Token(chr(c), bytes([c])))
            i += 1
        else:
            start = i
            while i < len(data) and data[i] not in _SPECIALS and data[i] > 0x20 and data[i] != 0x7F:
                i += 1
            tokens.append(_Token("atom", data[start:i]))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.comment = b""
        self.i = 0

    def peek(self) -> str | None:
        while self.i < len(self.tokens) and self.tokens[self.i].kind == "comment":
            self.comment = self.comment or self.tokens[self.i].text
            self.i += 1
        return self.tokens[self.i].kind if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def words(self, kinds: tuple[str, ...]) -> list[_Token]:
        found = []
        while self.peek() in kinds:
            found.append(self.take())
        return found

    def skip_to(self, stops: str) -> None:
        while self.peek() is not None and self.peek() not in stops:
            self.i += 1

    def parse(self) -> list[Address]:
        out: list[Address] = []
        while self.peek() is not None:
            if self.peek() == ",":
                self.i += 1
                continue
            start = self.i
            self.comment = b""
            phrase = self.words(("atom", "quoted", "."))
            if phrase and self.peek() == ":":
                self.i += 1
                out.append(Address(None, None, _phrase(phrase), None))
                self.group(out)
                continue
            self.i = start
            out.append(self.mailbox(","))
        return out

    def group(self, out: list[Address]) -> None:
        while self.peek() not in (None, ";"):
            if self.peek() == ",":
                self.i += 1
                continue
            out.append(self.mailbox(",;"))
        if self.peek() == ";":
            self.i += 1
        out.append(GROUP_END)

    def mailbox(self, stops: str) -> Address:
        self.comment = b""
        words = self.words(("atom", "quoted", "."))
        if self.peek() == "<":
            self.i += 1
            adl, local, host = self.angle()
            self.skip_to(stops)
            return _address(_phrase(words) or self.comment or None, adl, local, host)
        local = _joined(words)
        host = b""
        if self.peek() == "@":
            self.i += 1
            host = _joined(self.words(("atom", "literal", ".")))
        self.skip_to(stops)
        return _address(self.comment or None, None, local, host)

    def angle(self) -> tuple[bytes | None, bytes, bytes]:
        adl = None
        if self.peek() == "@":
            route = []
            while self.peek() in ("@", ","):
                mark = self.take().text
                route.append(mark + (_joined(self.words(("atom", "literal", "."))) if mark == b"@" else b""))
            if self.peek() == ":":
                self.i += 1
            adl = b"".join(route) or None
        local = _joined(self.words(("atom", "quoted", ".")))
        host = b""
        if self.peek() == "@":
            self.i += 1
            host = _joined(self.words(("atom", "literal", ".")))
        self.skip_to(">,;")
        if self.peek() == ">":
            self.i += 1
        return adl, local, host


def _phrase(words: list[_Token]) -> bytes:
    """A display name: words joined by single spaces, dots kept tight."""
    out = b""
    for token in words:
        if token.kind == "." or out.endswith(b"."):
            out += token.text
        else:
            out += (b" " if out else b"") + token.text
    return out


def _joined(words: list[_Token]) -> bytes:
    return b"".join(token.text for token in words)


def _address(name: bytes | None, adl: bytes | None, local: bytes, host: bytes) -> Address:
    return Address(name, adl, local or MISSING_MAILBOX, host or MISSING_DOMAIN)


def parse_addresses(value: bytes | None) -> list[Address] | None:
    """An address header's unfolded value as ENVELOPE addresses; None (NIL) when empty."""
    if value is None:
        return None
    tokens = tokenize(value)
    if not tokens:
        return None
    return _Parser(tokens).parse() or None
