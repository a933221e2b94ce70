"""Property tests (Hypothesis) of the sender-authentication code that reads peer input.

Header sections with Authentication-Results and DKIM-Signature fields of
any shape, MTA-STS policy files and TXT records, DMARC records: each parser
gives a defined answer (a value, a result word, or its own error type) and
never anything else.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailtui.mailauth.authresults import authserv_id, quote_value, strip_ours
from mailtui.mailauth.dkimverify import check_signatures, find_signatures
from mailtui.mailauth.dmarccheck import evaluate
from mailtui.mailauth.spfcheck import SpfResult
from mailtui.mailauth.stspolicy import PolicyError, parse_policy, parse_txt
from mailtui.mailauth.verdict import from_domains

pytestmark = pytest.mark.timeout(120)

HEADER_BITS = st.sampled_from([
    b"Authentication-Results:", b"authentication-results :", b"DKIM-Signature:", b"dkim-signature:", b"From:",
    b" mx.local.test", b"MX.LOCAL.TEST.", b" (c(o)mment)", b'"mx.local.test"', b";", b" ", b"\t", b"\r\n",
    b"\r\n\t", b"\n", b"\r", b"v=1", b"a=rsa-sha256", b"d=x.test", b"s=sel", b"h=from:to", b"b=", b"bh=",
    b"=", b"\xff", b"\x00", b"<a@b.test>", b"@", b",", b"\\", b"(", b")", b"\r\n\r\n", b"body"])
head_bytes = st.lists(HEADER_BITS, max_size=40).map(b"".join)


@given(head_bytes, st.binary(max_size=50))
@settings(max_examples=300, deadline=None)
def test_stripping_our_results_only_ever_removes_whole_fields_of_ours(head, body):
    message = head + b"\r\n\r\n" + body
    out = strip_ours(message, "mx.local.test")
    assert out.endswith(body) and len(out) <= len(message)
    again = strip_ours(out, "mx.local.test")
    assert again == out                                   # nothing of ours is left to remove
    assert isinstance(authserv_id(head), str)


@given(head_bytes)
@example(b" mx.local.test\r\nDKIM-Signature:")   # a leading continuation line once made dkimpy raise IndexError
@settings(max_examples=300, deadline=None)
def test_dkim_signature_fields_of_any_shape_give_a_result_word(head):
    message = head + b"\r\n\r\nbody\r\n"
    signatures = find_signatures(message)
    keys = {s.key_name: b"v=DKIM1; k=rsa; p=" for s in signatures}
    results = check_signatures(message, signatures, keys)
    assert len(results) == len(signatures) <= 5
    assert {r.result for r in results} <= {"pass", "fail", "permerror", "temperror"}


@given(st.text(st.sampled_from(list("versionmodemxmax_agenforcetstig:STSv1 *.-0123456789\n\r\tü")), max_size=200))
@settings(max_examples=300, deadline=None)
def test_policy_files_parse_or_raise_policy_error(text):
    try:
        policy = parse_policy(text, "d.test", "id")
    except PolicyError:
        return
    assert policy.mode in ("enforce", "testing", "none") and 0 <= policy.max_age <= 31_557_600


@given(st.lists(st.binary(max_size=60), max_size=4))
@settings(max_examples=200, deadline=None)
def test_sts_txt_records_give_an_id_or_none(records):
    result = parse_txt(records)
    assert result is None or (result.isalnum() and len(result) <= 32)


@given(st.text(st.sampled_from(list("v=DMARC1;p rejctquaniosd=%0123456789afk\\")), max_size=80),
       st.sampled_from(["none", "pass", "fail", "softfail", "temperror", "permerror", "neutral"]))
@settings(max_examples=300, deadline=None)
def test_dmarc_records_of_any_shape_give_a_result(record, spf_result):
    res = evaluate(record, "example.test", "a.example.test", SpfResult(spf_result, domain="example.test"), [],
                   random.Random(0))
    assert res.result in ("pass", "fail", "permerror") and res.policy in ("none", "quarantine", "reject")


@given(head_bytes)
@settings(max_examples=200, deadline=None)
def test_from_domains_and_quoting(head):
    domains = from_domains(head + b"\r\n\r\n")
    assert len(domains) <= 5 and all(domains)
    for d in domains:
        value = quote_value(d)
        assert "\r" not in value and "\n" not in value
