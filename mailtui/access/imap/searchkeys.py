"""SEARCH programs (RFC 3501 §6.4.4) as a small tree of frozen dataclasses.

:func:`parse_search` reads ``[RETURN (...)] [CHARSET x] key...`` from a
:class:`Reader`; :mod:`search` evaluates the result. NEW and OLD are
rewritten to flag tests, and the UN- keys to negated flag tests, so the
evaluator has fewer cases.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .dates import parse_date
from .errors import ParseError
from .reader import Reader
from .response import Atom, Code
from .sequence import SequenceSet

CHARSETS = ("UTF-8", "US-ASCII")
RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")
MAX_NESTING = 64        # NOT/OR/() levels; deeper programs are refused


class SearchKey:
    """Base class of every search key."""


@dataclass(frozen=True)
class All(SearchKey):
    pass


@dataclass(frozen=True)
class And(SearchKey):
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class Or(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class Not(SearchKey):
    key: SearchKey


@dataclass(frozen=True)
class HasFlag(SearchKey):
    """``\\Seen``-style system flag or a keyword; matching is case-insensitive."""
    flag: str


@dataclass(frozen=True)
class Header(SearchKey):
    """Substring of a header field (FROM, TO, CC, BCC, SUBJECT, HEADER name)."""
    field: str
    value: str


@dataclass(frozen=True)
class Body(SearchKey):
    value: str


@dataclass(frozen=True)
class Text(SearchKey):
    """Substring of the header or the body."""
    value: str


@dataclass(frozen=True)
class DateKey(SearchKey):
    """``sent=False``: internal date (BEFORE/ON/SINCE); ``sent=True``: Date: header (SENT*)."""
    op: str            # "before", "on" or "since"
    date: dt.date
    sent: bool


@dataclass(frozen=True)
class Size(SearchKey):
    op: str            # "larger" or "smaller"
    size: int


@dataclass(frozen=True)
class Sequence(SearchKey):
    """A sequence set of message numbers, or of UIDs when ``uid``."""
    set: SequenceSet
    uid: bool


@dataclass(frozen=True)
class SearchProgram:
    key: SearchKey
    charset: str | None
    return_options: tuple[str, ...] | None     # None: plain SEARCH; () means RETURN () = ALL


_FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
              "FLAGGED": "\\Flagged", "RECENT": "\\Recent", "SEEN": "\\Seen"}
_HEADER_KEYS = ("BCC", "CC", "FROM", "SUBJECT", "TO")
_DATE_KEYS = {"BEFORE": ("before", False), "ON": ("on", False), "SINCE": ("since", False),
              "SENTBEFORE": ("before", True), "SENTON": ("on", True), "SENTSINCE": ("since", True)}
_ARGUMENT_KEYS = {"KEYWORD", "UNKEYWORD", "HEADER", "BODY", "TEXT", "LARGER", "SMALLER", "UID",
                  "NOT", "OR", *_HEADER_KEYS, *_DATE_KEYS}


def parse_search(reader: Reader) -> SearchProgram:
    """The arguments of SEARCH (after ``SEARCH SP``) up to the end of the command."""
    returns = None
    if reader.peek(7).upper() == b"RETURN ":
        reader.keyword()
        reader.sp()
        returns = tuple(reader.list_of(reader.keyword, allow_empty=True))
        if any(option not in RETURN_OPTIONS for option in returns):
            reader.fail("Unknown SEARCH RETURN option")
        reader.sp()
    charset = None
    if reader.peek(8).upper() == b"CHARSET ":
        reader.keyword()
        reader.sp()
        charset = reader.text(reader.astring(), "charset").upper()
        if charset not in CHARSETS:
            raise ParseError("Unsupported charset", reader.tag, "NO",
                             Code.of("BADCHARSET", [Atom(name) for name in CHARSETS]))
        reader.sp()
    parser = _KeyParser(reader)
    keys = [parser.key()]
    while reader.peek() == b" ":
        reader.pos += 1
        keys.append(parser.key())
    reader.end()
    return SearchProgram(keys[0] if len(keys) == 1 else And(tuple(keys)), charset, returns)


class _KeyParser:
    def __init__(self, reader: Reader):
        self.reader = reader
        self.nesting = 0

    def value(self) -> str:
        return self.reader.text(self.reader.astring(allow_8bit=True), "search string")

    def date(self) -> dt.date:
        reader = self.reader
        raw = reader.quoted() if reader.peek() == b'"' else reader.atom().encode("ascii")
        try:
            return parse_date(raw.decode("ascii"))
        except ValueError:
            reader.fail("Invalid date")

    def key(self) -> SearchKey:
        reader = self.reader
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            reader.fail("Search program nested too deeply")
        try:
            first = reader.peek()
            if first == b"(":
                reader.open()
                keys = [self.key()]
                while reader.peek() == b" ":
                    reader.pos += 1
                    keys.append(self.key())
                reader.close()
                return keys[0] if len(keys) == 1 else And(tuple(keys))
            if first.isdigit() or first == b"*":
                return Sequence(reader.sequence_set(), uid=False)
            return self.named(reader.keyword())
        finally:
            self.nesting -= 1

    def named(self, name: str) -> SearchKey:
        reader = self.reader
        if name == "ALL":
            return All()
        if name in _FLAG_KEYS:
            return HasFlag(_FLAG_KEYS[name])
        if name.startswith("UN") and name[2:] in _FLAG_KEYS and name != "UNRECENT":
            return Not(HasFlag(_FLAG_KEYS[name[2:]]))
        if name == "NEW":
            return And((HasFlag("\\Recent"), Not(HasFlag("\\Seen"))))
        if name == "OLD":
            return Not(HasFlag("\\Recent"))
        if name not in _ARGUMENT_KEYS:
            reader.fail(f"Unknown search key {name}")
        reader.sp()
        if name in ("KEYWORD", "UNKEYWORD"):
            flag = HasFlag(reader.atom())
            return flag if name == "KEYWORD" else Not(flag)
        if name in _HEADER_KEYS:
            return Header(name.capitalize() if name != "CC" else "Cc", self.value())
        if name == "HEADER":
            field = reader.text(reader.astring(), "header name")
            reader.sp()
            return Header(field, self.value())
        if name in ("BODY", "TEXT"):
            return (Body if name == "BODY" else Text)(self.value())
        if name in _DATE_KEYS:
            op, sent = _DATE_KEYS[name]
            return DateKey(op, self.date(), sent)
        if name in ("LARGER", "SMALLER"):
            return Size(name.lower(), reader.number())
        if name == "UID":
            return Sequence(reader.sequence_set(), uid=True)
        if name == "NOT":
            return Not(self.key())
        left = self.key()                         # OR
        reader.sp()
        return Or(left, self.key())
