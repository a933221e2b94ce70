"""Reading the tokens of one command (RFC 3501 §9 formal syntax) from its pieces.

A :class:`Reader` walks ``[line, literal, line, ...]`` as one token stream:
where a line ends in ``{n}``, the next string is the following literal. Every
failure is a :class:`ParseError` carrying the command's tag.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NoReturn

from .errors import ParseError
from .sequence import MAX_NUMBER, SequenceSet

MAX_DEPTH = 16           # parenthesised lists nested deeper than this are refused
_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")
_ASTRING = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")
_LIST_MAILBOX = re.compile(rb"[^\x00-\x20\x7f-\xff(){\"\\]+")
_NUMBER = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_SEQUENCE = re.compile(rb"[0-9*:,]+")
_QUOTED_7BIT = re.compile(rb'"((?:[^"\\\r\n\x80-\xff]|\\["\\])*)"')
_QUOTED_8BIT = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')


class Reader:
    """A cursor over one command's pieces."""

    def __init__(self, pieces: Sequence[bytes], tag: str | None = None):
        if not pieces or len(pieces) % 2 == 0:
            raise ParseError("Command is incomplete", tag)
        self.pieces = pieces
        self.index = 0           # which line (always an even index into pieces)
        self.pos = 0
        self.tag = tag
        self.depth = 0

    # -- position ---------------------------------------------------------
    @property
    def line(self) -> bytes:
        return self.pieces[self.index]

    def fail(self, text: str) -> NoReturn:
        raise ParseError(text, self.tag)

    def peek(self, size: int = 1) -> bytes:
        return self.line[self.pos:self.pos + size]

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.index == len(self.pieces) - 1

    def end(self) -> None:
        """The command must end here."""
        if not self.at_end():
            self.fail("Unexpected extra arguments")

    def sp(self) -> None:
        if self.peek() != b" ":
            self.fail("Expected a space" if not self.at_end() else "Missing arguments")
        self.pos += 1

    def expect(self, token: bytes) -> None:
        if self.peek(len(token)) != token:
            self.fail(f"Expected {token.decode()!r}")
        self.pos += len(token)

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        found = pattern.match(self.line, self.pos)
        if not found or found.end() == self.pos:
            self.fail(f"Expected {what}")
        self.pos = found.end()
        return found.group()

    # -- atoms and numbers --------------------------------------------------
    def atom(self) -> str:
        return self.match(_ATOM, "an atom").decode("ascii")

    def keyword(self) -> str:
        """An atom, upper-cased: command names, search keys, option names."""
        return self.atom().upper()

    def number(self, nonzero: bool = False) -> int:
        digits = self.match(_NUMBER, "a number")
        if len(digits) > 10 or int(digits) > MAX_NUMBER or (nonzero and int(digits) == 0):
            self.fail("Number out of range")
        return int(digits)

    def sequence_set(self) -> SequenceSet:
        raw = self.match(_SEQUENCE, "a sequence set")
        try:
            return SequenceSet.parse(raw)
        except ValueError as exc:
            self.fail(f"Invalid sequence set: {exc}")

    # -- strings ------------------------------------------------------------
    def quoted(self, allow_8bit: bool = False) -> bytes:
        found = (_QUOTED_8BIT if allow_8bit else _QUOTED_7BIT).match(self.line, self.pos)
        if not found:
            self.fail("Invalid quoted string")
        self.pos = found.end()
        return _UNESCAPE.sub(rb"\1", found.group(1))

    def literal(self) -> bytes:
        found = _LITERAL.match(self.line, self.pos)
        if not found:
            self.fail("Invalid literal")
        if self.index + 2 >= len(self.pieces):
            self.fail("Literal data missing")
        data = self.pieces[self.index + 1]
        if len(data) != int(found.group(1)):
            self.fail("Literal size does not match")
        self.index += 2
        self.pos = 0
        return data

    def string(self, allow_8bit: bool = False) -> bytes:
        first = self.peek()
        if first == b'"':
            return self.quoted(allow_8bit)
        if first == b"{":
            return self.literal()
        self.fail("Expected a string")

    def astring(self, allow_8bit: bool = False) -> bytes:
        if self.peek() in (b'"', b"{"):
            return self.string(allow_8bit)
        return self.match(_ASTRING, "a string or atom")

    def nstring(self, allow_8bit: bool = False) -> bytes | None:
        if self.peek(3).upper() == b"NIL" and not _ASTRING.match(self.line, self.pos + 3):
            self.pos += 3
            return None
        return self.string(allow_8bit)

    def text(self, data: bytes, what: str = "string") -> str:
        """Bytes from a string as text: UTF-8, which includes plain ASCII."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"Invalid UTF-8 in {what}")

    def mailbox(self) -> str:
        """A mailbox name as sent (modified UTF-7); INBOX in any case becomes ``INBOX``."""
        name = self.text(self.astring(), "mailbox name")
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """A LIST pattern: like a mailbox name, with ``%`` and ``*`` allowed bare."""
        if self.peek() in (b'"', b"{"):
            return self.text(self.string(), "mailbox pattern")
        return self.match(_LIST_MAILBOX, "a mailbox pattern").decode("ascii")

    # -- lists ----------------------------------------------------------------
    def open(self) -> None:
        self.expect(b"(")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail("Too deeply nested")

    def close(self) -> None:
        self.expect(b")")
        self.depth -= 1

    def list_of(self, item, allow_empty: bool = False) -> list:
        """``(item SP item ...)``, reading each with ``item()``."""
        self.open()
        out = []
        if self.peek() == b")":
            if not allow_empty:
                self.fail("Empty list")
        else:
            out.append(item())
            while self.peek() == b" ":
                self.pos += 1
                out.append(item())
        self.close()
        return out
