"""Message submission (RFC 6409, RFC 8314): the rules as tables, the config, and both ports over smtplib."""

from __future__ import annotations

import logging
import smtplib
import ssl

import pytest
from conftest import start_server
from harness import PASSWORD, SUBMISSION, tls_context
from wire import Dialog

from mailtui.addresses import parse_address
from mailtui.config import Config, ConfigError, Endpoint, from_mapping
from mailtui.events import (
    AuthSucceeded,
    ClientRefused,
    ConnectionClosed,
    ConnectionOpened,
    MessageAccepted,
    SessionChanged,
)
from mailtui.frontends.console.model import ConsoleModel
from mailtui.frontends.describe import describe
from mailtui.mailauth.records import expected
from mailtui.receive.policy import Peer, Policy
from mailtui.receive.submission import SubmissionRules

pytestmark = pytest.mark.timeout(60)

MSG = b"From: alice@localhost\r\nTo: bob@localhost\r\nSubject: from a mail client\r\n\r\nHello.\r\n"


class Mailboxes:
    """The registry as policy sees it: which mailboxes exist."""

    def __init__(self, *keys: str):
        self.keys = set(keys)

    def has_mailbox(self, key: str) -> bool:
        return key in self.keys


TABLE_CONFIG = from_mapping({"server": {"hostname": "mail.test", "local_domains": ["localhost", "example.test"],
                                         "postmaster": "admin@localhost"}})
RULES = SubmissionRules(Policy(TABLE_CONFIG, Mailboxes("alice@localhost", "admin@localhost", "bob@example.test")))
ALICE = Peer(ip="192.0.2.7", login="alice@localhost")
ADMIN = Peer(ip="192.0.2.7", login="admin@localhost")
OFFICE = Peer(ip="192.0.2.7", network_client="office")   # a registered network, but no login


@pytest.mark.parametrize("peer, sender, expected", [
    (ALICE, "alice@localhost", None),
    (ALICE, "Alice@LOCALHOST", None),                  # the same mailbox, however it is spelt
    (ALICE, "bob@example.test", "553 5.7.1"),          # another user's address
    (ALICE, "alice@example.test", "553 5.7.1"),        # same name in another local domain: not hers
    (ALICE, "alice@remote.test", "553 5.7.1"),         # not a local address at all
    (ALICE, "postmaster@localhost", "553 5.7.1"),      # the postmaster's alias is not hers
    (ALICE, None, "553 5.7.1"),                        # the null sender is for bounces
    (ADMIN, "postmaster@localhost", None),             # the postmaster sends as postmaster@ ...
    (ADMIN, "postmaster@example.test", None),          # ... of every local domain
    (ADMIN, "admin@localhost", None),
    (OFFICE, "alice@localhost", "530 5.7.0"),          # AUTH first, from registered networks too
    (Peer(ip="127.0.0.1"), "alice@localhost", "530 5.7.0"),
])
def test_the_sender_must_be_owned_by_the_login(peer, sender, expected):
    refusal = RULES.check_sender(peer, parse_address(sender) if sender else None)
    assert (str(refusal)[:9] if refusal else None) == expected


@pytest.mark.parametrize("peer, rcpt, expected, key", [
    (ALICE, "bob@example.test", None, "bob@example.test"),
    (ALICE, "postmaster@example.test", None, "admin@localhost"),
    (ALICE, "far@remote.test", None, None),            # anyone, anywhere: the queue
    (ALICE, "far@[192.0.2.9]", None, None),
    (ALICE, "nobody@localhost", "550 5.1.1", None),
    (OFFICE, "bob@example.test", "530 5.7.0", None),
])
def test_any_recipient_once_logged_in(peer, rcpt, expected, key):
    refusal, got = RULES.check_recipient(peer, parse_address(rcpt))
    assert (str(refusal)[:9] if refusal else None, got) == (expected, key)


def test_submission_rules_trust_logins_not_networks():
    assert RULES.auth_requires_tls and not RULES.trusts_networks and RULES.message_checks == ()


# -- config ---------------------------------------------------------------------------

def test_submission_is_off_by_default_and_takes_empty_lists():
    assert (Config().submission.listen, Config().submission.tls_listen) == ((), ())
    cfg = from_mapping({"submission": {"listen": [], "tls_listen": ["0.0.0.0:465", "[::]:465"]}})
    assert cfg.submission.listen == () and cfg.submission.tls_listen == (Endpoint("0.0.0.0", 465),
                                                                         Endpoint("::", 465))
    with pytest.raises(ConfigError, match=r"^smtp\.listen: at least one address"):
        from_mapping({"smtp": {"listen": []}})     # port 25's rule stays


@pytest.mark.parametrize("body, message", [
    ({"listen": "0.0.0.0:587"}, "submission.listen: expected a list of strings"),
    ({"tls_listen": ["localhost:465"]}, "submission.tls_listen: 'localhost' is not an IP address"),
    ({"tls_listen": ["0.0.0.0"]}, "submission.tls_listen: missing port"),
    ({"max_connections": 5}, "submission.max_connections: unknown key"),
])
def test_submission_config_errors_name_the_key(body, message):
    with pytest.raises(ConfigError) as info:
        from_mapping({"submission": body})
    assert str(info.value).startswith(message)


def test_mailtui_dns_srv_records_follow_the_submission_ports():
    def srv(config: Config) -> dict[str, str]:
        return {r.name: r.value for r in expected(config, "example.test", [], "") if r.rtype == "SRV"}

    on = from_mapping({"server": {"hostname": "mail.test", "local_domains": ["example.test"]},
                       "submission": {"listen": ["0.0.0.0:2587"], "tls_listen": ["0.0.0.0:2465"]}})
    assert srv(on)["_submission._tcp.example.test"] == "0 1 2587 mail.test"
    assert srv(on)["_submissions._tcp.example.test"] == "0 1 2465 mail.test"
    off = from_mapping({"server": {"hostname": "mail.test", "local_domains": ["example.test"]}})
    assert srv(off)["_submissions._tcp.example.test"] == "0 1 465 mail.test"


def test_no_submission_listener_unless_configured(server):
    assert {li.proto for li in server.core.listeners} == {"smtp", "pop3", "imap"}


# -- both ports over smtplib --------------------------------------------------------------

@pytest.fixture
def sub(tmp_path, caplog):
    """Submission on both ports; loopback is a registered network (which must not be enough here)."""
    srv = start_server(tmp_path, submission=SUBMISSION, delivery={"retry_intervals": [3600]})
    srv.add_client("loopback", "127.0.0.0/8")
    for box in ("alice@localhost", "bob@localhost", "postmaster@localhost"):
        srv.add_mailbox(box)
    try:
        yield srv
    finally:
        srv.stop()
    # An exception in connection_made/lost is only logged by asyncio, and the client may never notice.
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()


def features(conn: smtplib.SMTP) -> str:
    code, text = conn.ehlo("client.test")
    assert code == 250
    return text.decode().upper()


def test_starttls_port_wants_tls_then_auth_then_the_users_own_address(sub):
    with smtplib.SMTP("127.0.0.1", sub.submission_port, timeout=10) as c:
        feats = features(c)
        assert "STARTTLS" in feats and "AUTH" not in feats
        assert c.docmd("AUTH", "PLAIN AGFsaWNlQGxvY2FsaG9zdABj")[0] == 538    # no password before TLS
        code, text = c.mail("alice@localhost")
        assert (code, text) == (530, b"5.7.0 Authentication required")        # the network is no login
        c.starttls(context=tls_context())
        feats = features(c)
        assert "STARTTLS" not in feats and "AUTH LOGIN PLAIN" in feats
        assert c.mail("alice@localhost")[0] == 530
        c.login("alice@localhost", PASSWORD)
        for sender in ("bob@localhost", "alice@remote.test", ""):
            code, text = c.mail(sender)
            assert (code, text[:5]) == (553, b"5.7.1"), sender
        assert c.mail("alice@localhost")[0] == 250
        assert c.rcpt("bob@localhost")[0] == 250
        assert c.rcpt("nobody@localhost")[:2] == (550, b"5.1.1 <nobody@localhost>: no such user here")
        assert c.rcpt("far@remote.test")[0] == 250
        assert c.data(MSG)[0] == 250
    [stored] = sub.maildir_files("bob@localhost")
    data = stored.read_bytes()
    assert data.startswith(b"Received: from client.test ([127.0.0.1])") and data.endswith(MSG)
    assert b"with ESMTPSA id" in data
    [entry] = sub.call(sub.core.queue.items)
    assert entry.sender == "alice@localhost" and [r.address for r in entry.recipients] == ["far@remote.test"]


def test_implicit_tls_port_offers_auth_at_once_and_no_starttls(sub):
    with smtplib.SMTP_SSL("127.0.0.1", sub.submissions_port, timeout=10, context=tls_context()) as c:
        assert isinstance(c.sock, ssl.SSLSocket) and c.sock.version() in ("TLSv1.2", "TLSv1.3")
        feats = features(c)
        assert "STARTTLS" not in feats and "AUTH LOGIN PLAIN" in feats
        assert c.docmd("STARTTLS")[0] == 554                              # already inside TLS
        assert c.mail("alice@localhost")[0] == 530
        c.login("alice@localhost", PASSWORD)
        assert c.sendmail("alice@localhost", ["bob@localhost"], MSG) == {}
    [stored] = sub.maildir_files("bob@localhost")
    assert b"with ESMTPSA id" in stored.read_bytes()


def test_the_postmaster_sends_as_postmaster_of_every_local_domain(sub):
    with smtplib.SMTP_SSL("127.0.0.1", sub.submissions_port, timeout=10, context=tls_context()) as c:
        c.login("postmaster@localhost", PASSWORD)
        assert c.sendmail("postmaster@example.test", ["bob@localhost"], MSG) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.sendmail("alice@localhost", ["bob@localhost"], MSG)
        assert refused.value.smtp_code == 553
    assert len(sub.maildir_files("bob@localhost")) == 1


def test_port_25_keeps_its_own_rules_beside_submission(sub):
    with smtplib.SMTP("127.0.0.1", sub.smtp_port, timeout=10) as c:   # a registered network relays
        c.ehlo("client.test")
        assert c.sendmail("anyone@remote.test", ["bob@localhost"], MSG) == {}
    opened = sub.events_of(ConnectionOpened)
    assert [(e.proto, e.session[0], e.client) for e in opened] == [("smtp", "S", "loopback")]


# -- what the console and the logs see ----------------------------------------------------

def test_events_name_the_service_and_the_console_tells_them_apart(sub):
    with smtplib.SMTP_SSL("127.0.0.1", sub.submissions_port, timeout=10, context=tls_context()) as c:
        c.login("alice@localhost", PASSWORD)
        c.sendmail("alice@localhost", ["bob@localhost"], MSG)
        with pytest.raises(smtplib.SMTPSenderRefused):
            c.sendmail("bob@localhost", ["bob@localhost"], MSG)
    sub.wait_for(lambda: sub.events_of(ConnectionClosed), what="the session's end")
    [opened] = sub.events_of(ConnectionOpened)
    assert opened.proto == "submission" and opened.session.startswith("M") and not opened.registered
    assert opened.client == ""                       # networks mean nothing here: no "client loopback"
    session = opened.session
    assert any(e.tls for e in sub.events_of(SessionChanged) if e.session == session)
    assert [e.proto for e in sub.events_of(AuthSucceeded)] == ["submission"]
    [accepted] = sub.events_of(MessageAccepted)
    assert (accepted.proto, accepted.session) == ("submission", session)
    [refused] = sub.events_of(ClientRefused)
    assert (refused.proto, refused.stage, refused.reply[:9]) == ("submission", "mail", "553 5.7.1")

    model = ConsoleModel()
    model.apply(list(sub.events))
    row = model.sessions[f"submission:{session}"]
    assert (row.login, row.client, row.tls, row.messages, row.can_register) == \
        ("alice@localhost", "", True, 1, False)
    lines = [describe(e) for e in sub.events]
    assert f"{session} submission connect from 127.0.0.1" in lines
    assert f"{session} submission logged in as alice@localhost" in lines
    assert "SUBMISSIONS listening on" in " ".join(line for line in lines if line)

    totals = sub.core.stats.totals                  # what mailtui status and the metrics report
    assert (totals.sessions["submission"], totals.sessions["smtp"], totals.accepted) == (1, 0, 1)

    logged = [e for e in sub.call(sub.core.store.recent, "connections") if e["session"] == session]
    assert logged[0]["proto"] == "submission" and logged[0]["tls"] is True
    assert logged[0]["client"] == "login alice@localhost"


def test_submission_sessions_are_counted_apart_from_port_25(tmp_path):
    srv = start_server(tmp_path, submission=SUBMISSION, smtp={"listen": ["127.0.0.1:0"],
                                                              "max_connections_per_ip": 1})
    try:
        with Dialog(srv.smtp_port) as port25:
            assert port25.greeting.startswith(b"220")
            with Dialog(srv.submission_port) as first:
                assert first.greeting.startswith(b"220")     # port 25's slot is not submission's
                with Dialog(srv.submission_port) as second:
                    assert second.greeting.startswith(b"421 4.7.0 Too many connections from")
    finally:
        srv.stop()


def test_config_with_only_implicit_tls_binds_only_that(tmp_path):
    srv = start_server(tmp_path, submission={"listen": [], "tls_listen": ["127.0.0.1:0"]})
    try:
        assert sorted(li.proto for li in srv.core.listeners) == ["imap", "pop3", "smtp", "submissions"]
        with Dialog(srv.submissions_port, tls=tls_context()) as c:
            assert c.greeting.startswith(b"220 mail.test ESMTP")
    finally:
        srv.stop()


def test_submission_wants_tls_for_auth_even_where_port_25_does_not(tmp_path):
    srv = start_server(tmp_path, submission=SUBMISSION, smtp={"listen": ["127.0.0.1:0"], "auth_require_tls": False})
    try:
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
            assert "AUTH LOGIN PLAIN" in features(c)          # port 25, as configured
        with smtplib.SMTP("127.0.0.1", srv.submission_port, timeout=10) as c:
            assert "AUTH" not in features(c)                  # submission: never before STARTTLS
            assert c.docmd("AUTH", "LOGIN")[0] == 538
    finally:
        srv.stop()
