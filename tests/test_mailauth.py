"""Sender authentication against a real DNS: DKIM signing and verification, SPF, DMARC, the verdict.

A dnsmasq world on loopback publishes the test domains' SPF, DKIM and DMARC
records (tests/dnsworld.py); ``slow.test`` is forwarded to a nameserver that
never answers. Peers are 127.0.0.x addresses given to the checks as strings.
"""

from __future__ import annotations

import asyncio
import random
import time

import dkim
import pytest
from dnsworld import DNSMASQ, DnsWorld

from mailtui.dns.resolver import Resolver
from mailtui.events import DnsLookup, EventBus
from mailtui.mailauth.authresults import authserv_id, strip_ours
from mailtui.mailauth.dkimkeys import DkimKeys
from mailtui.mailauth.dkimsign import DkimSigner
from mailtui.mailauth.dkimverify import verify_dkim
from mailtui.mailauth.dmarccheck import DmarcResult, check_dmarc, evaluate, organizational_domain
from mailtui.mailauth.spfcheck import SpfResult, check_spf
from mailtui.mailauth.verdict import AuthPolicy, check_message, from_domains
from mailtui.store.db import Store

GOOD_IP = "127.0.0.10"          # authorised by the test domains' SPF records
BAD_IP = "127.0.0.66"           # authorised by none
HOSTNAME = "mx.local.test"
SIGNING = ("signed.test", "reject.test", "strict.test", "quarantine.test", "org.test")


def spf(domain: str, record: str) -> tuple[str, str]:
    return (domain, record)


SPF_RECORDS = (
    spf("pass.test", f"v=spf1 ip4:{GOOD_IP} -all"),
    spf("fail.test", "v=spf1 ip4:127.0.0.99 -all"),
    spf("soft.test", "v=spf1 ~all"),
    spf("neutral.test", "v=spf1 ?all"),
    spf("include.test", "v=spf1 include:pass.test -all"),
    spf("mxspf.test", "v=spf1 mx -all"),
    spf("loop1.test", "v=spf1 include:loop2.test -all"),
    spf("loop2.test", "v=spf1 include:loop1.test -all"),
    spf("many.test", "v=spf1 " + " ".join(f"a:a{i}.many.test" for i in range(1, 12)) + " -all"),
    spf("void.test", "v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test -all"),
    spf("huge.test", "v=spf1 " + " ".join(f"ip4:127.1.{i // 250}.{i % 250}" for i in range(400)) + " -all"),
    spf("twice.test", "v=spf1 -all"), spf("twice.test", "v=spf1 +all"),
    spf("badsyntax.test", "v=spf1 ip4:300.1.1.1 -all"),
    spf("slowinc.test", "v=spf1 include:spf.slow.test -all"),
    spf("signed.test", "v=spf1 -all"),
    spf("reject.test", f"v=spf1 ip4:{GOOD_IP} -all"),
    spf("sub.reject.test", f"v=spf1 ip4:{GOOD_IP} -all"),
    spf("strict.test", f"v=spf1 ip4:{GOOD_IP} -all"),
    spf("sub.strict.test", f"v=spf1 ip4:{GOOD_IP} -all"),
    spf("quarantine.test", "v=spf1 -all"),
    spf("nonepolicy.test", "v=spf1 -all"),
    spf("org.test", "v=spf1 -all"), spf("a.org.test", "v=spf1 -all"),
    spf("pct.test", "v=spf1 -all"), spf("bad.test", "v=spf1 -all"),
)
DMARC_RECORDS = (
    ("_dmarc.signed.test", "v=DMARC1; p=reject"),
    ("_dmarc.reject.test", "v=DMARC1; p=reject"),
    ("_dmarc.strict.test", "v=DMARC1; p=reject; aspf=s; adkim=s"),
    ("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
    ("_dmarc.nonepolicy.test", "v=DMARC1; p=none"),
    ("_dmarc.org.test", "v=DMARC1; p=none; sp=reject"),
    ("_dmarc.pct.test", "v=DMARC1; p=reject; pct=0"),
    ("_dmarc.bad.test", "v=DMARC1; p=bogus"),
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    store = DkimKeys(tmp_path_factory.mktemp("dkim"))
    for domain in SIGNING:
        store.active(domain)
    return store


@pytest.fixture(scope="module")
def world(keys):
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    records = [(k.record_name, k.record) for d in SIGNING for k in [keys.active(d)]]
    records += [("broken._domainkey.signed.test", "v=DKIM1; k=rsa; p=not!base64")]
    hosts = [("mx.mxspf.test", GOOD_IP)] + [(f"a{i}.many.test", f"127.0.2.{i}") for i in range(1, 12)]
    w = DnsWorld(mx=(("mxspf.test", "mx.mxspf.test", 10),), hosts=tuple(hosts), null_mx=(),
                 txt=tuple(SPF_RECORDS) + DMARC_RECORDS + tuple(records), silent=("slow.test",)).start()
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def bus():
    return EventBus()


@pytest.fixture
def resolver(world, bus):
    return Resolver((world.endpoint,), 1.0, bus)


def message(sender: str = "alice@signed.test", subject: str = "hello", body: bytes = b"Hi Bob,\r\n\r\nbye\r\n",
            extra: bytes = b"") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: bob@mx.local.test\r\nSubject: {subject}\r\n"
            f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{time.time_ns()}@signed.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n").encode() + extra + b"\r\n" + body


def signed(keys: DkimKeys, domain: str = "signed.test", **kw) -> bytes:
    raw = message(**kw)
    return DkimSigner(keys).sign(raw, domain) + raw


# -- the resolver: purposes, TXT, PTR ----------------------------------------------------

async def test_every_lookup_carries_its_purpose_to_the_event_and_the_log(world, tmp_path):
    bus, store = EventBus(), Store(tmp_path / "db")
    seen: list[DnsLookup] = []
    bus.add_listener(lambda e: seen.append(e) if isinstance(e, DnsLookup) else None)
    resolver = Resolver((world.endpoint,), 1.0, bus, store)
    assert await resolver.txt("pass.test", purpose="SPF") == [f"v=spf1 ip4:{GOOD_IP} -all".encode()]
    assert await resolver.txt("nothing.test", purpose="CHECK") == []
    assert (await resolver.reverse(GOOD_IP, purpose="CHECK")).values == ("mx.mxspf.test",)
    await resolver.mail_hosts("mxspf.test")
    await resolver.txt("pass.test", purpose="DMARC")          # cached, asked for another reason
    assert [(e.name, e.rtype, e.purpose, e.cached) for e in seen] == [
        ("pass.test", "TXT", "SPF", False), ("nothing.test", "TXT", "CHECK", False),
        ("10.0.0.127.in-addr.arpa", "PTR", "CHECK", False), ("mxspf.test", "MX", "MX", False),
        ("mx.mxspf.test", "A", "MX", False), ("mx.mxspf.test", "AAAA", "MX", False),
        ("pass.test", "TXT", "DMARC", True)]
    store.flush_sync()
    assert [d["purpose"] for d in store.recent("dns", 10)][:2] == ["DMARC", "MX"]     # newest first
    store.close()


async def test_a_huge_txt_record_arrives_whole_over_tcp(resolver):
    [record] = await resolver.txt("huge.test", purpose="SPF")
    assert len(record) > 4000 and record.startswith(b"v=spf1 ip4:127.1.0.0 ") and record.endswith(b" -all")


# -- DKIM ------------------------------------------------------------------------------------

async def test_a_signed_message_verifies_with_dkimpys_own_verifier_and_a_tampered_one_fails(keys, world, resolver):
    raw = signed(keys, body=b"Line one  \r\nLine two\r\n\r\n\r\n")
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert b"a=rsa-sha256" in header and b"c=relaxed/relaxed" in header and b"d=signed.test" in header
    assert b"s=mailtui" in header

    import dns.resolver as dnsresolver
    plain = dnsresolver.Resolver(configure=False)
    plain.nameservers, plain.port = ["127.0.0.1"], world.port

    def dnsfunc(name, timeout=5):                     # dkimpy asks; the answer comes from dnsmasq
        answer = plain.resolve(name.decode(), "TXT", lifetime=2)
        return b"".join(answer[0].strings)

    assert dkim.verify(raw, dnsfunc=dnsfunc)
    assert not dkim.verify(raw.replace(b"Line two", b"Line 2"), dnsfunc=dnsfunc)
    assert not dkim.verify(raw.replace(b"Subject: hello", b"Subject: hullo"), dnsfunc=dnsfunc)
    assert not dkim.verify(raw.replace(b"\r\nTo:", b"\r\nFrom: mallory@evil.test\r\nTo:", 1), dnsfunc=dnsfunc)
    # Whitespace changes are what relaxed/relaxed forgives.
    assert dkim.verify(raw.replace(b"Subject: hello", b"Subject:   hello "), dnsfunc=dnsfunc)

    [ok] = await verify_dkim(raw, resolver)
    assert (ok.result, ok.domain, ok.selector) == ("pass", "signed.test", "mailtui")
    [bad] = await verify_dkim(raw.replace(b"Line two", b"Line 2"), resolver)
    assert bad.result == "fail" and "body hash" in bad.reason


async def test_rotation_makes_a_new_selector_that_signs_and_verifies(tmp_path, world, resolver):
    store = DkimKeys(tmp_path, clock=lambda: 1_790_000_000)       # 2026-09-21
    first = store.active("rotate.test")
    new = store.rotate("rotate.test")
    assert (first.selector, new.selector) == ("mailtui", "mailtui-20260921")
    assert store.rotate("rotate.test").selector == "mailtui-20260921-2"
    assert [k.selector for k in store.keys("rotate.test")] == ["mailtui", "mailtui-20260921", "mailtui-20260921-2"]
    assert (tmp_path / "dkim" / "rotate.test" / "active").read_text().strip() == "mailtui-20260921-2"
    # Another process (a second key store on the same directory) follows the rotation.
    assert DkimKeys(tmp_path).active("rotate.test").selector == "mailtui-20260921-2"
    raw = message(sender="a@rotate.test")
    header = DkimSigner(store).sign(raw, "rotate.test")
    assert b"s=mailtui-20260921-2;" in header.replace(b"\r\n ", b" ")
    for key in store.keys("rotate.test"):
        assert key.record.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")   # 2048-bit SubjectPublicKeyInfo


def test_keys_are_private_and_made_once(tmp_path):
    import stat

    a, b = DkimKeys(tmp_path), DkimKeys(tmp_path)
    assert a.active("x.test").record == b.active("x.test").record
    for path in (tmp_path / "dkim", tmp_path / "dkim" / "x.test"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (tmp_path / "dkim" / "x.test").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "dkim" / "x.test").iterdir()) == ["active", "mailtui.pem"]


def tamper_signature(raw: bytes, old: bytes, new: bytes) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    unfolded = head.replace(b"\r\n ", b" ")
    assert old in unfolded
    return unfolded.replace(old, new, 1) + sep + body


@pytest.mark.parametrize("change, result, why", [
    (lambda r: tamper_signature(r, b" b=", b" b=!!!not-base64!!!"), "permerror", "base64"),
    (lambda r: tamper_signature(r, b" bh=", b" xh="), "permerror", "missing bh="),
    (lambda r: tamper_signature(r, b"v=1;", b"v=2;"), "permerror", "v= value is not 1"),
    (lambda r: tamper_signature(r, b" h=from:", b" h=" + b"from:" * 2000), "permerror", "h= lists more"),
    (lambda r: tamper_signature(r, b"s=mailtui;", b"s=nokey;"), "permerror", "no key"),
    (lambda r: tamper_signature(r, b"s=mailtui;", b"s=broken;"), "permerror", "bad key"),
    (lambda r: tamper_signature(r, b"d=signed.test;", b"d=x.slow.test;"), "temperror", "timed out"),
    (lambda r: tamper_signature(r, b"d=signed.test;", b"d=\xff\xfe;"), "permerror", ""),
    (lambda r: tamper_signature(r, b"a=rsa-sha256;", b"a=rsa-md5;"), "permerror", "algorithm"),
    (lambda r: b"DKIM-Signature: v=1; a=rsa-sha256\r\n" + r, "permerror", "missing"),
    (lambda r: b"DKIM-Signature: ;;;==;;\r\n" + r, "permerror", "malformed"),
    (lambda r: b"DKIM-Signature: \xff\x00\x01\r\nno colon line\r\n" + r, "permerror", "malformed"),
])
async def test_malformed_signatures_get_a_defined_result_quickly(keys, resolver, change, result, why):
    raw = change(signed(keys))
    started = time.monotonic()
    results = await asyncio.wait_for(verify_dkim(raw, resolver, timeout=5), 10)
    assert time.monotonic() - started < 5
    assert results and results[0].result == result, results
    assert why.lower() in results[0].reason.lower(), results[0].reason


async def test_no_signature_is_no_result_and_many_are_capped(keys, resolver):
    assert await verify_dkim(message(), resolver) == []
    raw = signed(keys)
    sig = raw.split(b"\r\nFrom:")[0] + b"\r\n"
    many = await verify_dkim(sig * 9 + raw, resolver)
    assert len(many) == 5 and {r.result for r in many} == {"pass"}


# -- SPF -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mail_from, ip, result", [
    ("a@pass.test", GOOD_IP, "pass"),
    ("a@pass.test", BAD_IP, "fail"),
    ("a@fail.test", GOOD_IP, "fail"),
    ("a@soft.test", GOOD_IP, "softfail"),
    ("a@neutral.test", GOOD_IP, "neutral"),
    ("a@nothing.test", GOOD_IP, "none"),
    ("a@include.test", GOOD_IP, "pass"),
    ("a@mxspf.test", GOOD_IP, "pass"),
    ("a@mxspf.test", BAD_IP, "fail"),
    ("a@loop1.test", GOOD_IP, "permerror"),
    ("a@many.test", GOOD_IP, "permerror"),
    ("a@void.test", GOOD_IP, "permerror"),
    ("a@huge.test", GOOD_IP, "fail"),
    ("a@huge.test", "127.1.1.7", "pass"),
    ("a@twice.test", GOOD_IP, "permerror"),
    ("a@badsyntax.test", GOOD_IP, "permerror"),
    ("a@[127.0.0.10]", GOOD_IP, "none"),
])
async def test_spf_results(resolver, mail_from, ip, result):
    res = await asyncio.wait_for(check_spf(ip, "client.test", mail_from, resolver, timeout=5), 10)
    assert res.result == result, res
    assert res.identity == "mailfrom" and res.sender == mail_from


async def test_spf_limits_are_named(resolver):
    many = await check_spf(GOOD_IP, "h.test", "a@many.test", resolver)
    assert "too many dns lookups" in many.reason.lower()
    void = await check_spf(GOOD_IP, "h.test", "a@void.test", resolver)
    assert "void" in void.reason.lower()


async def test_spf_null_sender_checks_the_helo_name(resolver):
    res = await check_spf(GOOD_IP, "pass.test", "", resolver)
    assert (res.result, res.identity, res.domain, res.sender) == ("pass", "helo", "pass.test", "postmaster@pass.test")
    literal = await check_spf(GOOD_IP, "[127.0.0.10]", "", resolver)
    assert literal.result == "none"


async def test_spf_on_a_dns_that_never_answers_is_temperror_in_bounded_time(resolver):
    started = time.monotonic()
    res = await asyncio.wait_for(check_spf(GOOD_IP, "h.test", "a@slowinc.test", resolver, timeout=3), 10)
    assert res.result == "temperror" and time.monotonic() - started < 4.5
    # A whole nameserver that never answers: the same, and the deadline holds even
    # when the resolver itself would wait longer.
    from dnsworld import silent_udp_socket

    from mailtui.config import Endpoint
    with silent_udp_socket() as silent:
        dead = Resolver((Endpoint("127.0.0.1", silent.getsockname()[1]),), 30.0)
        started = time.monotonic()
        res = await asyncio.wait_for(check_spf(GOOD_IP, "h.test", "a@pass.test", dead, timeout=1.5), 10)
    assert res.result == "temperror" and time.monotonic() - started < 3


async def test_spf_checks_run_side_by_side_without_blocking_the_loop(resolver):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    results = await asyncio.gather(
        *(check_spf(GOOD_IP, "h.test", "a@slowinc.test", resolver, timeout=1.5) for _ in range(6)),
        check_spf(GOOD_IP, "h.test", "a@pass.test", resolver, timeout=1.5))
    task.cancel()
    assert {r.result for r in results[:6]} == {"temperror"} and results[6].result in ("pass", "temperror")
    assert time.monotonic() - started < 6
    assert ticks > (time.monotonic() - started) / 0.01 * 0.5         # the loop kept running


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
    assert time.monotonic() - started < 6
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
