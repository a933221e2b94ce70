"""Evaluating a SEARCH program against one message (RFC 3501 §6.4.4).

The session layer describes each message with a :class:`Candidate`: what the
index knows (number, UID, flags, internal date, size) and a callable that
builds a :class:`MessageView`. The view is only built when a key needs the
message, and the view itself reads only the header block unless a key needs
the body (BODY, TEXT), so ``SEARCH UNSEEN`` never opens a file and ``SEARCH
FROM x`` reads headers only. :func:`needs` tells the session in advance.

Text matching is case-insensitive substring search on decoded text:
RFC 2047 encoded-words in headers, quoted-printable/base64 and the declared
charset in text/* bodies (using the ``email`` package).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from .dates import sent_date
from .headers import Headers, decode_text
from .message import MessageView
from .mime import Part, walk
from .searchkeys import (
    All,
    And,
    Body,
    DateKey,
    HasFlag,
    Header,
    Not,
    Or,
    SearchKey,
    Sequence,
    Size,
    Text,
)

NOTHING, HEADER, FULL = 0, 1, 2     # what a key needs: index data only, headers, whole message


@dataclass
class Candidate:
    """One message as the evaluator sees it."""

    seq: int
    uid: int
    flags: Iterable[str]
    internal_date: dt.datetime
    size: int
    view: Callable[[], MessageView]
    max_seq: int          # what ``*`` means in a sequence set ...
    max_uid: int          # ... and in a UID set

    @cached_property
    def flag_set(self) -> frozenset[str]:
        return frozenset(flag.lower() for flag in self.flags)

    @cached_property
    def message(self) -> MessageView:
        return self.view()

    @cached_property
    def body_text(self) -> str:
        return decoded_body(self.message.root).casefold()


def needs(key: SearchKey) -> int:
    """NOTHING, HEADER or FULL: how much of the message evaluating ``key`` may read."""
    if isinstance(key, (Body, Text)):
        return FULL
    if isinstance(key, Header) or (isinstance(key, DateKey) and key.sent):
        return HEADER
    if isinstance(key, And):
        return max((needs(k) for k in key.keys), default=NOTHING)
    if isinstance(key, Or):
        return max(needs(key.left), needs(key.right))
    if isinstance(key, Not):
        return needs(key.key)
    return NOTHING


def matches(key: SearchKey, msg: Candidate) -> bool:
    """Whether ``msg`` satisfies ``key``. Cheap keys of an AND are tried first."""
    if isinstance(key, And):
        return all(matches(k, msg) for k in sorted(key.keys, key=needs))
    if isinstance(key, Or):
        first, second = sorted((key.left, key.right), key=needs)
        return matches(first, msg) or matches(second, msg)
    if isinstance(key, Not):
        return not matches(key.key, msg)
    return _MATCHERS[type(key)](key, msg)


def _all(key: All, msg: Candidate) -> bool:
    return True


def _flag(key: HasFlag, msg: Candidate) -> bool:
    return key.flag.lower() in msg.flag_set


def _sequence(key: Sequence, msg: Candidate) -> bool:
    if key.uid:
        return key.set.contains(msg.uid, msg.max_uid)
    return key.set.contains(msg.seq, msg.max_seq)


def _size(key: Size, msg: Candidate) -> bool:
    return msg.size > key.size if key.op == "larger" else msg.size < key.size


def _date(key: DateKey, msg: Candidate) -> bool:
    day = None
    if key.sent:
        day = sent_date(msg.message.headers.last("Date"))
    if day is None:                       # no usable Date: header: fall back to the internal date
        day = msg.internal_date.date()
    if key.op == "before":
        return day < key.date
    if key.op == "on":
        return day == key.date
    return day >= key.date


def _header(key: Header, msg: Candidate) -> bool:
    values = msg.message.headers.all(key.field)
    if not key.value:
        return bool(values)              # RFC 3501: empty string matches any such field
    wanted = key.value.casefold()
    return any(wanted in decode_text(value).casefold() for value in values)


def _body(key: Body, msg: Candidate) -> bool:
    return key.value.casefold() in msg.body_text


def _text(key: Text, msg: Candidate) -> bool:
    wanted = key.value.casefold()
    return wanted in header_text(msg.message.headers).casefold() or wanted in msg.body_text


_MATCHERS: dict[type, Callable[..., bool]] = {
    All: _all, HasFlag: _flag, Sequence: _sequence, Size: _size, DateKey: _date,
    Header: _header, Body: _body, Text: _text,
}


def header_text(headers: Headers) -> str:
    """All header fields as decoded ``Name: value`` lines."""
    return "\n".join(field.name.decode("ascii", "replace") + ": " + decode_text(field.value)
                     for field in headers.fields)


def decoded_body(root: Part) -> str:
    """The searchable text of a message body: every text/* part decoded, plus
    the headers of encapsulated messages; other parts are not searched."""
    pieces: list[str] = []
    for part in walk(root):
        if part.message is not None:
            pieces.append(header_text(part.message.headers))
        elif not part.is_multipart and part.mime_type[0] == b"text":
            pieces.append(_decode_part(part))
    return "\n".join(pieces)


def _decode_part(part: Part) -> str:
    """A leaf part's body, transfer-decoded and charset-decoded; never raises."""
    try:
        parsed = email.message_from_bytes(part.header_bytes + part.body_bytes, policy=email.policy.compat32)
        payload = parsed.get_payload(decode=True)
        if not isinstance(payload, bytes):
            payload = part.body_bytes
        charset = parsed.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 -- the email package on hostile input: search the raw bytes
        return part.body_bytes.decode("utf-8", "replace")
