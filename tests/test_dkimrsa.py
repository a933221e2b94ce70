"""The fast path of DKIM verification (mailtui.mailauth.dkimrsa) gives dkimpy's verdicts.

Messages signed by dkimpy's signer and by mailtui's, with every
canonicalisation, then changed in the ways mail is changed (or forged): each
time the fast path's result must be the one dkimpy's own verifier gives,
and the fast path must actually be taken where it should.
"""

from __future__ import annotations

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtui.mailauth.dkimkeys import DkimKey
from mailtui.mailauth.dkimrsa import verify_common
from mailtui.mailauth.dkimsign import signature_header
from mailtui.mailauth.dkimverify import MIN_KEY_BITS


def make_key(bits: int) -> tuple[bytes, bytes, DkimKey]:
    """(private PEM, key record, the key as mailtui's signer takes it)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    key = DkimKey("example.net", "s1", private)
    return pem, key.record.encode(), key


PEM, RECORD, KEY = make_key(2048)
_, OTHER_RECORD, _ = make_key(2048)
SMALL_PEM, SMALL_RECORD, _ = make_key(1024)
MESSAGE = (b"From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject:  Hello   there \r\n"
           b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\n"
           b"Hi Bob,  \r\n\r\nsee you\t tomorrow.\r\n\r\n\r\n")


def dkimpy_signed(message: bytes, c: bytes = b"relaxed/relaxed", pem: bytes = PEM, **kw) -> bytes:
    header, _, body = c.partition(b"/")
    return dkim.sign(message, b"s1", b"example.net", pem, canonicalize=(header, body), **kw) + message


def dkimpy_verdict(message: bytes, record: bytes, index: int = 0, min_bits: int = MIN_KEY_BITS) -> str:
    """As mailtui's fallback maps dkimpy's verifier (dkimverify._verify_one)."""
    try:
        verifier = dkim.DKIM(message, minkey=min_bits)
    except dkim.MessageFormatError:
        return "unparsable"
    try:
        ok = verifier.verify(index, dnsfunc=lambda name, timeout=5: record)
    except dkim.ValidationError:
        return "fail"
    except Exception:                 # KeyFormatError, MessageFormatError ...
        return "permerror"
    return "pass" if ok else "fail"


def fast(message: bytes, record: bytes, index: int = 0, min_bits: int = MIN_KEY_BITS) -> str | None:
    try:
        verifier = dkim.DKIM(message, minkey=min_bits)
    except dkim.MessageFormatError:
        return "unparsable"             # dkimverify gives permerror before either verifier runs
    outcome = verify_common(verifier, index, record, min_bits)
    return None if outcome is None else outcome[0]


SIGNED = {c: dkimpy_signed(MESSAGE, c) for c in (b"relaxed/relaxed", b"relaxed/simple", b"simple/simple",
                                                  b"simple/relaxed")}
OURS = signature_header(MESSAGE, KEY) + MESSAGE
CHANGES = {
    "as sent": lambda m: m,
    "body changed": lambda m: m.replace(b"tomorrow", b"today"),
    "body whitespace": lambda m: m.replace(b"see you\t tomorrow", b"see you tomorrow "),
    "trailing empty lines": lambda m: m + b"\r\n\r\n",
    "subject changed": lambda m: m.replace(b"Hello   there", b"Hello here"),
    "header whitespace": lambda m: m.replace(b"Subject:  Hello   there ", b"subject:Hello there"),
    "header folded": lambda m: m.replace(b"To: bob@example.org", b"To:\r\n bob@example.org"),
    "second From": lambda m: m.replace(b"\r\nTo:", b"\r\nFrom: mallory@evil.test\r\nTo:", 1),
    "unsigned field added": lambda m: m.replace(b"\r\nTo:", b"\r\nX-Spam: no\r\nTo:", 1),
    "signature changed": lambda m: m.replace(b" b=", b" b=BBBB", 1),
    "signature not base64": lambda m: m.replace(b" b=", b" b=!!", 1),
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("signed", [*SIGNED, "mailtui"], ids=lambda c: c.decode() if isinstance(c, bytes) else c)
def test_the_fast_path_gives_dkimpys_verdict(signed, change):
    message = CHANGES[change](OURS if signed == "mailtui" else SIGNED[signed])
    expected = dkimpy_verdict(message, RECORD)
    got = fast(message, RECORD)
    assert got in (expected, None)
    if change not in ("signature not base64",):
        assert got == expected                      # taken, and right
    assert fast(message, OTHER_RECORD) in (dkimpy_verdict(message, OTHER_RECORD), None)


def test_a_signature_longer_than_the_key_fails_where_dkimpys_arithmetic_passes():
    """RFC 8017 8.2.2 step 1 (as OpenSSL, and OpenDKIM with it): a signature is exactly as long as the modulus.

    dkimpy turns the signature into a number first, so zero octets in front
    change nothing for it. The only difference between the two; no forgery
    passes either.
    """
    padded = OURS.replace(b" b=", b" b=AAAA", 1)              # three zero octets in front
    assert dkimpy_verdict(padded, RECORD) == "pass"
    assert fast(padded, RECORD) == "fail"


def test_what_the_fast_path_leaves_to_dkimpy():
    assert fast(dkimpy_signed(MESSAGE, length=True), RECORD) is None                         # l=
    assert fast(dkimpy_signed(MESSAGE, signature_algorithm=b"rsa-sha1"), RECORD) is None     # rsa-sha1
    assert fast(dkimpy_signed(MESSAGE), RECORD.replace(b"k=rsa;", b"k=rsa; s=tlsrpt;")) is None
    small = dkimpy_signed(MESSAGE, pem=SMALL_PEM)                # a key below the minimum
    assert fast(small, SMALL_RECORD, min_bits=2048) == dkimpy_verdict(small, SMALL_RECORD, min_bits=2048) \
        == "permerror"
    assert fast(small, SMALL_RECORD) == dkimpy_verdict(small, SMALL_RECORD) == "pass"


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), subject=st.text(max_size=40), cut=st.integers(0, 2000),
       flip=st.integers(0, 255))
def test_any_message_and_any_change_give_dkimpys_verdict(body, subject, cut, flip):
    raw = (b"From: a@example.net\r\nSubject: " + subject.encode("utf-8", "surrogateescape").replace(b"\n", b" ")
           .replace(b"\r", b" ") + b"\r\n\r\n" + body)
    message = signature_header(raw, KEY) + raw
    changed = message[:cut] + bytes([flip]) + message[cut + 1:] if cut < len(message) else message
    for m in (message, changed):
        got = fast(m, RECORD)
        assert got is None or got == dkimpy_verdict(m, RECORD)
    assert fast(message, RECORD) == "pass"
