"""Framing help for the I/O layer: does a line announce a literal, and may it?

A command arrives as lines and literals: ``a1 LOGIN {5}`` CRLF, then 5
octets, then the rest of the line. The I/O layer reads a line, asks
:func:`literal_at_end` (or lets a :class:`CommandAssembler` ask), and then
either sends ``+`` and reads the octets, or refuses before the client sends
them. LITERAL+ (``{5+}``, RFC 7888) literals are not waited for: the client
sends them at once, so a refused one must be read and discarded, or the
connection closed.

The parser receives the result as ``pieces``: ``[line, literal, line, ...,
line]``, lines without their CRLF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ParseError

_TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5e-\x7a\x7c\x7e]+")
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\Z")


@dataclass(frozen=True)
class LiteralInfo:
    """A literal announced at the end of a line."""

    size: int
    synchronising: bool        # False for a LITERAL+ ``{n+}``: the octets are already coming


def literal_at_end(line: bytes) -> LiteralInfo | None:
    """The literal this line (without CRLF) announces, or None.

    Quoted strings are skipped, so ``"{5}"`` is not a literal. A literal
    starts a new token, so the scan can begin at the start of each line.
    """
    found = _LITERAL.search(line)
    if not found or _inside_quotes(line, found.start()):
        return None
    return LiteralInfo(int(found.group(1)), synchronising=not found.group(2))


def _inside_quotes(line: bytes, stop: int) -> bool:
    inside = False
    i = 0
    while i < stop:
        c = line[i]
        if inside and c == 0x5C:
            i += 2
            continue
        if c == 0x22:
            inside = not inside
        i += 1
    return inside


def tag_of(line: bytes) -> str:
    """The tag a reply to this line should carry (``*`` if it has none)."""
    found = _TAG.match(line)
    if found and line[found.end():found.end() + 1] in (b" ", b""):
        return found.group().decode("ascii")
    return "*"


@dataclass(frozen=True)
class Limits:
    """What one command may hold; the session layer chooses the numbers."""

    max_line: int = 64 * 1024             # one line, without CRLF
    max_literal: int = 64 * 1024 * 1024   # one literal (an APPEND message)
    max_literals: int = 64                # literals in one command
    max_total: int = 65 * 1024 * 1024     # all lines and literals of one command


class LiteralRefused(ParseError):
    """A literal over the limits. If ``must_drain`` the client is already sending it
    (LITERAL+): read and drop ``size`` octets, or close the connection."""

    def __init__(self, text: str, tag: str, info: LiteralInfo, status: str = "BAD"):
        super().__init__(text, tag, status)
        self.info = info
        self.must_drain = not info.synchronising


@dataclass
class CommandAssembler:
    """Collects one command's pieces, checking each literal before it is read.

    Loop: ``info = feed_line(line)``; while ``info`` is not None, send ``+``
    if ``info.synchronising``, read ``info.size`` octets, ``feed_literal``
    them, read the next line and ``feed_line`` it. When ``feed_line`` returns
    None, ``pieces`` is the whole command for :func:`parser.parse_command`.
    """

    limits: Limits = field(default_factory=Limits)
    pieces: list[bytes] = field(default_factory=list)
    total: int = 0
    literals: int = 0

    @property
    def tag(self) -> str:
        return tag_of(self.pieces[0]) if self.pieces else "*"

    def feed_line(self, line: bytes) -> LiteralInfo | None:
        if len(self.pieces) % 2:
            raise RuntimeError("a literal was announced; feed_literal() comes first")
        if len(line) > self.limits.max_line:
            raise ParseError("Command line too long", tag_of(line if not self.pieces else self.pieces[0]))
        self.pieces.append(line)
        self.total += len(line)
        info = literal_at_end(line)
        if info is None:
            return None
        self._check(info)
        return info

    def _check(self, info: LiteralInfo) -> None:
        if self.literals + 1 > self.limits.max_literals:
            raise LiteralRefused("Too many literals in one command", self.tag, info)
        if info.size > self.limits.max_literal or self.total + info.size > self.limits.max_total:
            raise LiteralRefused("Literal too large", self.tag, info, status="NO")

    def feed_literal(self, data: bytes) -> None:
        if len(self.pieces) % 2 == 0:
            raise RuntimeError("no literal was announced")
        self.pieces.append(data)
        self.literals += 1
        self.total += len(data)

    def take(self) -> list[bytes]:
        """The finished command's pieces; the assembler is then ready for the next command."""
        pieces = self.pieces
        self.pieces, self.total, self.literals = [], 0, 0
        return pieces
