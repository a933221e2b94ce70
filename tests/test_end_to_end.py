"""Whole mail paths through real servers: SMTP in, DNS (dnsmasq), SMTP out, bounces, POP3.

Everything runs on 127.0.0.0/8: the mailtui core under test, a dnsmasq
answering for ``.test``, fake remote MXs, and a second mailtui instance that
the first relays to.
"""

from __future__ import annotations

import email
import email.policy
import poplib
import smtplib

import pytest
from dnsworld import DNSMASQ, DnsWorld, FakeMX, free_port
from harness import PASSWORD, RunningServer, mailtui, make_config, write_config

from mailtui.events import Bounced, Deferred, DeliveredRemote, DnsLookup

LOOPBACKS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
MSG = b"From: Alice <alice@localhost>\r\nSubject: outbound\r\nMessage-ID: <e2e@localhost>\r\n\r\nHi.\r\n.dot\r\n"

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq not installed")


@pytest.fixture(scope="module")
def dns_world():
    world = DnsWorld(mx=(("mx.test", "mx1.mx.test", 10), ("mx.test", "mx2.mx.test", 20),
                         ("peer.test", "mx.peer.test", 10)),
                     hosts=(("mx1.mx.test", "127.0.0.2"), ("mx2.mx.test", "127.0.0.3"),
                            ("mx.peer.test", "127.0.0.4"))).start()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def remote_port():
    return free_port(LOOPBACKS)


@pytest.fixture
def relay(tmp_path, dns_world, remote_port):
    """A mailtui that relays for 127.0.0.0/8 through the dnsmasq world."""
    cfg = make_config(tmp_path / "relay",
                      dns={"nameservers": [str(dns_world.endpoint)]},
                      delivery={"remote_port": remote_port, "retry_intervals": [0.3],
                                "max_attempts": 2, "retry_jitter": 0.0})
    srv = RunningServer(cfg).start()
    srv.add_client("loopback", "127.0.0.1/32")
    srv.add_mailbox("alice@localhost")
    try:
        yield srv
    finally:
        srv.stop()


def send(srv: RunningServer, rcpts: list[str], sender: str = "alice@localhost", body: bytes = MSG) -> str:
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail(sender)
        for r in rcpts:
            assert c.rcpt(r)[0] == 250, r
        code, text = c.data(body)
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[1]


def test_relayed_via_mx_with_preference_fallback(relay, remote_port):
    mx2 = FakeMX("127.0.0.3", remote_port)  # mx1 (127.0.0.2) is down
    relay.run(mx2.start())
    try:
        msg_id = send(relay, ["bob@mx.test", "carol@mx.test"])
        relay.wait_for(lambda: mx2.messages, timeout=10, what="delivery to mx2")
        got = mx2.messages[0]
        assert sorted(got.rcpt_tos) == ["bob@mx.test", "carol@mx.test"]  # one transaction
        assert got.mail_from == "alice@localhost"
        assert got.content.endswith(MSG) and got.content.startswith(b"Received: from client.test")
        spool = relay.data_dir / "spool"
        relay.wait_for(lambda: len(relay.core.queue) == 0 and not [p for p in spool.iterdir() if p.is_file()],
                       what="queue and spool to empty")
        delivered = relay.events_of(DeliveredRemote)
        assert {e.recipient for e in delivered} == {"bob@mx.test", "carol@mx.test"}
        assert {e.msg_id for e in delivered} == {msg_id}
        lookups = relay.events_of(DnsLookup)
        assert any(e.name.rstrip(".") == "mx.test" and e.rtype == "MX" for e in lookups)
    finally:
        relay.run(mx2.stop())


def test_rejected_recipient_bounces_to_local_sender(relay, remote_port):
    mx2 = FakeMX("127.0.0.3", remote_port)
    relay.run(mx2.start())
    try:
        send(relay, ["bad-user@mx.test", "good@mx.test"])
        relay.wait_for(lambda: relay.maildir_files("alice@localhost"), timeout=10, what="the DSN")
        relay.wait_for(lambda: mx2.messages, what="the good recipient's copy")
        assert mx2.messages[0].rcpt_tos == ["good@mx.test"]
    finally:
        relay.run(mx2.stop())
    dsn = email.message_from_bytes(relay.maildir_files("alice@localhost")[0].read_bytes(),
                                   policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["From"].addresses[0].username.upper() == "MAILER-DAEMON"
    text, status, headers = dsn.iter_parts()
    words = " ".join(text.get_content().split())
    assert "<bad-user@mx.test>: host mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user" in words
    assert status.get_content_type() == "message/delivery-status"
    fields = str(status)
    assert "Final-Recipient: rfc822; bad-user@mx.test" in fields
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in fields
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <e2e@localhost>" in headers.get_content()
    bounced = relay.wait_for(lambda: relay.events_of(Bounced), what="the Bounced event")
    assert [e.recipient for e in bounced] == ["bad-user@mx.test"]


def test_retries_then_bounce_states_the_cause_and_is_read_over_pop3(relay, remote_port):
    # Nothing listens on either MX: every attempt fails to connect.
    send(relay, ["nobody@mx.test"])
    relay.wait_for(lambda: relay.maildir_files("alice@localhost"), timeout=15, what="the DSN")
    deferred = relay.events_of(Deferred)
    assert len(deferred) == 1 and "refused" in deferred[0].error.lower()
    p = poplib.POP3("127.0.0.1", relay.pop3_port, timeout=10)
    try:
        p.user("alice@localhost")
        p.pass_(PASSWORD)
        lines = b"\r\n".join(p.retr(1)[1])
    finally:
        p.quit()
    dsn = email.message_from_bytes(lines, policy=email.policy.default)
    assert "Undelivered" in dsn["Subject"]
    assert "nobody@mx.test" in str(dsn) and "refused" in str(dsn).lower()
    assert "Action: failed" in str(dsn)


def test_no_bounce_for_the_null_sender(relay, remote_port):
    mx2 = FakeMX("127.0.0.3", remote_port)
    relay.run(mx2.start())
    try:
        send(relay, ["bad@mx.test"], sender="")
        relay.wait_for(lambda: relay.events_of(Bounced), timeout=10, what="the failure")
        relay.wait_for(lambda: len(relay.core.queue) == 0, what="queue to empty")
    finally:
        relay.run(mx2.stop())
    assert relay.maildir_files("alice@localhost") == []
    assert relay.maildir_files("postmaster@localhost") == []


def test_deferred_shows_in_queue_list_then_delivered_after_restart(tmp_path, dns_world, remote_port):
    data = tmp_path / "relay"
    cfg = make_config(data, dns={"nameservers": [str(dns_world.endpoint)]},
                      delivery={"remote_port": remote_port, "retry_intervals": [3600],
                                "retry_jitter": 0.0})
    srv = RunningServer(cfg).start()
    try:
        srv.add_client("loopback", "127.0.0.1/32")
        mx2 = FakeMX("127.0.0.3", remote_port, rules={"later": "451 4.2.0 mailbox busy, try again later"})
        srv.run(mx2.start())
        msg_id = send(srv, ["later-bob@mx.test"], sender="someone@example.org")
        srv.wait_for(lambda: srv.events_of(Deferred), timeout=10, what="deferral")
        srv.run(mx2.stop())
        cli_cfg = write_config(tmp_path / "c.toml", data)
        res = mailtui("queue", "list", config=cli_cfg)
        assert res.returncode == 0, res.stderr
        assert msg_id in res.stdout and "later-bob@mx.test" in res.stdout and "deferred" in res.stdout
        assert "451 4.2.0 mailbox busy" in res.stdout
    finally:
        srv.stop()
    srv = RunningServer(cfg).start()
    mx2 = FakeMX("127.0.0.3", remote_port, rules={})
    srv.run(mx2.start())
    try:
        assert srv.core.queue.get(msg_id) is not None
        srv.run(srv.core.admin.call("queue_flush", {}))
        srv.wait_for(lambda: mx2.messages, timeout=10, what="delivery after restart")
        assert mx2.messages[0].rcpt_tos == ["later-bob@mx.test"]
        srv.wait_for(lambda: len(srv.core.queue) == 0, what="queue to empty")
    finally:
        srv.run(mx2.stop())
        srv.stop()


def test_two_mailtui_instances_relay_to_each_other(relay, tmp_path, remote_port):
    """A relays for its client to peer.test, whose MX is B (another mailtui on 127.0.0.4)."""
    b_cfg = make_config(tmp_path / "peer", server={"hostname": "mx.peer.test",
                                                  "local_domains": ["peer.test"]},
                        smtp={"listen": [f"127.0.0.4:{remote_port}"]},
                        policy={"accept_unregistered_for_local": True})
    peer = RunningServer(b_cfg).start()
    try:
        peer.add_mailbox("dave@peer.test")
        send(relay, ["dave@peer.test"])
        peer.wait_for(lambda: peer.maildir_files("dave@peer.test"), timeout=10, what="delivery to B")
        data = peer.maildir_files("dave@peer.test")[0].read_bytes()
        # B's Received on top of A's; A used STARTTLS to B (opportunistic)
        assert data.startswith(b"Received: from mail.test ([127.0.0.1])\r\n\tby mx.peer.test (mailtui) with ESMTPS")
        assert b"\tby mail.test (mailtui) with ESMTP id" in data
        assert data.endswith(MSG)
        # B writes the file before its 250 reaches A: wait for A to hear it.
        delivered = relay.wait_for(lambda: relay.events_of(DeliveredRemote), what="A's delivery event")
        assert delivered[0].tls
        relay.wait_for(lambda: len(relay.core.queue) == 0, what="A's queue to empty")
    finally:
        peer.stop()
