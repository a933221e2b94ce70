"""The event codec: every event crosses the wire and comes back equal; what a reader cannot rebuild is skipped."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from mailtui import events as ev
from mailtui.eventcodec import decode, encode, event_types, from_dict, to_dict

SAMPLES = {str: "x\u00e9\x00", int: 7, float: 1.25, bool: True}


def sample(cls: type[ev.Event]) -> ev.Event:
    """An instance of ``cls`` with every field set to a non-default value of its type."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        values[f.name] = ("a@example.test", "b@example.test") if typing.get_origin(hint) is tuple \
            else SAMPLES[hint]
    return cls(**values)


def test_every_event_class_is_on_the_wire():
    names = set(event_types())
    defined = {name for name, obj in vars(ev).items() if isinstance(obj, type) and issubclass(obj, ev.Event)}
    assert names == defined
    assert {"ConnectionOpened", "MessageAccepted", "DnsLookup", "QueueChanged", "Notice"} <= names


@pytest.mark.parametrize("name", sorted(event_types()))
def test_every_event_comes_back_equal(name):
    event = sample(event_types()[name])
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1     # one line, whatever the text holds
    assert json.loads(line)["type"] == name
    back = decode(line)
    assert back == event and type(back) is type(event)


def test_a_reader_skips_what_it_cannot_rebuild():
    assert decode(b'{"type": "SomethingNewer", "at": 1.0}') is None
    assert decode(b"not json") is None
    assert decode(b"[1, 2]") is None
    assert from_dict({"no": "type"}) is None
    assert from_dict({"type": "Notice", "at": 1.0, "level": "info"}) is None   # a required field is missing


def test_a_reader_ignores_fields_it_does_not_know():
    data = to_dict(ev.Notice(level="info", text="hello", at=5.0)) | {"added_later": [1, 2]}
    assert from_dict(data) == ev.Notice(level="info", text="hello", at=5.0)


def test_subclasses_made_elsewhere_are_not_on_the_wire():
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class LocalMarker(ev.Event):
        pass

    assert "LocalMarker" not in event_types()
    assert decode(encode(LocalMarker())) is None
