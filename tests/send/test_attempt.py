"""One delivery attempt and what it means for the queue entry.

Pure decisions in tables first; then whole attempts through the scheduler,
with real DNS (dnsmasq on 127.0.0.1) and real SMTP servers (aiosmtpd on
127.0.0.2 and up); see tests/dnsworld.py for the world they make up.
"""

from __future__ import annotations

import pytest
from delivery_harness import (
    WIRE_BODY,
    Dsns,
    harnesses,  # noqa: F401 (a fixture)
    make_config,
    smtp_port,  # noqa: F401 (a fixture)
    spool_files,
)
from dnsworld import A_ONLY_HOST, MX_HOST_2, FakeMX, free_port

from mailtui.config import Endpoint
from mailtui.dns.resolver import MailHost, PermanentDnsError
from mailtui.events import Bounced, Deferred, DeliveredRemote, DeliveryAttempt, Notice
from mailtui.send.attempt import without_self

pytestmark = pytest.mark.timeout(30)


# -- pure rules ----------------------------------------------------------------

def test_without_self():
    hosts = [MailHost("mx1.test", 10, ["127.0.0.2"]), MailHost("mail.local.test", 20, ["127.0.0.9"]),
             MailHost("mx3.test", 30, ["127.0.0.3"])]
    assert [h.name for h in without_self("d.test", hosts, "MAIL.local.test")] == ["mx1.test"]
    assert without_self("d.test", hosts, "other.test") == hosts
    with pytest.raises(PermanentDnsError) as info:
        without_self("d.test", hosts[1:], "mail.local.test")
    assert info.value.status == "5.4.6"



# -- whole attempts ------------------------------------------------------------

async def test_delivery_with_mx_fallback(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx2:   # mx1 (preference 10) is down
        item = await h.enqueue(["bob@mx.test", "carol@mx.test", "dan@aonly.test"])
        async with FakeMX(A_ONLY_HOST, smtp_port) as aonly:
            await h.wait_settled(item.id)
    assert sorted(r for m in mx2.messages for r in m.rcpt_tos) == ["bob@mx.test", "carol@mx.test"]
    assert len(mx2.messages) == 1 and mx2.messages[0].content == WIRE_BODY
    assert [m.rcpt_tos for m in aonly.messages] == [["dan@aonly.test"]]
    delivered = h.events.of(DeliveredRemote)
    assert {(e.recipient, e.remote_mta) for e in delivered} == {
        ("bob@mx.test", "mx2.mx.test"), ("carol@mx.test", "mx2.mx.test"),
        ("dan@aonly.test", "aonly.test")}
    assert all(e.reply.startswith("250") for e in delivered)
    attempts = h.events.of(DeliveryAttempt)
    assert {(e.domain, e.attempt) for e in attempts} == {("mx.test", 1), ("aonly.test", 1)}
    assert h.dsns.sent == [] and not h.events.of(Bounced)
    assert spool_files(tmp_path) == []
    log = h.store.recent("deliveries", 10)
    assert {d["recipient"] for d in log if d["result"] == "delivered"} == {
        "bob@mx.test", "carol@mx.test", "dan@aonly.test"}
    assert any(d["remote_mta"] == "dns; mx2.mx.test" for d in log)
    assert h.store.recent("dns", 50)


async def test_retries_then_gives_up_with_a_dsn(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port):
        item = await h.enqueue(["later@mx.test", "bob@mx.test"])
        await h.wait_settled(item.id)
    deferred = h.events.of(Deferred)
    assert [(e.recipient, e.attempts) for e in deferred] == [("later@mx.test", 1), ("later@mx.test", 2)]
    assert all(e.next_attempt > e.at for e in deferred)
    assert [e.attempt for e in h.events.of(DeliveryAttempt)] == [1, 2, 3]
    assert [e.recipient for e in h.events.of(DeliveredRemote)] == ["bob@mx.test"]
    [bounce] = h.events.of(Bounced)
    assert bounce.recipient == "later@mx.test" and bounce.dsn_id == "DSN1"

    [(sender, recipients, _)] = h.dsns.sent
    assert sender == "" and recipients == ["alice@local.test"]
    dsn = h.dsns.parsed()
    assert dsn.get_content_type() == "multipart/report"
    text, status, original = dsn.iter_parts()
    words = " ".join(text.get_content().split())
    assert "later@mx.test" in words and "gave up after 3 delivery attempts" in words
    assert "451 4.2.0 mailbox busy" in words and "bob@mx.test" not in words
    _, rcpt = status.get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; later@mx.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "4.2.0"
    assert rcpt["Remote-MTA"] == "dns; mx2.mx.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.2.0 mailbox busy, try again later"
    assert "Message-ID: <1@local.test>" in original.get_content()
    assert spool_files(tmp_path) == []


async def test_5xx_bounces_at_once(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        item = await h.enqueue(["bad@mx.test", "bob@mx.test"])
        await h.wait_settled(item.id)
    assert len(h.events.of(DeliveryAttempt)) == 1 and not h.events.of(Deferred)
    assert mx.messages[0].rcpt_tos == ["bob@mx.test"]
    _, rcpt = h.dsns.parsed().get_payload()[1].get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; bad@mx.test"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"


@pytest.mark.parametrize("domain, status, words", [
    ("nullmx.test", "5.1.10", "does not accept mail"),
    ("nx.test", "5.1.2", "does not exist"),
])
async def test_dns_failures_bounce_without_retry(dns_world, smtp_port, tmp_path, harnesses,
                                                 domain, status, words):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    item = await h.enqueue([f"bob@{domain}"])
    await h.wait_settled(item.id)
    assert len(h.events.of(DeliveryAttempt)) == 1 and not h.events.of(Deferred)
    [bounce] = h.events.of(Bounced)
    assert words in bounce.error
    dsn = h.dsns.parsed()
    _, rcpt = dsn.get_payload()[1].get_payload()
    assert rcpt["Status"] == status and rcpt["Action"] == "failed"
    assert words in dsn.get_payload()[0].get_content()


async def test_no_bounce_for_the_null_sender(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    item = await h.enqueue(["bob@nullmx.test"], sender="")
    await h.wait_settled(item.id)
    assert h.dsns.sent == []
    [bounce] = h.events.of(Bounced)
    assert bounce.recipient == "bob@nullmx.test" and bounce.dsn_id == ""
    assert spool_files(tmp_path) == []


async def test_dns_down_defers_not_bounces(smtp_port, tmp_path, harnesses):
    dead = Endpoint("127.0.0.1", free_port(udp=True))
    h = harnesses(tmp_path, make_config(tmp_path, (dead,), smtp_port, dns_timeout=0.4,
                                        max_attempts=10)).start()
    item = await h.enqueue(["bob@mx.test"])
    await h.events.wait_for(lambda e: isinstance(e, Deferred), count=2, timeout=10)
    await h.stop()
    assert not h.events.of(Bounced) and h.dsns.sent == []
    [rcpt] = item.recipients
    assert rcpt.state == "deferred" and rcpt.status == "4.4.3"
    assert "mx.test" in rcpt.last_error
    assert spool_files(tmp_path) == [f"{item.id}.eml", f"{item.id}.json"]


async def test_failed_submit_drops_the_dsn_with_a_notice(dns_world, smtp_port, tmp_path, harnesses):
    dsns = Dsns()
    dsns.error = OSError("disk full")
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port), dsns).start()
    item = await h.enqueue(["bob@nx.test"])
    await h.wait_settled(item.id)
    [notice] = h.events.of(Notice)
    assert notice.level == "error" and "disk full" in notice.text and item.id in notice.text
    assert h.events.of(Bounced)[0].dsn_id == ""
    assert spool_files(tmp_path) == []

