"""The value of each FETCH item for one message, ready for :func:`response.fetch`.

The session layer calls :func:`fetch_items` with what the store knows (UID,
flags, internal date, size) and a way to build a :class:`MessageView`; the
view is built only if an item needs the message itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Protocol

from .dates import format_date_time
from .fetchspec import FetchAttribute, Section
from .message import MessageView
from .response import Atom, Literal

_HEADER = Section(text="HEADER")
_TEXT = Section(text="TEXT")


class MessageMeta(Protocol):
    """What the mailbox index knows about a message without opening it."""

    uid: int
    flags: Iterable[str]
    internal_date: dt.datetime
    size: int


def fetch_items(attributes: Iterable[FetchAttribute], meta: MessageMeta,
                view: Callable[[], MessageView]) -> list[tuple[str, object]]:
    """``(name, value)`` pairs in request order; ``view`` is called at most once."""
    built: list[MessageView] = []

    def message() -> MessageView:
        if not built:
            built.append(view())
        return built[0]

    return [(attr.response_name(), _value(attr, meta, message)) for attr in attributes]


def _value(attr: FetchAttribute, meta: MessageMeta, message: Callable[[], MessageView]) -> object:
    if attr.section is not None:
        return Literal(message().fetch_section(attr.section, attr.partial))
    name = attr.name
    if name == "UID":
        return meta.uid
    if name == "FLAGS":
        return [Atom(flag) for flag in meta.flags]
    if name == "INTERNALDATE":
        return format_date_time(meta.internal_date).encode("ascii")
    if name == "RFC822.SIZE":
        return meta.size
    if name == "ENVELOPE":
        return message().envelope()
    if name in ("BODY", "BODYSTRUCTURE"):
        return message().body_structure(extended=name == "BODYSTRUCTURE")
    if name == "RFC822":
        return Literal(message().raw)
    if name == "RFC822.HEADER":
        return Literal(message().fetch_section(_HEADER))
    if name == "RFC822.TEXT":
        return Literal(message().fetch_section(_TEXT))
    raise ValueError(f"unknown FETCH item {name}")
