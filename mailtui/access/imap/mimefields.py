"""MIME header fields (RFC 2045, 2183, 2231) parsed the way IMAP reports them.

Values keep their case and their raw form, as Dovecot reports them in
BODYSTRUCTURE; only quoting is undone. RFC 2231 continuations
(``name*0``, ``name*1``) are joined; a single extended value (``name*``)
is passed on untouched, since clients decode it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TSPECIALS = b"()<>@,;:\\\"/[]?="


class ContentType(NamedTuple):
    type: bytes
    subtype: bytes
    params: list[tuple[bytes, bytes]]


def _skip_space(data: bytes, i: int) -> int:
    while i < len(data):
        c = data[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:                      # a comment, possibly nested
            depth = 0
            while i < len(data):
                if data[i] == 0x5C:
                    i += 1
                elif data[i] == 0x28:
                    depth += 1
                elif data[i] == 0x29:
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        else:
            break
    return i


def _token(data: bytes, i: int, specials: bytes = _TSPECIALS) -> tuple[bytes, int]:
    start = i
    while i < len(data) and data[i] > 0x20 and data[i] not in specials and data[i] != 0x7F:
        i += 1
    return data[start:i], i


def _value(data: bytes, i: int) -> tuple[bytes, int]:
    if i < len(data) and data[i] == 0x22:
        out = bytearray()
        i += 1
        while i < len(data) and data[i] != 0x22:
            if data[i] == 0x5C and i + 1 < len(data):
                i += 1
            out.append(data[i])
            i += 1
        return bytes(out), i + 1
    # Be lenient like most readers: an unquoted value runs to the next ';'.
    start = i
    while i < len(data) and data[i] != 0x3B:
        i += 1
    return data[start:i].rstrip(b" \t"), i


def parse_params(data: bytes, i: int) -> list[tuple[bytes, bytes]]:
    """``; name=value`` pairs from offset ``i``; broken pairs are skipped."""
    params: list[tuple[bytes, bytes]] = []
    while i < len(data):
        i = _skip_space(data, i)
        if i >= len(data):
            break
        if data[i] != 0x3B:
            nxt = data.find(b";", i)
            if nxt < 0:
                break
            i = nxt
        i = _skip_space(data, i + 1)
        name, i = _token(data, i)
        i = _skip_space(data, i)
        if not name or i >= len(data) or data[i] != 0x3D:
            continue
        value, i = _value(data, _skip_space(data, i + 1))
        params.append((name, value))
    return join_continuations(params)


_SECTION = re.compile(rb"^(.*)\*([0-9]+)(\*?)$", re.DOTALL)


def join_continuations(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Join RFC 2231 ``name*N[*]`` segments into one parameter, in place of the first."""
    pieces: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    order: list[tuple[bytes, bytes] | bytes] = []
    for name, value in params:
        found = _SECTION.match(name)
        if not found:
            order.append((name, value))
            continue
        base = found.group(1)
        if base not in pieces:
            pieces[base] = []
            order.append(base)
        pieces[base].append((int(found.group(2)), bool(found.group(3)), value))
    out: list[tuple[bytes, bytes]] = []
    for item in order:
        if isinstance(item, tuple):
            out.append(item)
            continue
        segments = sorted(pieces[item])
        extended = any(ext for _, ext, _ in segments)
        out.append((item + b"*" if extended else item, b"".join(v for _, _, v in segments)))
    return out


def parse_content_type(value: bytes | None, default: bytes = b"text/plain") -> ContentType:
    """Type, subtype and parameters; no header gives ``default``.

    A header that is present but unreadable gives empty type and subtype, as
    Dovecot reports it, rather than a guess.

    A text type without a charset gains ``charset=us-ascii`` (RFC 2045 §5.2),
    appended after the other parameters as Dovecot does.
    """
    if value is None:
        major, minor = default.split(b"/")
        params: list[tuple[bytes, bytes]] = []
    else:
        i = _skip_space(value, 0)
        major, i = _token(value, i)
        i = _skip_space(value, i)
        minor = b""
        if i < len(value) and value[i] == 0x2F:
            minor, i = _token(value, _skip_space(value, i + 1))
        params = parse_params(value, i)
    if major.lower() == b"text" and not any(name.lower() == b"charset" for name, _ in params):
        params = params + [(b"charset", b"us-ascii")]
    return ContentType(major, minor, params)


def parse_disposition(value: bytes | None) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    if value is None:
        return None
    i = _skip_space(value, 0)
    kind, i = _token(value, i)
    return kind, parse_params(value, i)


def parse_language(value: bytes | None) -> list[bytes] | None:
    if value is None:
        return None
    tags = [tag for tag in re.split(rb"[\s,]+", value) if tag]
    return tags or None
