"""Dovecot as an oracle: our ENVELOPE, BODY, BODYSTRUCTURE and sections against its answers.

Both sides are compared as parsed data (``imap_wire.parse_values``), so the
choice between quoted strings and literals, which legitimately differs, does
not matter. What else is normalised, and why:

* BODY and BODYSTRUCTURE: Dovecot sometimes lower-cases the media type,
  subtype and parameters and sometimes keeps the header's case, depending on
  what its cache held when it built the answer (a first FETCH of BODY alone
  gave lower case, of BODYSTRUCTURE the original). Those values are
  case-insensitive (RFC 2045 §5.1); we always keep the header's case, so the
  type, subtype and parameter list of every part are compared case-folded.
  Everything else (sizes, line counts, encodings, ids, dispositions,
  envelopes, section bytes) is compared exactly.

Skipped cleanly when Dovecot is not installed.
"""

from __future__ import annotations

import datetime as dt
import imaplib
from dataclasses import dataclass

import imap_samples
import pytest
from imap_dovecot import dovecot_binary, running_dovecot
from imap_wire import fetch_items, from_imaplib

from mailtui.access.imap.fetchitems import fetch_items as our_fetch_items
from mailtui.access.imap.fetchspec import FetchAttribute, Partial, Section
from mailtui.access.imap.message import MessageView
from mailtui.access.imap.parser import parse_command
from mailtui.access.imap.response import fetch as encode_fetch

pytestmark = pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed")


def _body(spec: Section, partial: Partial | None = None) -> FetchAttribute:
    return FetchAttribute("BODY[]", spec, partial, peek=True)


SECTIONS = [
    Section(), Section(text="HEADER"), Section(text="TEXT"),
    Section(text="HEADER.FIELDS", fields=("SUBJECT", "FROM")),
    Section(text="HEADER.FIELDS", fields=("To", "X-Absent")),
    Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT", "FROM", "DATE")),
    Section((1,)), Section((1,), "MIME"), Section((1,), "HEADER"), Section((1,), "TEXT"),
    Section((2,)), Section((2,), "MIME"), Section((2,), "HEADER"), Section((2,), "TEXT"),
    Section((2,), "HEADER.FIELDS", ("SUBJECT",)),
    Section((2, 1)), Section((2, 1), "MIME"), Section((2, 2)), Section((2, 2), "MIME"),
    Section((1, 1)), Section((3,)), Section((1, 1, 1)), Section((2, 1, 1)), Section((2, 1, 1, 1)),
    Section((1, 1), "MIME"), Section((1, 1), "TEXT"), Section((1, 1), "HEADER"), Section((2, 1), "HEADER"),
    Section((1, 2)),
]
ATTRIBUTES = [FetchAttribute("ENVELOPE"), FetchAttribute("BODYSTRUCTURE"), FetchAttribute("BODY"),
              FetchAttribute("RFC822.SIZE"), FetchAttribute("RFC822.HEADER"),
              *[_body(section) for section in SECTIONS],
              _body(Section(), Partial(0, 10)), _body(Section((1,)), Partial(5, 20)),
              _body(Section(text="TEXT"), Partial(100000, 5))]


@dataclass
class Meta:
    uid: int
    flags: tuple
    internal_date: dt.datetime
    size: int


def _request() -> str:
    names = []
    for attr in ATTRIBUTES:
        if attr.section is None:
            names.append(attr.name)
        else:
            partial = f"<{attr.partial.start}.{attr.partial.count}>" if attr.partial else ""
            names.append(f"BODY.PEEK[{attr.section.spec()}]{partial}")
    return "(" + " ".join(names) + ")"


def _ours(raw: bytes) -> dict:
    meta = Meta(1, (), dt.datetime.now(dt.UTC), len(raw))
    items = our_fetch_items(ATTRIBUTES, meta, lambda: MessageView(raw))
    return fetch_items(encode_fetch(1, items))[1]


def _casefold(value):
    if isinstance(value, bytes):
        return value.lower()
    if isinstance(value, list):
        return [_casefold(item) for item in value]
    return value


def _normalise_body(value):
    """Case-fold type, subtype and parameters of a BODY value (see the module docstring)."""
    if not isinstance(value, list) or not value:
        return value
    if isinstance(value[0], list):                       # multipart: parts..., subtype
        parts = [_normalise_body(item) for item in value if isinstance(item, list)]
        return parts + [_casefold(item) for item in value if not isinstance(item, list)]
    head = [_casefold(item) for item in value[:3]]
    tail = list(value[3:])
    if len(tail) > 5 and isinstance(tail[5], list) and len(tail) > 4 and isinstance(tail[4], list):
        tail[5] = _normalise_body(tail[5])               # message/rfc822: envelope, body, lines
    return head + tail


@pytest.fixture(scope="module")
def dovecot_answers() -> dict[bytes, dict]:
    messages = list(imap_samples.ALL.values())
    with running_dovecot(messages) as server:
        client = server.connect()
        try:
            client.select("INBOX", readonly=True)
            status, data = client.fetch("1:*", _request())
            assert status == "OK", data
        finally:
            try:
                client.logout()
            except imaplib.IMAP4.error:
                pass
    answers = {}
    for response in from_imaplib(data):
        items = fetch_items(response)[1]
        answers[items["BODY[]"]] = items
    assert len(answers) == len(messages)
    return answers


def test_our_parser_reads_the_request_we_sent():
    command = parse_command([b"a FETCH 1:* " + _request().encode("ascii")])
    assert [a.response_name() for a in command.attributes] == [a.response_name() for a in ATTRIBUTES]


@pytest.mark.parametrize("name", list(imap_samples.ALL))
def test_matches_dovecot(name, dovecot_answers):
    raw = imap_samples.ALL[name]
    theirs = dovecot_answers[raw]
    ours = _ours(raw)
    assert set(ours) == set(theirs)
    for key in ("BODY", "BODYSTRUCTURE"):
        theirs[key] = _normalise_body(theirs[key])
        ours[key] = _normalise_body(ours[key])
    for key in theirs:
        assert ours[key] == theirs[key], key
