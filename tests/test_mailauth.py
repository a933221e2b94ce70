"""Sender authentication against a real DNS: the resolver's purposes, DKIM signing and verification, SPF.

The world (tests/authworld.py) is dnsmasq on loopback publishing the test
domains' SPF and DKIM records.
"""

from __future__ import annotations

import asyncio
import time

import dkim
import pytest
from authworld import BAD_IP, GOOD_IP, keys_fixture, message, signed, world_fixture  # noqa: F401 (the fixtures)

from mailtui.dns.resolver import Resolver
from mailtui.events import DnsLookup, EventBus
from mailtui.mailauth.dkimkeys import DkimKeys
from mailtui.mailauth.dkimsign import DkimSigner
from mailtui.mailauth.dkimverify import verify_dkim
from mailtui.mailauth.spfcheck import check_spf
from mailtui.store.db import Store


@pytest.fixture
def resolver(world):
    return Resolver((world.endpoint,), 1.0, EventBus())


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


async def test_concurrent_first_signatures_share_one_key_made_off_the_loop(tmp_path):
    signer = DkimSigner(DkimKeys(tmp_path))
    raws = [message(sender="a@fresh.test", subject=f"n{i}") for i in range(8)]
    headers = await asyncio.gather(*(signer.sign_async(raw, "fresh.test") for raw in raws))
    [key] = DkimKeys(tmp_path).keys("fresh.test")
    for header, raw in zip(headers, raws):
        assert dkim.verify(header + raw, dnsfunc=lambda name, timeout=5: key.record.encode())


@pytest.mark.parametrize("mail_from, head, domain", [
    ("bounce@example.test", b"From: Alice <alice@Example.Test>\r\n", "example.test"),
    ("a@example.test", b"From: someone@elsewhere.test\r\n", "example.test"),       # the sender's, then
    ("a@elsewhere.test", b"From: a@elsewhere.test, b@example.test\r\n", "example.test"),
    ("a@elsewhere.test", b"From: a@elsewhere.test\r\n", None),                      # not ours to sign
    ("", b"From: =?utf-8?q?broken\r\nX: \xff\r\n", None),
    ("", b"no header at all", None),
])
def test_the_signing_domain(mail_from, head, domain):
    from mailtui.mailauth.dkimsign import signing_domain

    assert signing_domain(mail_from, head + b"\r\nbody\r\n", lambda d: d == "example.test") == domain


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


async def test_spf_asks_every_question_through_mailtuis_resolver(world):
    # Guards the one place pyspf is hooked (spfcheck._lookup): if pyspf stopped asking
    # through spf.DNSLookup, these lookups would not show in the DNS log.
    bus, seen = EventBus(), []
    bus.add_listener(lambda e: seen.append(e) if isinstance(e, DnsLookup) else None)
    res = await check_spf(GOOD_IP, "h.test", "a@mxspf.test", Resolver((world.endpoint,), 1.0, bus))
    assert res.result == "pass"
    assert [(e.name, e.rtype, e.purpose) for e in seen] == [
        ("mxspf.test", "TXT", "SPF"), ("mxspf.test", "MX", "SPF"), ("mx.mxspf.test", "A", "SPF")]


SPF_TABLE = [("a@pass.test", GOOD_IP), ("a@fail.test", GOOD_IP), ("a@include.test", GOOD_IP),
             ("a@mxspf.test", GOOD_IP), ("a@mxspf.test", BAD_IP), ("a@many.test", GOOD_IP),
             ("a@void.test", GOOD_IP), ("a@loop1.test", GOOD_IP), ("a@huge.test", "127.1.1.7"),
             ("a@nothing.test", GOOD_IP)]


async def test_spf_from_the_cache_runs_on_the_loop_and_gives_the_same_results(world, monkeypatch):
    from mailtui.mailauth import spfcheck

    bus, seen = EventBus(), []
    bus.add_listener(lambda e: seen.append(e) if isinstance(e, DnsLookup) else None)
    resolver = Resolver((world.endpoint,), 1.0, bus)
    first = [await check_spf(ip, "h.test", sender, resolver) for sender, ip in SPF_TABLE]
    asked = len(seen)
    threaded: list = []
    pool = spfcheck._pool
    monkeypatch.setattr(spfcheck, "_pool", type("Spy", (), {
        "submit": lambda self, *a, **kw: threaded.append(a[1:]) or pool.submit(*a, **kw)})())
    again = [await check_spf(ip, "h.test", sender, resolver) for sender, ip in SPF_TABLE]
    assert [(r.result, r.reason) for r in again] == [(r.result, r.reason) for r in first]
    # Only huge.test's record (over INLINE_MAX) went to a thread; every other answer came from the cache.
    assert [args[2] for args in threaded] == ["a@huge.test"]
    assert all(e.cached and e.purpose == "SPF" for e in seen[asked:])


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
