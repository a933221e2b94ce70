"""The SMTP courier against fake mail hosts on loopback addresses."""

from __future__ import annotations

import asyncio

import pytest
from delivery_harness import (
    BODY,
    WIRE_BODY,
    smtp_port_fixture,  # noqa: F401 (a fixture)
)
from dnsworld import MX_HOST_1, MX_HOST_2, FakeMX, busy_server

from mailtui.dns.resolver import MailHost
from mailtui.send.courier import Courier
from mailtui.send.smtp_courier import SmtpCourier

pytestmark = pytest.mark.timeout(30)


def hosts_for(*addresses: str) -> list[MailHost]:
    return [MailHost(f"mx{i + 1}.mx.test", (i + 1) * 10, [a]) for i, a in enumerate(addresses)]


async def send(hosts, port, recipients, body=BODY, *, sender="alice@local.test", **kw):
    """One delivery on a connection of its own (no cache)."""
    carrier = SmtpCourier(helo="mail.local.test", port=port, connect_timeout=1.0, command_timeout=3.0)
    return await asyncio.wait_for(
        carrier.deliver(hosts, sender=sender, recipients=recipients, body=body, **kw), 10)


async def test_courier_per_recipient_results_and_body(smtp_port):
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        results = await send(hosts_for(MX_HOST_1, MX_HOST_2), smtp_port,
                             ["bob@mx.test", "bad@mx.test", "later@mx.test", "carol@mx.test"])
    ok, bad, later = results["bob@mx.test"], results["bad@mx.test"], results["later@mx.test"]
    assert ok.ok and ok.code == 250 and ok.remote_mta == "mx2.mx.test" and not ok.tls
    assert results["carol@mx.test"].ok
    assert bad.permanent and bad.code == 550 and bad.status == "5.1.1"
    assert bad.diagnostic == "smtp; 550 5.1.1 no such user"
    assert "mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user (in reply to RCPT TO command)" in bad.text
    assert not later.ok and not later.permanent and later.status == "4.2.0"
    [message] = mx.messages
    assert message.rcpt_tos == ["bob@mx.test", "carol@mx.test"]
    assert message.mail_from == "alice@local.test"
    # The server undid the dot-stuffing; CRLF everywhere.
    assert message.content == WIRE_BODY
    assert any(o.upper().startswith("SIZE=") for o in message.mail_options)


async def test_courier_mail_from_and_data_replies(smtp_port):
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        rejected = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test", "b@mx.test"],
                              sender="bad@local.test")
        assert all(o.permanent and o.code == 550 for o in rejected.values())
        assert "(in reply to MAIL FROM command)" in rejected["a@mx.test"].text
        deferred = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test"],
                              sender="later@local.test")
        assert not deferred["a@mx.test"].permanent and deferred["a@mx.test"].code == 451
        mx.handler.data_reply = "554 5.7.1 looks like spam"
        spam = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test", "bad@mx.test"])
        assert spam["a@mx.test"].permanent and spam["a@mx.test"].status == "5.7.1"
        assert "(in reply to end of DATA command)" in spam["a@mx.test"].text
        assert spam["bad@mx.test"].status == "5.1.1"
        mx.handler.data_reply = "452 4.3.1 out of disk"
        full = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test"])
        assert not full["a@mx.test"].permanent and full["a@mx.test"].status == "4.3.1"


async def test_courier_all_down_states_the_last_error(smtp_port):
    results = await send(hosts_for(MX_HOST_1, MX_HOST_2), smtp_port, ["bob@mx.test"])
    outcome = results["bob@mx.test"]
    assert not outcome.ok and not outcome.permanent
    assert outcome.text == f"connection refused by mx2.mx.test[{MX_HOST_2}]:{smtp_port}"


async def test_courier_busy_greeting_moves_on(smtp_port):
    async with busy_server(MX_HOST_1, smtp_port), FakeMX(MX_HOST_2, smtp_port) as mx:
        results = await send(hosts_for(MX_HOST_1, MX_HOST_2), smtp_port, ["bob@mx.test"])
    assert results["bob@mx.test"].ok and len(mx.messages) == 1
    async with busy_server(MX_HOST_1, smtp_port):
        results = await send(hosts_for(MX_HOST_1), smtp_port, ["bob@mx.test"])
    outcome = results["bob@mx.test"]
    assert not outcome.permanent and outcome.code == 421 and outcome.status == "4.3.2"
    assert "refused to talk to me: 421 4.3.2" in outcome.text


async def test_courier_8bitmime_smtputf8_size(smtp_port):
    eight_bit = BODY.replace(b"Hello Bob.", "Grüße, Bob.".encode())
    async with FakeMX(MX_HOST_2, smtp_port, smtputf8=False) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bob@mx.test"], body=eight_bit,
                             body_8bit=True)
        assert results["bob@mx.test"].ok
        assert "BODY=8BITMIME" in [o.upper() for o in mx.messages[0].mail_options]
        assert mx.messages[0].content == eight_bit.replace(b"\n", b"\r\n")

        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bøb@mx.test"], smtputf8=True)
        outcome = results["bøb@mx.test"]
        assert outcome.permanent and outcome.status == "5.6.7" and "SMTPUTF8" in outcome.text
    async with FakeMX(MX_HOST_2, smtp_port, smtputf8=True) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bøb@mx.test"], smtputf8=True,
                             sender="älice@local.test")
        assert results["bøb@mx.test"].ok
        assert mx.messages[0].rcpt_tos == ["bøb@mx.test"]
    async with FakeMX(MX_HOST_2, smtp_port, size_limit=100) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test", "b@mx.test"])
        assert all(o.permanent and o.status == "5.3.4" for o in results.values())
        assert "exceeds size limit 100" in results["a@mx.test"].text
        assert mx.messages == []


async def test_courier_starttls(smtp_port):
    async with FakeMX(MX_HOST_2, smtp_port, tls=True) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bob@mx.test"])
    assert results["bob@mx.test"].ok and results["bob@mx.test"].tls
    assert mx.messages[0].tls



async def test_smtp_courier_keeps_the_courier_contract(smtp_port):
    carrier: Courier = SmtpCourier(helo="mail.local.test", port=smtp_port,
                                   connect_timeout=1.0, command_timeout=3.0)
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        results = await asyncio.wait_for(carrier.deliver(
            hosts_for(MX_HOST_1, MX_HOST_2), sender="alice@local.test",
            recipients=["bob@mx.test", "bad@mx.test", "later@mx.test"], body=BODY), 10)
    assert set(results) == {"bob@mx.test", "bad@mx.test", "later@mx.test"}
    assert results["bob@mx.test"].ok and results["bob@mx.test"].remote_mta == "mx2.mx.test"
    assert results["bad@mx.test"].permanent and not results["later@mx.test"].permanent
    assert [(m.mail_from, m.rcpt_tos, m.content) for m in mx.messages] == [
        ("alice@local.test", ["bob@mx.test"], WIRE_BODY)]
