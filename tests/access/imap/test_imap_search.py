"""SEARCH evaluation: keys against messages, laziness of the message view."""

from __future__ import annotations

import datetime as dt

import imap_samples as s
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtui.access.imap.message import MessageView
from mailtui.access.imap.parser import parse_command
from mailtui.access.imap.search import FULL, HEADER, NOTHING, Candidate, matches, needs

UTC = dt.UTC
ENCODED_QP = s.crlf("""\
From: =?UTF-8?Q?Ren=C3=A9e?= <renee@example.fr>
To: team@example.fr
Subject: =?UTF-8?B?Q2Fmw6kgZ3LDomNl?=
Date: Sun, 31 Dec 2023 23:30:00 -0500
Content-Type: multipart/mixed; boundary=z

--z
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Le caf=E9 est pr=EAt.
--z
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

w4dhIG1hcmNoZSBiaWVu
--z
Content-Type: application/octet-stream

secret-attachment-word
--z--
""")


def candidate(raw: bytes = ENCODED_QP, seq: int = 3, uid: int = 30, flags=("\\Seen", "$Work"),
              internal=dt.datetime(2024, 1, 2, 8, 0, tzinfo=UTC), loads: list | None = None) -> Candidate:
    def view() -> MessageView:
        if loads is not None:
            loads.append("view")
        return MessageView(raw)
    return Candidate(seq, uid, flags, internal, len(raw), view, max_seq=5, max_uid=50)


def key(text: str):
    return parse_command([b"a SEARCH " + text.encode()]).program.key


@pytest.mark.parametrize("program, expected", [
    ("ALL", True), ("SEEN", True), ("UNSEEN", False), ("seen unseen", False), ("OR UNSEEN SEEN", True),
    ("KEYWORD $work", True), ("UNKEYWORD $Work", False), ("DELETED", False), ("UNDELETED", True),
    ("NEW", False), ("OLD", True), ("RECENT", False),
    ("3", True), ("1:2", False), ("*", False), ("5:*", False), ("2:*", True), ("UID 30", True), ("UID *", False),
    ("UID 31:*", False), ("NOT 3", False), ("(SEEN 3)", True),
    (f"LARGER {len(ENCODED_QP) - 1}", True), (f"LARGER {len(ENCODED_QP)}", False),
    (f"SMALLER {len(ENCODED_QP) + 1}", True), (f"SMALLER {len(ENCODED_QP)}", False),
    ("SINCE 2-Jan-2024", True), ("SINCE 3-Jan-2024", False), ("ON 2-Jan-2024", True),
    ("BEFORE 2-Jan-2024", False), ("BEFORE 3-Jan-2024", True),
    # SENT* use the Date: header's own calendar date, zone ignored: 31-Dec-2023 (it is 1-Jan in UTC).
    ("SENTON 31-Dec-2023", True), ("SENTSINCE 1-Jan-2024", False), ("SENTBEFORE 1-Jan-2024", True),
    ('FROM "renée"', True), ("FROM RENEE@EXAMPLE", True), ('SUBJECT "café grâce"', True),
    ("SUBJECT Q2Fmw6k", False), ("TO team", True), ("CC team", False), ('HEADER Content-Type "MIXED"', True),
    ('HEADER X-Missing ""', False), ('HEADER To ""', True),
    ('BODY "café est prêt"', True), ('BODY "ça marche"', True), ("BODY w4dh", False),
    ("BODY secret-attachment", False), ('TEXT "renée"', True), ('TEXT "prêt"', True), ("TEXT nowhere", False),
])
def test_keys(program, expected):
    assert matches(key(program), candidate()) is expected


def test_sent_dates_fall_back_to_internal_date_without_date_header():
    msg = candidate(s.MISSING, internal=dt.datetime(2020, 5, 5, tzinfo=UTC))
    assert matches(key("SENTON 5-May-2020"), msg)


def test_flag_and_sequence_keys_never_build_the_view():
    loads: list = []
    msg = candidate(loads=loads)
    assert matches(key("OR (SEEN 1:4 UID 1:*) LARGER 10"), msg)
    assert loads == []


def test_cheap_keys_short_circuit_before_body_search():
    loads: list = []
    assert not matches(key("BODY \"café\" UNSEEN"), candidate(loads=loads))
    assert loads == []


@pytest.mark.parametrize("program, level", [
    ("SEEN 1:3 LARGER 4 SINCE 1-Jan-2000", NOTHING), ("FROM x", HEADER), ("NOT SENTON 1-Jan-2000", HEADER),
    ("OR SEEN BODY x", FULL), ("(TEXT y)", FULL),
])
def test_needs(program, level):
    assert needs(key(program)) == level


def test_header_search_loads_only_the_header():
    full_loads = []
    raw = ENCODED_QP

    def full():
        full_loads.append(1)
        return raw
    msg = Candidate(1, 1, (), dt.datetime(2024, 1, 1, tzinfo=UTC), len(raw),
                    lambda: MessageView(full, load_header=lambda: raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n"), 1, 1)
    assert matches(key("FROM renee"), msg)
    assert full_loads == []
    assert matches(key("BODY \"prêt\""), msg)
    assert full_loads == [1]


def test_malformed_bodies_are_searched_without_error():
    for raw in (s.NO_BOUNDARY, s.BAD_CONTENT_TYPE, s.ODD_FIELDS, s.HEADER_ONLY, b"\xff\xfe", b""):
        matches(key("TEXT x"), candidate(raw))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["TEXT a", "BODY b", "FROM c", "SENTON 1-Jan-2000",
                                                 'HEADER Content-Type ""', "OR BODY x NOT TEXT y"]))
def test_random_messages_never_break_the_evaluator(raw, program):
    assert matches(key(program), candidate(raw)) in (True, False)
