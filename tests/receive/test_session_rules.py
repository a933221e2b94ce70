"""The session applies its SessionRules: peers, rules objects and message checks over real sockets."""

from __future__ import annotations

import smtplib

import pytest
from conftest import start_server
from harness import PASSWORD, tls_context

from mailtui.events import ClientRefused
from mailtui.receive.message import Arrival, Verdict
from mailtui.receive.policy import Peer, peer_label
from mailtui.receive.rules import InboundRules
from mailtui.receive.slots import ConnectionSlots
from mailtui.receive.submission import SubmissionRules
from mailtui.replies import SmtpReply

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.mark.parametrize("network_client, login, label, registered", [
    ("", "", "unregistered", False),
    ("office", "", "client office", True),
    ("", "bob@localhost", "login bob@localhost", True),
    ("office", "bob@localhost", "login bob@localhost", True),
])
def test_peer_label_and_registered(network_client, login, label, registered):
    assert peer_label(network_client, login) == label
    peer = Peer(ip="192.0.2.1", network_client=network_client, login=login)
    assert (peer.label, peer.registered) == (label, registered)


def test_connection_slots_count_total_and_per_ip():
    slots: ConnectionSlots[str] = ConnectionSlots()
    assert slots.full("a", total=2, per_ip=1) == ""
    slots.take("s1", "a")
    assert slots.full("a", total=2, per_ip=1) == "ip"
    assert slots.full("b", total=2, per_ip=1) == ""
    slots.take("s2", "b")
    assert slots.full("c", total=2, per_ip=1) == "total"
    slots.give_back("s1", "a")
    slots.give_back("s2", "b")
    assert slots.open == set() and slots.per_ip == {}


def test_another_rules_object_changes_what_the_session_allows(server):
    server.add_client("loopback", "127.0.0.0/8")
    server.add_mailbox("alice@localhost")
    server.core.smtp.rules = SubmissionRules(server.core.policy)   # port 25 with submission's rules
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
        c.ehlo("client.test")
        code, text = c.mail("alice@localhost")
        assert (code, text[:5]) == (530, b"5.7.0")       # a registered network is not enough
        c.starttls(context=tls_context())
        c.login("alice@localhost", PASSWORD)
        assert c.mail("bob@localhost")[0] == 553
        assert c.mail("alice@localhost")[0] == 250
        assert c.rcpt("far@remote.test")[0] == 250
        assert c.data(MSG)[0] == 250
    assert len(server.core.queue) == 1


def test_message_checks_run_at_the_end_of_data_and_may_add_a_header(server):
    server.add_mailbox("bob@localhost")
    seen: list[Arrival] = []

    async def unregistered_need_a_pass(message: Arrival) -> Verdict:
        seen.append(message)
        if message.peer.registered:
            return Verdict(header=b"X-Checked: registered\r\n")
        return Verdict(refusal=SmtpReply(550, "5.7.26", "Unauthenticated mail is refused"))

    server.core.smtp.rules = InboundRules(server.core.policy, auth_requires_tls=True,
                                          message_checks=[unregistered_need_a_pass])
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
        c.ehlo("client.test")
        c.starttls(context=tls_context())
        c.login("bob@localhost", PASSWORD)
        c.mail("bob@localhost")
        c.rcpt("bob@localhost")
        assert c.data(MSG)[0] == 250
    data = server.maildir_files("bob@localhost")[0].read_bytes()
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"Received: ")
    assert next(line for line in lines[1:] if not line.startswith(b"\t")) == b"X-Checked: registered"
    assert data.endswith(MSG)
    assert seen[0].sender == "bob@localhost" and seen[0].recipients == ("bob@localhost",)
    assert seen[0].body == MSG


def test_a_message_check_refusal_is_a_data_refusal(tmp_path):
    srv = start_server(tmp_path, policy={"accept_unregistered_for_local": True})
    try:
        srv.add_mailbox("bob@localhost")

        async def refuse_unregistered(message: Arrival) -> Verdict:
            if message.peer.registered:
                return Verdict()
            return Verdict(refusal=SmtpReply(550, "5.7.26", "Unauthenticated mail is refused"))

        srv.core.smtp.rules = InboundRules(srv.core.policy, auth_requires_tls=True,
                                           message_checks=[refuse_unregistered])
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
            c.ehlo("stranger.test")
            assert c.mail("someone@example.org")[0] == 250
            assert c.rcpt("bob@localhost")[0] == 250
            code, text = c.data(MSG)
            assert (code, text) == (550, b"5.7.26 Unauthenticated mail is refused")
            assert c.noop()[0] == 250                     # the session goes on
        assert srv.maildir_files("bob@localhost") == []
        refused = srv.events_of(ClientRefused)
        assert refused[-1].stage == "data" and refused[-1].reply.startswith("550 5.7.26")
    finally:
        srv.stop()
