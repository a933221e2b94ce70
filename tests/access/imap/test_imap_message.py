"""ENVELOPE, BODYSTRUCTURE and sections of stored messages (no Dovecot needed here).

Expected values were checked against Dovecot 2.3 (see test_imap_dovecot_oracle).
"""

from __future__ import annotations

import io

import imap_samples as s
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtui.access.imap.fetchspec import Partial, Section
from mailtui.access.imap.headers import read_header
from mailtui.access.imap.message import MessageView
from mailtui.access.imap.response import encode

NIL = None
FRED = [b"Fred Foobar", NIL, b"foobar", b"Blurdybloop.example"]


def env(raw: bytes) -> list:
    return MessageView(raw).envelope()


def test_envelope_of_a_plain_message():
    assert env(s.PLAIN) == [
        b"Tue, 1 Feb 1994 10:00:00 -0800", b"afternoon meeting", [FRED], [FRED], [FRED],
        [[NIL, NIL, b"mooch", b"owatagu.siam.edu.example"], [b"Terry Gray", NIL, b"gray", b"cac.washington.example"]],
        [[NIL, NIL, b"minutes", b"CNRI.Reston.VA.example"]], NIL,
        b"<earlier@Blurdybloop.example>", b"<B27397-0100000@Blurdybloop.example>"]


def test_envelope_keeps_encoded_words_and_unfolds():
    e = env(s.ENCODED_WORDS)
    assert e[1] == b"=?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?= =?UTF-8?Q?_and_more?="
    assert e[2] == [[b"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", NIL, b"keld", b"example.dk"]]


def test_envelope_eight_bit_headers_go_out_as_literals():
    e = env(s.EIGHT_BIT)
    assert e[1] == "Grüße aus Köln".encode()
    assert e[5] == [["Zoë".encode(), NIL, b"zoe", b"example.de"]]
    assert encode(e[1]) == b"{17}\r\n" + "Grüße aus Köln".encode()


def test_envelope_groups_routes_sender_and_reply_to():
    e = env(s.GROUPS)
    assert e[3] == [[NIL, NIL, b"secretary", b"example.com"]]
    assert e[4] == [[NIL, NIL, b"replies", b"example.com"]]
    assert e[5] == [[NIL, NIL, b"undisclosed-recipients", NIL], [NIL, NIL, NIL, NIL]]
    assert e[6] == [[NIL, NIL, b"Friends", NIL], [NIL, NIL, b"ivan", b"example.com"],
                    [b"Judy, Q.", NIL, b"judy", b"example.com"], [NIL, NIL, NIL, NIL],
                    [NIL, NIL, b"kim", b"example.com"]]
    assert e[7] == [[NIL, b"@route.example,@other.example", b"leo", b"example.com"]]


def test_envelope_missing_and_odd_fields():
    assert env(s.MISSING) == [NIL, b"Only a subject", NIL, NIL, NIL, NIL, NIL, NIL, NIL, NIL]
    e = env(s.ODD_ADDRESSES)
    assert e[2] == [[b"Peggy Comment", NIL, b"peggy", b"example.com"]]
    assert e[5] == [[NIL, NIL, b"john doe", b"example.com"], [NIL, NIL, b"bare-local", b"MISSING_DOMAIN"],
                    [NIL, NIL, b"MISSING_MAILBOX", b"MISSING_DOMAIN"]]
    assert e[8:] == [b"<a@example.com> <b@example.com>", b"not-an-angle-id"]
    odd = env(s.ODD_FIELDS)
    assert odd[1] == b"second subject"                       # the last of two
    assert [a[2] for a in odd[2]] == [b"trent", b"second-from"]   # both From fields
    inner = env(s.SINGLE_INNER.split(b"message/rfc822\r\n\r\n", 1)[1])
    assert inner[1] == b"" and inner[5] is None               # empty Subject: ""; empty To: NIL


def bs(raw: bytes, extended: bool = True) -> list:
    return MessageView(raw).body_structure(extended)


def test_bodystructure_plain_keeps_case_and_counts_lines():
    assert bs(s.PLAIN) == [b"TEXT", b"PLAIN", [b"CHARSET", b"US-ASCII"], NIL, NIL, b"7bit", 69, 2,
                           NIL, NIL, NIL, NIL]
    assert bs(s.PLAIN, extended=False) == [b"TEXT", b"PLAIN", [b"CHARSET", b"US-ASCII"], NIL, NIL, b"7bit", 69, 2]


def test_bodystructure_alternative():
    text = [b"text", b"plain", [b"charset", b"utf-8"], NIL, NIL, b"quoted-printable", 56, 1]
    html = [b"text", b"html", [b"charset", b"utf-8"], NIL, NIL, b"8bit", 22, 1]
    assert bs(s.ALTERNATIVE, extended=False) == [text, html, b"alternative"]
    assert bs(s.ALTERNATIVE) == [text + [NIL] * 4, html + [NIL] * 4, b"alternative",
                                 [b"boundary", b"alt-boundary"], NIL, NIL, NIL]


def test_bodystructure_mixed_with_attachment_extension_data():
    structure = bs(s.MIXED)
    assert structure[0] == [b"text", b"plain", [b"charset", b"us-ascii"], NIL, NIL, b"7bit", 13, 0, NIL, NIL, NIL, NIL]
    assert structure[1] == [b"application", b"pdf", [b"name", b"report.pdf"], b"<part2@example.com>", b"The report",
                            b"base64", 154, b"Q2hlY2sgSW50ZWdyaXR5IQ==",
                            [b"attachment", [b"filename", b"report.pdf", b"size", b"12"]], [b"de"], NIL]
    assert structure[2:] == [b"mixed", [b"boundary", b"XyZ", b"charset", b"us-ascii"], NIL, [b"en", b"fr"],
                             b"http://example.com/report"]


def test_bodystructure_nested_message():
    part = bs(s.NESTED)[1]
    assert part[:7] == [b"message", b"rfc822", NIL, NIL, NIL, b"7bit", 355]
    assert part[7][1] == b"the original"
    assert part[8][2:4] == [b"alternative", [b"boundary", b"inner"]]
    assert part[8][0][6:8] == [14, 0]
    assert part[9:] == [17, NIL, [b"inline", NIL], NIL, NIL]


@pytest.mark.parametrize("raw, expected", [
    (s.NO_BOUNDARY, [[b"text", b"plain", [b"charset", b"us-ascii"], NIL, NIL, b"7bit", 0, 0], b"mixed"]),
    (s.BAD_CONTENT_TYPE, [b"text", b"", [b"charset", b"us-ascii"], NIL, NIL, b"Quoted-Printable", 20, 2]),
    (s.ODD_FIELDS, [b"", b"", NIL, NIL, NIL, b"7bit", 6]),
    (s.HEADER_ONLY, [b"text", b"plain", [b"charset", b"us-ascii"], NIL, NIL, b"7bit", 0, 0]),
    (s.UNTERMINATED, [[b"text", b"plain", [b"charset", b"us-ascii"], NIL, NIL, b"7bit", 5, 0],
                      [b"text", b"plain", [b"format", b"flowed", b"delsp", b"yes", b"charset", b"us-ascii"],
                       NIL, NIL, b"7bit", 22, 1], b"mixed"]),
])
def test_malformed_mime_falls_back(raw, expected):
    assert bs(raw, extended=False) == expected


def test_rfc2231_parameters():
    image = bs(s.PARAMS)[1]
    assert image[2] == [b"name*", b"utf-8''na%C3%AFve.png"]          # extended value passed on
    assert image[8] == [b"inline", [b"filename", b"longname.png"]]   # continuations joined


def test_digest_parts_default_to_message_rfc822():
    first = bs(s.DIGEST, extended=False)[0]
    assert first[:2] == [b"message", b"rfc822"] and first[7][1] == b"first"


def sec(raw: bytes, part=(), text=None, fields=(), partial=None) -> bytes:
    return MessageView(raw).fetch_section(Section(tuple(part), text, tuple(fields)), partial)


def test_whole_header_and_text_sections():
    header, _, body = s.PLAIN.partition(b"\r\n\r\n")
    assert sec(s.PLAIN) == s.PLAIN
    assert sec(s.PLAIN, text="HEADER") == header + b"\r\n\r\n"
    assert sec(s.PLAIN, text="TEXT") == body
    assert sec(s.PLAIN, [1]) == body
    assert sec(s.PLAIN, [1], "MIME") == header + b"\r\n\r\n"
    assert sec(s.PLAIN, [1, 1]) == b"" and sec(s.PLAIN, [2]) == b""


def test_header_fields_keep_original_lines_and_order():
    assert sec(s.PLAIN, text="HEADER.FIELDS", fields=["subject", "FROM"]) == (
        b'From: "Fred Foobar" <foobar@Blurdybloop.example>\r\nSubject: afternoon meeting\r\n\r\n')
    assert sec(s.ENCODED_WORDS, text="HEADER.FIELDS", fields=["Subject"]) == (
        b"Subject: =?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?=\r\n =?UTF-8?Q?_and_more?=\r\n\r\n")
    assert sec(s.PLAIN, text="HEADER.FIELDS", fields=["X-None"]) == b"\r\n"
    kept = sec(s.MISSING, text="HEADER.FIELDS.NOT", fields=["Subject"])
    assert kept == b"X-Mailer: nothing\r\n\r\n"
    assert sec(s.HEADER_ONLY, text="HEADER.FIELDS.NOT", fields=["Subject", "From"]) == b""


def test_multipart_and_nested_sections():
    assert sec(s.MIXED, [1]) == b"See attached."
    assert sec(s.MIXED, [1], "MIME") == b"Content-Type: text/plain\r\n\r\n"
    assert sec(s.MIXED, [2]).startswith(b"JVBERi0") and sec(s.MIXED, [2]).endswith(b"yOMK")
    assert sec(s.MIXED, [2, 1]) == sec(s.MIXED, [2]) and sec(s.MIXED, [2, 1, 1]) == b""
    assert sec(s.MIXED, [1], "HEADER") == b""                          # not a message/rfc822
    embedded = sec(s.NESTED, [2])
    assert embedded.startswith(b"Date: Mon, 28 Feb 2022") and embedded.endswith(b"--inner--\r\n")
    assert sec(s.NESTED, [2], "HEADER").endswith(b"boundary=\"inner\"\r\n\r\n")
    assert sec(s.NESTED, [2], "HEADER.FIELDS", ["Subject"]) == b"Subject: the original\r\n\r\n"
    assert sec(s.NESTED, [2], "TEXT").startswith(b"--inner\r\n")
    assert sec(s.NESTED, [2, 1]) == b"Original text."
    assert sec(s.NESTED, [2, 2], "MIME") == b"Content-Type: text/html\r\n\r\n"
    assert sec(s.MESSAGE_ROOT, [1, 1]) == b"inner body\r\n"
    assert sec(s.MESSAGE_ROOT, [1, 1], "MIME") == b"From: inner@example.com\r\nSubject: inner\r\n\r\n"


@pytest.mark.parametrize("partial, expected", [
    (Partial(0, 4), b"Date"), (Partial(6, 3), b"Tue"), (Partial(len(s.PLAIN) - 2, 10), b"\r\n"),
    (Partial(len(s.PLAIN), 10), b""), (Partial(10 ** 9, 1), b""),
])
def test_partial(partial, expected):
    assert sec(s.PLAIN, partial=partial) == expected


def test_envelope_and_header_sections_read_only_the_header():
    loads = []

    def full() -> bytes:
        loads.append("full")
        return s.NESTED

    view = MessageView(full, load_header=lambda: read_header(io.BytesIO(s.NESTED)))
    assert view.envelope()[1] == b"Fwd: the original"
    assert view.fetch_section(Section(text="HEADER.FIELDS", fields=("To",))) == b"To: frank@example.com\r\n\r\n"
    assert loads == []
    assert view.body_structure()[-4] == [b"boundary", b"outer"]
    assert loads == ["full"]


def test_read_header_stops_at_the_blank_line():
    stream = io.BytesIO(s.PLAIN)
    header = read_header(stream)
    assert header.endswith(b"US-ASCII\r\n\r\n")
    assert stream.read() == s.PLAIN[len(header):]


# -- hostile MIME ----------------------------------------------------------------------
_LINES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: multipart/alternative; boundary=\"c\"",
    b"Content-Type: message/rfc822", b"Content-Type: text/plain; charset=\"x", b"Content-Type: ;;=;",
    b"Content-Transfer-Encoding: base64", b"Content-Disposition: attachment; filename*0*=a; filename*1=b",
    b"--b", b"--b--", b"--c", b"--c--", b"", b" folded", b"From: a@b", b"To: (unclosed <x@y", b"Cc: g: ;;",
    b"Subject: =?utf-8?q?x?=", b"=?x?b?!!?=", b"\xff\xfe", b"body text", b"Content-Language: ,,",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=40), st.sampled_from([b"\r\n", b"\n"]))
def test_random_mime_never_raises(lines, newline):
    raw = newline.join(lines)
    view = MessageView(raw)
    for extended in (True, False):
        encode(view.body_structure(extended))
    encode(view.envelope())
    for path in ((), (1,), (2,), (1, 1), (2, 1), (1, 2, 1)):
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS"):
            if text == "MIME" and not path:
                continue
            assert isinstance(view.fetch_section(Section(path, text, ("From",))), bytes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(raw):
    view = MessageView(raw)
    encode(view.body_structure())
    encode(view.envelope())
    assert view.fetch_section(Section((1,))) is not None


def test_deep_nesting_is_bounded():
    raw = b"".join(b"Content-Type: message/rfc822\r\n\r\n" for _ in range(500)) + b"x"
    encode(MessageView(raw).body_structure())
    parts = b"".join(b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" for _ in range(300))
    encode(MessageView(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts).body_structure())
