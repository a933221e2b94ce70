"""A small reader of IMAP response data, for tests: bytes → Python values.

NIL → None, numbers → int, quoted strings and literals → bytes, atoms → str,
parenthesised lists → list. Used to compare our encoder's output with
Dovecot's answers structurally.
"""

from __future__ import annotations

import re

_ATOM = re.compile(rb"[^\s()\"{}\[]+(?:\[[^\]]*\](?:<[0-9]+>)?)?")


def parse_values(data: bytes) -> list:
    values, pos = _parse_seq(data, 0, top=True)
    if pos != len(data):
        raise ValueError(f"trailing data at {pos}: {data[pos:pos + 40]!r}")
    return values


def _parse_seq(data: bytes, pos: int, top: bool) -> tuple[list, int]:
    out: list = []
    while pos < len(data):
        c = data[pos:pos + 1]
        if c == b" ":
            pos += 1
        elif c == b")":
            if top:
                raise ValueError("unbalanced )")
            return out, pos + 1
        elif c == b"(":
            value, pos = _parse_seq(data, pos + 1, top=False)
            out.append(value)
        elif c == b'"':
            buf = bytearray()
            pos += 1
            while data[pos:pos + 1] != b'"':
                if data[pos:pos + 1] == b"\\":
                    pos += 1
                buf += data[pos:pos + 1]
                pos += 1
                if pos >= len(data):
                    raise ValueError("unterminated quoted string")
            out.append(bytes(buf))
            pos += 1
        elif c == b"{":
            end = data.index(b"}", pos)
            size = int(data[pos + 1:end].rstrip(b"+"))
            start = end + 1
            if data[start:start + 2] != b"\r\n":
                raise ValueError("literal without CRLF")
            out.append(data[start + 2:start + 2 + size])
            pos = start + 2 + size
        else:
            found = _ATOM.match(data, pos)
            if not found:
                raise ValueError(f"bad data at {pos}: {data[pos:pos + 40]!r}")
            word = found.group().decode("utf-8", "surrogateescape")
            out.append(None if word == "NIL" else int(word) if word.isdigit() else word)
            pos = found.end()
    if not top:
        raise ValueError("unterminated list")
    return out, pos


def fetch_items(response: bytes) -> tuple[int, dict]:
    """``* 3 FETCH (A x B y)`` (with or without ``* ``) → (3, {"A": x, "B": y})."""
    if response.startswith(b"* "):
        response = response[2:]
    response = response.rstrip(b"\r\n")
    values = parse_values(response)
    if len(values) == 2:                  # imaplib drops the word FETCH
        values.insert(1, "FETCH")
    number, word, items = values
    assert word == "FETCH", values
    return number, dict(zip(items[0::2], items[1::2]))


def from_imaplib(data: list) -> list[bytes]:
    """imaplib's fetch() result (tuples split at literals) back into whole responses."""
    responses: list[bytes] = []
    current = b""
    for piece in data:
        if isinstance(piece, tuple):
            current += piece[0] + b"\r\n" + piece[1]
        else:
            current += piece
            responses.append(current)
            current = b""
    return responses
