"""Events on the wire: one JSON object per event, ``{"type": ClassName, ...fields}``.

The control socket streams the core's events to attached consoles with this
codec, and only this one. It knows no event by hand: every dataclass in
:mod:`mailtui.events` is encoded from its fields and rebuilt from them, so a
new event crosses the socket the day it is added. A reader skips what it
cannot rebuild (a type it does not know, a field it misses) instead of
failing, and ignores fields it does not know: an old console keeps working
against a newer server.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from functools import cache
from typing import Any

from . import events as ev


@cache
def event_types() -> dict[str, type[ev.Event]]:
    """Every event class of :mod:`mailtui.events`, by name (subclasses made elsewhere are not on the wire)."""
    return {name: obj for name, obj in vars(ev).items()
            if isinstance(obj, type) and issubclass(obj, ev.Event) and obj.__module__ == ev.__name__}


@cache
def _tuple_fields(cls: type[ev.Event]) -> frozenset[str]:
    """Fields declared as tuples: JSON gives lists back, the frozen events want tuples."""
    hints = typing.get_type_hints(cls)
    return frozenset(f.name for f in dataclasses.fields(cls)
                     if typing.get_origin(hints.get(f.name)) is tuple or hints.get(f.name) is tuple)


@cache
def _field_names(cls: type[ev.Event]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def to_dict(event: ev.Event) -> dict[str, Any]:
    """The event as a JSON-ready dict (``type`` first)."""
    data: dict[str, Any] = {"type": type(event).__name__}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        data[name] = list(value) if isinstance(value, tuple) else value
    return data


def encode(event: ev.Event) -> bytes:
    """One line of the stream."""
    return json.dumps(to_dict(event), separators=(",", ":")).encode() + b"\n"


def from_dict(data: Any) -> ev.Event | None:
    """The event ``data`` describes, or None when this side cannot rebuild it."""
    if not isinstance(data, dict):
        return None
    cls = event_types().get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        return None
    names = _field_names(cls)
    tuples = _tuple_fields(cls)
    kwargs = {k: tuple(v) if k in tuples and isinstance(v, list) else v
              for k, v in data.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError:   # a field this version requires is missing
        return None


def decode(line: bytes | str) -> ev.Event | None:
    """The event on one line of the stream, or None (not JSON, not an event this side knows)."""
    try:
        return from_dict(json.loads(line))
    except ValueError:
        return None
