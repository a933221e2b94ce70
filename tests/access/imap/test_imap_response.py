"""The response encoder: strings, lists, status lines and FETCH items as bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imap_wire import fetch_items, parse_values

from mailtui.access.imap.fetchspec import FetchAttribute, Partial, Section
from mailtui.access.imap.response import (
    Atom,
    Code,
    Literal,
    Raw,
    continuation,
    encode,
    fetch,
    mailbox_name,
    tagged,
    untagged,
    untagged_status,
)


@pytest.mark.parametrize("value, wire", [
    (None, b"NIL"), (0, b"0"), (4294967295, b"4294967295"),
    (b"hello world", b'"hello world"'), ("plain", b'"plain"'), (b"", b'""'),
    (b'say "hi"', b'{8}\r\nsay "hi"'), (b"back\\slash", b"{10}\r\nback\\slash"),
    (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"), ("Grüße", b"{7}\r\nGr\xc3\xbc\xc3\x9fe"),
    (b"x" * 1001, b"{1001}\r\n" + b"x" * 1001), (b"tab\there", b"{8}\r\ntab\there"),
    (Literal(b"abc"), b"{3}\r\nabc"), (Atom("\\Seen"), b"\\Seen"), (Raw(b"(already)"), b"(already)"),
    ([], b"()"), ([None, 1, [b"a", Atom("B")]], b'(NIL 1 ("a" B))'),
])
def test_encode(value, wire):
    assert encode(value) == wire


@pytest.mark.parametrize("value", [True, -1, 1.5, object()])
def test_encode_refuses_what_has_no_wire_form(value):
    with pytest.raises((TypeError, ValueError)):
        encode(value)


def test_status_lines_and_codes():
    assert tagged("a1", "OK", "SELECT completed", Code.of("READ-WRITE")) == b"a1 OK [READ-WRITE] SELECT completed\r\n"
    assert untagged_status("OK", "Predicted", Code.of("UIDNEXT", 4392)) == b"* OK [UIDNEXT 4392] Predicted\r\n"
    assert (untagged_status("OK", "Limited", Code.of("PERMANENTFLAGS", [Atom("\\Deleted"), Atom("\\*")]))
            == b"* OK [PERMANENTFLAGS (\\Deleted \\*)] Limited\r\n")
    assert tagged("a", "OK", "done", Code.of("APPENDUID", 38505, 3955)) == b"a OK [APPENDUID 38505 3955] done\r\n"
    assert tagged("a", "NO", "evil\r\n* OK injected\x00") == b"a NO evil  * OK injected \r\n"
    assert untagged(172, Atom("EXISTS")) == b"* 172 EXISTS\r\n"
    assert untagged(Atom("LIST"), [Atom("\\HasNoChildren")], b"/", mailbox_name("inbox")) == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n')
    assert continuation() == b"+ \r\n"
    assert continuation("idling") == b"+ idling\r\n"


def test_fetch_item_names_and_values():
    header = FetchAttribute("BODY[]", Section((), "HEADER.FIELDS", ("Subject", "x-y")), Partial(0, 5), peek=True)
    assert header.response_name() == "BODY[HEADER.FIELDS (SUBJECT X-Y)]<0>"
    assert FetchAttribute("BODY[]", Section((1, 2), "MIME")).response_name() == "BODY[1.2.MIME]"
    assert FetchAttribute("BODY[]", Section()).response_name() == "BODY[]"
    wire = fetch(12, [("UID", 7), ("FLAGS", [Atom("\\Seen")]), (header.response_name(), Literal(b"Subje"))])
    assert wire == b"* 12 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT X-Y)]<0> {5}\r\nSubje)\r\n"
    assert fetch_items(wire) == (12, {"UID": 7, "FLAGS": ["\\Seen"],
                                      "BODY[HEADER.FIELDS (SUBJECT X-Y)]<0>": b"Subje"})


def test_sets_seen_and_needs():
    assert FetchAttribute("BODY[]", Section()).sets_seen
    assert not FetchAttribute("BODY[]", Section(), peek=True).sets_seen
    assert FetchAttribute("RFC822").sets_seen and not FetchAttribute("RFC822.HEADER").sets_seen
    assert not FetchAttribute("UID").needs_message and not FetchAttribute("FLAGS").needs_message
    assert FetchAttribute("ENVELOPE").needs_message and not FetchAttribute("ENVELOPE").needs_body
    assert not FetchAttribute("BODY[]", Section((), "HEADER")).needs_body
    assert FetchAttribute("BODY[]", Section((1,), "HEADER")).needs_body


_VALUES = st.recursive(
    st.one_of(st.none(), st.integers(0, 2 ** 32 - 1), st.binary(max_size=50)),
    lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@given(_VALUES)
def test_encoded_values_read_back(value):
    assert parse_values(encode(value)) == [value]
