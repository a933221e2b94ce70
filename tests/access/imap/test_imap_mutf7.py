"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtui.access.imap.mutf7 import decode, encode

PAIRS = [
    ("INBOX", "INBOX"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),   # RFC 3501 §5.1.3
    ("☺!", "&Jjo-!"),
    ("&", "&-"),
    ("A&B", "A&-B"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("😀", "&2D3eAA-"),                                                 # a surrogate pair
    ("", ""),
    ("Ж&Ж", "&BBY-&-&BBY-"),
]


@pytest.mark.parametrize("text, wire", PAIRS)
def test_known_pairs(text, wire):
    assert encode(text) == wire
    assert decode(wire) == text
    assert decode(wire.encode("ascii")) == text


@pytest.mark.parametrize("wire", [
    "&", "&Jjo", "&Jjo-&Jjo-",            # unterminated; two shifts that should be one
    "&AGE-",                              # printable ASCII ('a') must not be encoded
    "&Jj-", "&J-",                        # odd octets; a lone sextet
    "&Jjp-",                              # non-zero padding bits
    "&2D0-",                              # unpaired high surrogate
    "&Jj/-", "&Jjo=-",                    # '/' is ',' in modified base64; no padding
    "\x7f", "é", "a\tb",                  # outside printable US-ASCII
])
def test_strict_decoder_rejects(wire):
    with pytest.raises(ValueError):
        decode(wire)


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_round_trip(text):
    wire = encode(text)
    assert wire.isascii()
    assert decode(wire) == text


@given(st.text(max_size=30))
def test_decoder_only_raises_value_error(wire):
    try:
        decode(wire)
    except ValueError:
        pass
