"""DMARC, the inbound verdict and its Authentication-Results header, against a real DNS.

The world (tests/authworld.py) is dnsmasq on loopback publishing the test
domains' SPF, DKIM and DMARC records.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from authworld import BAD_IP, GOOD_IP, HOSTNAME, keys_fixture, message, signed, world_fixture  # noqa: F401 (the fixtures)

from mailtui.dns.resolver import Resolver
from mailtui.events import EventBus
from mailtui.mailauth.authresults import authserv_id, strip_ours
from mailtui.mailauth.dmarccheck import DmarcResult, check_dmarc, evaluate, organizational_domain
from mailtui.mailauth.spfcheck import SpfResult
from mailtui.mailauth.verdict import AuthPolicy, check_message, from_domains


@pytest.fixture
def resolver(world):
    return Resolver((world.endpoint,), 1.0, EventBus())


# -- DMARC -----------------------------------------------------------------------------------

def test_organizational_domains():
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.example.com.") == "example.com"
    assert organizational_domain("a.org.test") == "org.test"
    assert organizational_domain("co.uk") == "co.uk"


P = SpfResult("pass", domain="x")
RNG = random.Random(1)


@pytest.mark.parametrize("record, at, from_domain, spf, dkim_domains, result, policy", [
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("pass", domain="example.com"), [], "pass", "none"),
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("pass", domain="bounce.example.com"), [],
     "pass", "none"),                                                           # relaxed SPF alignment
    ("v=DMARC1; p=reject; aspf=s", "example.com", "example.com", SpfResult("pass", domain="bounce.example.com"),
     [], "fail", "reject"),                                                     # strict SPF alignment
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("fail", domain="example.com"),
     ["mail.example.com"], "pass", "none"),                                     # relaxed DKIM alignment
    ("v=DMARC1; p=reject; adkim=s", "example.com", "example.com", SpfResult("fail", domain="example.com"),
     ["mail.example.com"], "fail", "reject"),                                   # strict DKIM alignment
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("pass", domain="example.net"),
     ["example.net"], "fail", "reject"),                                        # passes, but not aligned
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("pass", domain="evil-example.com"), [],
     "fail", "reject"),
    ("v=DMARC1; p=quarantine", "example.com", "example.com", SpfResult("softfail", domain="example.com"), [],
     "fail", "quarantine"),
    ("v=DMARC1; p=none; sp=reject", "example.com", "a.example.com", SpfResult("none", domain="a.example.com"),
     [], "fail", "reject"),                                                     # subdomain policy
    ("v=DMARC1; p=reject; sp=none", "example.com", "a.example.com", SpfResult("none", domain="a.example.com"),
     [], "fail", "none"),
    ("v=DMARC1; p=quarantine", "example.com", "a.example.com", SpfResult("none"), [], "fail", "quarantine"),
    ("v=DMARC1; p=reject; pct=0", "example.com", "example.com", SpfResult("fail", domain="example.com"), [],
     "fail", "quarantine"),                                                     # sampled out: one step down
    ("v=DMARC1; p=quarantine; pct=0", "example.com", "example.com", SpfResult("none"), [], "fail", "none"),
    ("v=DMARC1; p=reject; pct=100; rua=mailto:x@example.com; bogus=1", "example.com", "example.com",
     SpfResult("none"), [], "fail", "reject"),                                  # unknown tags are ignored
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("temperror", domain="example.com"), [],
     "temperror", "none"),                                                      # not a forgery: unknown
    ("v=DMARC1; p=reject", "example.com", "example.com", SpfResult("temperror", domain="example.com"),
     ["example.com"], "pass", "none"),                                          # ... unless DKIM passes
    ("v=DMARC1; p=bogus", "example.com", "example.com", P, [], "permerror", "none"),
    ("v=DMARC1", "example.com", "example.com", P, [], "permerror", "none"),
])
def test_dmarc_evaluation_table(record, at, from_domain, spf, dkim_domains, result, policy):
    from mailtui.mailauth.dkimverify import DkimResult

    dkim_results = [DkimResult("pass", d, "s") for d in dkim_domains]
    res = evaluate(record, at, from_domain, spf, dkim_results, RNG)
    assert (res.result, res.policy) == (result, policy), res


@pytest.mark.parametrize("from_domain, result, policy, found_at", [
    ("reject.test", "fail", "reject", "reject.test"),
    ("a.org.test", "fail", "reject", "org.test"),          # sp= of the organizational domain
    ("org.test", "fail", "none", "org.test"),
    ("nothing.test", "none", "none", ""),
    ("x.slow.test", "temperror", "none", ""),
])
async def test_dmarc_policy_discovery(resolver, from_domain, result, policy, found_at):
    res = await asyncio.wait_for(check_dmarc(from_domain, SpfResult("fail", domain=from_domain), [], resolver), 10)
    assert (res.result, res.policy, res.record_domain) == (result, policy, found_at), res


# -- the verdict and its header -----------------------------------------------------------------

def ar_of(verdict) -> str:
    return verdict.headers(HOSTNAME).decode().replace("\r\n\t", " ")


async def verdict_for(resolver, ip, mail_from, raw, helo="client.test", **policy):
    return await asyncio.wait_for(
        check_message(ip, helo, mail_from, raw, resolver, AuthPolicy(timeout=3, **policy), rng=random.Random(0)), 15)


@pytest.mark.parametrize("sender, signer, ip", [("alice@signed.test", "signed.test", BAD_IP),
                                                ("alice@reject.test", None, GOOD_IP),
                                                ("alice@a.org.test", "org.test", BAD_IP)])
async def test_a_sender_whose_records_are_cached_is_checked_without_waiting(keys, resolver, sender, signer, ip):
    """The second message: the same verdict, every answer from the cache, and not one turn of the loop given up."""
    raw = signed(keys, signer, sender=sender) if signer else message(sender)
    first = await verdict_for(resolver, ip, sender, raw)
    turns: list = []
    asyncio.get_running_loop().call_soon(turns.append, "the loop ran something else")
    again = await check_message(ip, "client.test", sender, raw, resolver, AuthPolicy(timeout=3),
                                receiver=HOSTNAME, rng=random.Random(0))
    assert turns == []
    assert ar_of(again) == ar_of(first) and again.action == first.action


async def test_verdicts_and_their_authentication_results(keys, resolver):
    v = await verdict_for(resolver, BAD_IP, "alice@signed.test", signed(keys))
    assert v.action == "accept" and v.reply is None
    assert ar_of(v) == ("Authentication-Results: mx.local.test; spf=fail (SPF fail - not authorized) "
                        "smtp.mailfrom=alice@signed.test; dkim=pass header.d=signed.test header.s=mailtui; "
                        "dmarc=pass (p=reject dis=none) header.from=signed.test\r\n")

    v = await verdict_for(resolver, BAD_IP, "alice@reject.test", message("alice@reject.test"))
    assert v.action == "reject" and str(v.reply).startswith("550 5.7.1 ") and "reject.test" in str(v.reply)
    assert "spf=fail" in ar_of(v) and "dkim=none;" in ar_of(v)
    assert "dmarc=fail (p=reject dis=reject) header.from=reject.test" in ar_of(v)

    # The envelope sender a subdomain: aligned under relaxed rules.
    v = await verdict_for(resolver, GOOD_IP, "bounce@sub.reject.test", message("alice@reject.test"))
    assert v.action == "accept" and v.dmarc.result == "pass" and "spf=pass" in ar_of(v)
    # ... but not under strict ones, unless DKIM aligns exactly.
    v = await verdict_for(resolver, GOOD_IP, "bounce@sub.strict.test", message("alice@strict.test"))
    assert v.action == "reject" and v.spf.result == "pass"
    v = await verdict_for(resolver, GOOD_IP, "bounce@sub.strict.test",
                          signed(keys, "strict.test", sender="alice@strict.test"))
    assert v.action == "accept" and v.dmarc.result == "pass"

    v = await verdict_for(resolver, BAD_IP, "a@quarantine.test", message("a@quarantine.test"))
    assert v.action == "quarantine" and v.reply is None
    assert "X-Mailtui-Quarantine: dmarc=fail policy=quarantine header.from=quarantine.test" in ar_of(v)

    v = await verdict_for(resolver, BAD_IP, "a@nonepolicy.test", message("a@nonepolicy.test"))
    assert v.action == "accept" and "dmarc=fail (p=none dis=none)" in ar_of(v)

    v = await verdict_for(resolver, BAD_IP, "a@a.org.test", message("a@a.org.test"))
    assert v.action == "reject" and v.dmarc.record_domain == "org.test"

    v = await verdict_for(resolver, GOOD_IP, "a@nothing.test", message("a@nothing.test"))
    assert ar_of(v) == ("Authentication-Results: mx.local.test; spf=none smtp.mailfrom=a@nothing.test; "
                        "dkim=none; dmarc=none header.from=nothing.test\r\n")


async def test_policy_keys_change_the_action(keys, resolver):
    raw = message("alice@reject.test")
    assert (await verdict_for(resolver, BAD_IP, "a@reject.test", raw, dmarc_reject="quarantine")).action == "quarantine"
    assert (await verdict_for(resolver, BAD_IP, "a@reject.test", raw, dmarc_reject="accept")).action == "accept"
    raw = message("a@quarantine.test")
    assert (await verdict_for(resolver, BAD_IP, "a@quarantine.test", raw, dmarc_quarantine="reject")).action == "reject"


async def test_spf_fail_alone_is_only_recorded(resolver):
    v = await verdict_for(resolver, BAD_IP, "a@fail.test", message("a@fail.test"))
    assert v.spf.result == "fail" and v.action == "accept" and v.dmarc.result == "none"


async def test_several_from_domains_the_strictest_decides(resolver):
    raw = message("a@nothing.test", extra=b"From: b@reject.test\r\n")
    assert from_domains(raw) == ["nothing.test", "reject.test"]
    v = await verdict_for(resolver, BAD_IP, "a@nothing.test", raw)
    assert v.action == "reject" and v.dmarc.domain == "reject.test"


async def test_null_sender_and_no_from(resolver):
    raw = b"Subject: bounce\r\n\r\nbody\r\n"
    v = await verdict_for(resolver, GOOD_IP, "", raw, helo="pass.test")
    assert ar_of(v) == ("Authentication-Results: mx.local.test; spf=pass smtp.helo=pass.test; dkim=none; "
                        "dmarc=none\r\n") and v.action == "accept"


async def test_the_whole_check_has_a_deadline(keys, world):
    from dnsworld import silent_udp_socket

    from mailtui.config import Endpoint
    with silent_udp_socket() as silent:
        dead = Resolver((Endpoint("127.0.0.1", silent.getsockname()[1]),), 30.0)
        started = time.monotonic()
        v = await verdict_for(dead, BAD_IP, "a@reject.test", signed(keys, "reject.test", sender="a@reject.test"))
    assert time.monotonic() - started < 3 + 1          # the policy's 3 s, not more
    assert (v.spf.result, v.dmarc.result, v.action) == ("temperror", "temperror", "accept")
    assert "dkim=temperror" in ar_of(v)


def test_quoting_in_the_header():
    from mailtui.mailauth.dkimverify import DkimResult
    from mailtui.mailauth.verdict import Verdict

    v = Verdict(SpfResult("fail", sender='"odd (one)"@x.test', domain="x.test", reason="not (really) ok\r\nX: y"),
                (DkimResult("fail", "x.test", "s", 'a "quote"'),), DmarcResult("none"))
    text = v.headers("mx.local.test").decode()
    assert text.count("\r\n") == 4 and text.endswith("\r\n")      # one result a line
    assert "\r\nX: y" not in text and "smtp.mailfrom=\"\\\"odd (one)\\\"@x.test\"" in text
    assert "(not \\(really\\) ok??X: y)" in text


# -- removing Authentication-Results that claim to be ours ------------------------------------------

@pytest.mark.parametrize("value, ident", [
    (b" mx.local.test; spf=pass", "mx.local.test"),
    (b" MX.Local.Test.; none", "mx.local.test"),
    (b" (forged (nested) comment) mx.local.test 1; dkim=pass", "mx.local.test"),
    (b' "mx.local.test"; spf=pass', "mx.local.test"),
    (b"\r\n\tmx.local.test;\r\n\tspf=pass", "mx.local.test"),
    (b" other.test; spf=pass", "other.test"),
    (b" mx.local.test.evil.test; spf=pass", "mx.local.test.evil.test"),
    (b"", ""),
    (b" (unclosed comment mx.local.test", ""),
])
def test_authserv_id(value, ident):
    assert authserv_id(value) == ident


def test_forged_results_claiming_our_name_are_removed_and_others_kept():
    raw = (b"Received: from x\r\nAuthentication-Results: mx.local.test; dkim=pass\r\n"
           b"authentication-results :\r\n\t(c) MX.LOCAL.TEST; spf=pass\r\n"
           b"Authentication-Results: other.test; spf=fail\r\nSubject: s\r\n\r\n"
           b"Authentication-Results: mx.local.test; in the body\r\n")
    assert strip_ours(raw, "mx.local.test") == (
        b"Received: from x\r\nAuthentication-Results: other.test; spf=fail\r\nSubject: s\r\n\r\n"
        b"Authentication-Results: mx.local.test; in the body\r\n")
    clean = b"Subject: s\r\n\r\nbody\r\n"
    assert strip_ours(clean, "mx.local.test") is clean
    assert strip_ours(b"Authentication-Results: mx.local.test; x\n\nbody\n", "mx.local.test") == b"\nbody\n"
    assert strip_ours(b"Authentication-Results: mx.local.test; x", "mx.local.test") == b""
