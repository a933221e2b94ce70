"""The sender-authentication test world: SPF, DKIM and DMARC records of the .test domains in dnsmasq.

Shared by test_mailauth.py (DKIM, SPF) and test_dmarc.py (DMARC, the verdict):
each module starts its own world from these records. Peers are 127.0.0.x
addresses given to the checks as strings; ``slow.test`` is forwarded to a
nameserver that never answers.
"""

from __future__ import annotations

import time

import pytest
from dnsworld import DNSMASQ, DnsWorld

from mailtui.mailauth.dkimkeys import DkimKeys
from mailtui.mailauth.dkimsign import DkimSigner

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


def make_keys(folder) -> DkimKeys:
    """A key store with a key for each signing test domain."""
    store = DkimKeys(folder)
    for domain in SIGNING:
        store.active(domain)
    return store


def start_world(keys: DkimKeys) -> DnsWorld:
    """dnsmasq with every record of the world (the DKIM keys from ``keys``); close() it when done."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    records = [(k.record_name, k.record) for d in SIGNING for k in [keys.active(d)]]
    records += [("broken._domainkey.signed.test", "v=DKIM1; k=rsa; p=not!base64")]
    hosts = [("mx.mxspf.test", GOOD_IP)] + [(f"a{i}.many.test", f"127.0.2.{i}") for i in range(1, 12)]
    return DnsWorld(mx=(("mxspf.test", "mx.mxspf.test", 10),), hosts=tuple(hosts), null_mx=(),
                    txt=tuple(SPF_RECORDS) + DMARC_RECORDS + tuple(records), silent=("slow.test",)).start()


@pytest.fixture(name="keys", scope="module")
def keys_fixture(tmp_path_factory) -> DkimKeys:
    return make_keys(tmp_path_factory.mktemp("dkim"))


@pytest.fixture(name="world", scope="module")
def world_fixture(keys: DkimKeys):
    w = start_world(keys)
    try:
        yield w
    finally:
        w.close()


def message(sender: str = "alice@signed.test", subject: str = "hello", body: bytes = b"Hi Bob,\r\n\r\nbye\r\n",
            extra: bytes = b"") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: bob@mx.local.test\r\nSubject: {subject}\r\n"
            f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{time.time_ns()}@signed.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n").encode() + extra + b"\r\n" + body


def signed(keys: DkimKeys, domain: str = "signed.test", **kw) -> bytes:
    raw = message(**kw)
    return DkimSigner(keys).sign(raw, domain) + raw
