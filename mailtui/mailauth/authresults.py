"""The Authentication-Results header (RFC 8601): writing ours, removing forged ones.

A receiver adds one ``Authentication-Results: <authserv-id>; ...`` field and
must first delete any that claim to be its own (RFC 8601 section 5): a
message from outside could otherwise arrive already "passed" by us. Other
hosts' fields are left alone, byte for byte, like the rest of the message.
"""

from __future__ import annotations

import re
from typing import Iterable

from ..wire import printable
from .fields import split_fields

NAME = b"authentication-results"
_LOCAL_AT_DOMAIN = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@[A-Za-z0-9.-]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+$")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def quote_value(text: str) -> str:
    """``text`` as an RFC 8601 ``pvalue``: bare when it may be, else a quoted-string."""
    text = printable(text)
    if _TOKEN.match(text) or _LOCAL_AT_DOMAIN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(text: str) -> str:
    """``text`` as an RFC 5322 comment, its parentheses and backslashes escaped."""
    text = printable(text)[:200]
    return "(" + re.sub(r"([()\\])", r"\\\1", text) + ")"


def render(authserv_id: str, results: Iterable[str]) -> bytes:
    """The whole field, one result per line: ``Authentication-Results: id;\\r\\n\\tspf=...``."""
    body = ";\r\n\t".join([authserv_id, *results])
    return b"Authentication-Results: " + body.encode("utf-8") + b"\r\n"


def authserv_id(value: bytes) -> str:
    """The authserv-id an Authentication-Results value starts with (comments skipped), lower-cased."""
    text = value.decode("utf-8", "replace")
    i, depth = 0, 0
    while i < len(text):                      # [CFWS] before the id
        char = text[i]
        if char == "\\" and depth:
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and not char.isspace():
            break
        i += 1
    rest = text[i:]
    if rest.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', rest, re.DOTALL)
        ident = re.sub(r"\\(.)", r"\1", match.group(1)) if match else rest[1:]
    else:
        ident = re.split(r"[\s;(]", rest, maxsplit=1)[0]
    return ident.strip().rstrip(".").lower()


def strip_ours(message: bytes, authserv: str) -> bytes:
    """``message`` without the Authentication-Results fields that claim ``authserv`` as their id."""
    ours = authserv.strip().rstrip(".").lower()
    end = _HEADER_END.search(message)
    if end is None:
        head_end = len(message)
    else:                                     # the last field keeps its line ending
        head_end = end.start() + (2 if message[end.start():end.start() + 1] == b"\r" else 1)
    head = message[:head_end]
    if NAME not in head.lower():
        return message
    fields = split_fields(head)
    kept = [field for field in fields if not _claims(field, ours)]
    if len(kept) == len(fields):
        return message
    return b"".join(kept) + message[head_end:]


def _claims(field: bytes, ours: str) -> bool:
    name, colon, value = field.partition(b":")
    return bool(colon) and name.strip().lower() == NAME and authserv_id(value) == ours
