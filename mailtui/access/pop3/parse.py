"""POP3 command syntax, pure: one line in, ``(verb, args)`` or the ``-ERR`` reply out.

Whether a command makes sense in the current state is the session's
business (``session.py``); this layer only knows RFC 1939's grammar and the
line limit of RFC 2449, and SASL PLAIN's message format (RFC 4616).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

MAX_COMMAND_LINE = 255      # octets including CRLF (RFC 2449 section 4)
_NUMBER = re.compile(r"[0-9]{1,9}")

# verb -> (minimum args, maximum args, positions of numeric args)
_SYNTAX: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "CAPA": (0, 0, ()), "QUIT": (0, 0, ()), "STLS": (0, 0, ()), "NOOP": (0, 0, ()),
    "RSET": (0, 0, ()), "STAT": (0, 0, ()), "USER": (1, 1, ()), "PASS": (1, 1, ()),
    "AUTH": (0, 2, ()), "LIST": (0, 1, (0,)), "UIDL": (0, 1, (0,)), "RETR": (1, 1, (0,)),
    "DELE": (1, 1, (0,)), "TOP": (2, 2, (0, 1)),
}


class ProtocolError(Exception):
    """A client mistake; ``reply`` is the complete ``-ERR`` line to send."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class Command(NamedTuple):
    verb: str
    args: tuple[str | int, ...]


def parse_command(line: bytes) -> Command:
    """Parse one command line (with or without its CRLF).

    Pure syntax: the verb must be known and the arguments well formed.
    Numeric arguments come back as ``int``. PASS keeps the rest of the line as
    its one argument, because passwords may contain spaces (RFC 1939 section 7).
    """
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    if len(line) + 2 > MAX_COMMAND_LINE:
        raise ProtocolError("-ERR line too long")
    if not line:
        raise ProtocolError("-ERR empty command")
    if any(b < 0x20 or b == 0x7F for b in line):
        raise ProtocolError("-ERR control characters in command")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("-ERR command is not valid UTF-8") from None
    verb, _, rest = text.partition(" ")
    if not (verb.isascii() and verb.isalpha()):
        raise ProtocolError("-ERR unknown command")
    verb = verb.upper()
    syntax = _SYNTAX.get(verb)
    if syntax is None:
        raise ProtocolError("-ERR unknown command")
    if verb == "PASS":
        if not rest:
            raise ProtocolError("-ERR PASS needs a password")
        return Command(verb, (rest,))
    return Command(verb, _arguments(verb, rest, syntax))


def _arguments(verb: str, rest: str, syntax: tuple[int, int, tuple[int, ...]]) -> tuple[str | int, ...]:
    words = [w for w in rest.split(" ") if w]
    low, high, numeric = syntax
    if not low <= len(words) <= high:
        raise ProtocolError(f"-ERR wrong number of arguments for {verb}")
    args: list[str | int] = list(words)
    for pos in numeric:
        if pos < len(words):
            if not _NUMBER.fullmatch(words[pos]):
                raise ProtocolError(f"-ERR invalid number {words[pos][:20]!r}")
            args[pos] = int(words[pos])
    return tuple(args)


def parse_sasl_plain(data: bytes) -> tuple[str, str, bytes]:
    """RFC 4616: base64 of ``authzid NUL authcid NUL password`` -> (authzid, authcid, password)."""
    malformed = ProtocolError("-ERR malformed authentication data")
    try:
        raw = b"" if data == b"=" else base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise malformed from None
    parts = raw.split(b"\0")
    if len(parts) != 3:
        raise malformed
    authzid, authcid, password = parts
    try:
        return authzid.decode("utf-8"), authcid.decode("utf-8"), password
    except UnicodeDecodeError:
        raise malformed from None
