"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).

Printable US-ASCII other than ``&`` stands for itself, ``&`` is ``&-``, and
any other run of characters is UTF-16BE in modified base64 (``,`` for ``/``,
no padding) between ``&`` and ``-``. The decoder is strict: anything a
conforming encoder could not have produced raises ValueError, so one
mailbox never has two names on the wire.
"""

from __future__ import annotations

import base64
import binascii
import re

_B64_CHARS = re.compile(r"[A-Za-z0-9+,]*")


def _printable(char: str) -> bool:
    return 0x20 <= ord(char) <= 0x7E


def encode(name: str) -> str:
    """Unicode mailbox name → modified UTF-7 (pure ASCII)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if _printable(char):
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode(wire: str | bytes) -> str:
    """Modified UTF-7 → Unicode; ValueError on anything malformed."""
    text = wire.decode("ascii") if isinstance(wire, bytes) else wire   # UnicodeDecodeError is a ValueError
    out: list[str] = []
    i = 0
    previous_was_shift = False
    while i < len(text):
        char = text[i]
        if not _printable(char):
            raise ValueError(f"character {ord(char):#x} is not allowed in modified UTF-7")
        if char != "&":
            out.append(char)
            i += 1
            previous_was_shift = False
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-sequence")
        chunk = text[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            if previous_was_shift:
                raise ValueError("two adjacent &-sequences should have been one")
            out.append(_decode_chunk(chunk))
        previous_was_shift = bool(chunk)
        i = end + 1
    return "".join(out)


def _decode_chunk(chunk: str) -> str:
    if not _B64_CHARS.fullmatch(chunk) or len(chunk) % 4 == 1:
        raise ValueError(f"bad modified base64 {chunk!r}")
    padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad modified base64 {chunk!r}") from exc
    if len(raw) % 2:
        raise ValueError("odd number of UTF-16 octets")
    if base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") != chunk:
        raise ValueError(f"non-canonical modified base64 {chunk!r}")   # stray bits in the last character
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise ValueError("unpaired UTF-16 surrogate") from exc
    if any(_printable(char) for char in text):
        raise ValueError("printable ASCII must not be base64-encoded")
    return text
