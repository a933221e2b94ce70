"""Per-client and per-login figures in ServerStats, counted from a real server's events."""

from __future__ import annotations

import smtplib

import pytest
from conftest import start_server
from harness import PASSWORD, tls_context

from mailtui.server.stats import Figures, ServerStats

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def test_figures_by_client_and_by_login(server):
    server.add_client("lab", "127.0.0.0/8")
    server.add_mailbox("bob@localhost")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
        c.sendmail("a@example.org", ["bob@localhost"], MSG)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            c.sendmail("a@example.org", ["nobody@localhost"], MSG)   # no such user: refused
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
        c.starttls(context=tls_context())
        c.login("bob@localhost", PASSWORD)
        c.sendmail("bob@localhost", ["bob@localhost"], MSG)

    stats = server.core.stats
    server.wait_for(lambda: stats.totals.accepted == 2, what="two accepted messages")
    lab, bob = stats.totals.clients["lab"], stats.totals.logins["bob@localhost"]
    assert (lab.accepted, lab.refused) == (2, 1)     # the logged-in session came from lab's network too
    assert (bob.accepted, bob.refused) == (1, 0)
    assert lab.last_seen >= bob.last_seen > 0
    assert set(stats.totals.clients) == {"lab"} and set(stats.totals.logins) == {"bob@localhost"}

    snapshot = server.call(server.core.status)["totals"]
    assert snapshot["clients"]["lab"] == {"accepted": 2, "refused": 1, "last_seen": lab.last_seen}
    clients, logins = ServerStats.figures_of(snapshot)
    assert clients == {"lab": lab} and logins == {"bob@localhost": bob}


def test_unregistered_peers_count_in_the_totals_only(server):
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
        with pytest.raises(smtplib.SMTPException):
            c.sendmail("a@example.org", ["bob@example.org"], MSG)
    stats = server.core.stats
    server.wait_for(lambda: stats.totals.refused >= 1, what="the refusal")
    assert stats.totals.clients == {} and stats.totals.logins == {}
    assert ServerStats.figures_of({}) == ({}, {})
    assert Figures().last_seen == 0.0
