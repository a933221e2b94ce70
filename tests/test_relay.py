"""No open relay: every address trick from an unregistered client is refused before DATA.

The server runs in its MX role (``policy.accept_unregistered_for_local``), the
most exposed one: strangers may send to local mailboxes, so every trick that
could make a stranger's mail leave the machine is tried here. Nothing may be
queued, and a refused recipient never lets the client reach DATA.
"""

from __future__ import annotations

import base64

import pytest
from harness import PASSWORD, RunningServer, make_config, tls_context
from wire import Dialog

from mailtui.events import AuthFailed, ClientRefused, MessageAccepted

# RCPT TO arguments that name (or try to smuggle) a remote mailbox through a
# local domain, or a domain that only looks local.
TRICKS = [
    "<victim%remote.test@localhost>",                  # percent hack
    "<victim%remote.test@example.test>",
    "<@localhost:victim@remote.test>",                 # source route (RFC 5321 C)
    "<@localhost,@example.test:victim@remote.test>",
    '<"victim@remote.test"@localhost>',                # quoted local part holding an @
    '<"victim%remote.test"@localhost>',
    '<"victim@remote.test">',
    "<remote.test!victim@localhost>",                  # bang path
    "<remote.test!victim>",
    "<victim@remote.test@localhost>",                  # two @
    "<victim@[127.0.0.1]>",                            # IP literals, even our own address
    "<postmaster@[127.0.0.1]>",
    "<victim@[IPv6:::1]>",
    "<victim@[10.1.2.3]>",
    "<victim@evil-localhost>",                         # ends with a local domain
    "<victim@notexample.test>",
    "<victim@localhost.remote.test>",                  # begins with a local domain
    "<victim@example.test.remote.test>",
    "<victim@localhost.>",                             # trailing dot
    "<victim@localhost..remote.test>",
    "<victim@remote.test>",                            # plain relay
    "<victim@REMOTE.TEST>",
    "<victim@remote.test> NOTIFY=NEVER",               # unknown parameter
    "victim@remote.test",                              # no brackets
    "<victim@remote.test",
    "<victim\\@remote.test@localhost>",
    "<victim@remote.test\x00@localhost>",              # NUL
    "<victim@local\u0127host>",                        # look-alike (non-ASCII) domain
]


@pytest.fixture(scope="module")
def mx_server(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("relay") / "data",
                         policy={"accept_unregistered_for_local": True})
    srv = RunningServer(config).start()
    srv.add_mailbox("bob@localhost")
    srv.add_mailbox("alice@localhost")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def strict_server(tmp_path):
    srv = RunningServer(make_config(tmp_path / "data", dns={"nameservers": ["127.0.0.1:1"], "timeout": 0.2},
                                    delivery={"retry_intervals": [3600]})).start()
    srv.add_mailbox("bob@localhost")
    try:
        yield srv
    finally:
        srv.stop()


def nothing_queued(srv: RunningServer) -> None:
    assert len(srv.core.queue) == 0
    assert not list((srv.data_dir / "spool").glob("*"))


def code(reply: bytes) -> int:
    return int(reply[:3])


@pytest.mark.parametrize("rcpt", TRICKS)
def test_relay_trick_refused_before_data(mx_server, rcpt):
    with Dialog(mx_server.smtp_port) as c:
        c.ehlo("stranger.test")
        assert code(c.cmd("MAIL FROM:<someone@remote.test>")) == 250
        reply = c.cmd(b"RCPT TO:" + rcpt.encode("utf-8"))
        assert reply[:1] == b"5", reply
        # With no accepted recipient there is no transaction to smuggle data into.
        assert c.cmd("DATA")[:3] in (b"554", b"503")
        assert code(c.cmd("RSET")) == 250
    nothing_queued(mx_server)


def test_unregistered_client_may_still_reach_local_mailboxes(mx_server):
    """The refusals above are about the tricks, not a server that refuses everything."""
    with Dialog(mx_server.smtp_port) as c:
        c.ehlo("stranger.test")
        assert code(c.cmd("MAIL FROM:<someone@remote.test>")) == 250
        for good in ("<bob@localhost>", "<BOB@LocalHost>", "<postmaster@example.test>", "<Postmaster>"):
            assert code(c.cmd(f"RCPT TO:{good}")) == 250, good
        assert code(c.cmd("DATA")) == 354
        assert c.cmd(b"Subject: hi\r\n\r\nhello\r\n.")[:3] == b"250"
    nothing_queued(mx_server)


def test_rcpt_to_bare_postmaster_is_accepted(strict_server):
    """RFC 5321 4.5.1: <Postmaster> without a domain must be accepted."""
    strict_server.add_client("loopback", "127.0.0.0/8")
    with Dialog(strict_server.smtp_port) as c:
        c.ehlo()
        assert code(c.cmd("MAIL FROM:<a@remote.test>")) == 250
        assert code(c.cmd("RCPT TO:<Postmaster>")) == 250
        assert code(c.cmd("DATA")) == 354
        assert code(c.cmd(b"Subject: to the postmaster\r\n\r\nhi\r\n.")) == 250
    assert len(strict_server.maildir_files("postmaster@localhost")) == 1
    nothing_queued(strict_server)


@pytest.mark.parametrize("sender", ["<bob@localhost>", "<BOB@LOCALHOST>", "<postmaster@example.test>",
                                    '<"bob"@localhost>', "<nobody@example.test>"])
def test_spoofed_local_sender_refused(mx_server, sender):
    with Dialog(mx_server.smtp_port) as c:
        c.ehlo("stranger.test")
        reply = c.cmd(f"MAIL FROM:{sender}")
        assert reply.startswith(b"550 5.7.1"), reply
        assert code(c.cmd("RCPT TO:<bob@localhost>")) == 503


@pytest.mark.parametrize("helo", ["mail.test", "MAIL.TEST.", "localhost", "example.test"])
def test_helo_naming_this_server_refused(mx_server, helo):
    with Dialog(mx_server.smtp_port) as c:
        for verb in ("HELO", "EHLO"):
            c.cmd(f"{verb} {helo}")
            reply = c.cmd("MAIL FROM:<someone@remote.test>")
            assert reply.startswith(b"550 5.7.1") and b"HELO" in reply, reply


def test_xclient_and_proxy_headers_change_nothing(mx_server):
    """Neither XCLIENT nor a PROXY protocol header may make a client look like someone else."""
    before = len(mx_server.maildir_files("bob@localhost"))
    with Dialog(mx_server.smtp_port, greeting=False) as c:
        c.send(b"PROXY TCP4 10.9.8.7 127.0.0.1 4242 25\r\n")
        assert c.reply().startswith(b"220 ")
        assert c.reply()[:3] == b"500"  # the PROXY line is just an unknown command
        c.ehlo("stranger.test")
        for line in ("XCLIENT ADDR=127.0.0.1 NAME=mail.test LOGIN=bob@localhost",
                     "XFORWARD ADDR=127.0.0.1"):
            assert c.cmd(line)[:1] == b"5"
        assert code(c.cmd("MAIL FROM:<someone@remote.test>")) == 250
        assert c.cmd("RCPT TO:<victim@remote.test>").startswith(b"554 5.7.1")
        assert code(c.cmd("RCPT TO:<bob@localhost>")) == 250
        assert code(c.cmd("DATA")) == 354
        assert code(c.cmd(b"Subject: who am I\r\n\r\nhi\r\n.")) == 250
    nothing_queued(mx_server)
    newest = max(mx_server.maildir_files("bob@localhost"), key=lambda p: p.stat().st_mtime_ns)
    assert len(mx_server.maildir_files("bob@localhost")) == before + 1
    received = newest.read_bytes().split(b"\r\n\r\n")[0]
    assert b"([127.0.0.1])" in received and b"10.9.8.7" not in received
    assert b"with ESMTP id" in received  # not ESMTPA: no login was taken over


def test_relay_after_failed_auth_refused(mx_server):
    with Dialog(mx_server.smtp_port) as c:
        c.ehlo("stranger.test")
        assert c.cmd("STARTTLS")[:3] == b"220"
        c.sock = tls_context().wrap_socket(c.sock)
        c.file = c.sock.makefile("rb")
        c.ehlo("stranger.test")
        for secret in ("\0alice@localhost\0wrong password", f"bob@localhost\0alice@localhost\0{PASSWORD}x",
                       "\0alice@localhost\0"):
            token = base64.b64encode(secret.encode()).decode()
            assert c.cmd(f"AUTH PLAIN {token}").startswith(b"535 5.7.8")
        assert code(c.cmd("MAIL FROM:<alice@localhost>")) == 550  # still a stranger
        assert code(c.cmd("MAIL FROM:<someone@remote.test>")) == 250
        assert c.cmd("RCPT TO:<victim@remote.test>").startswith(b"554 5.7.1")
        assert c.cmd("DATA")[:3] == b"554"
    nothing_queued(mx_server)
    assert any(e.login == "alice@localhost" for e in mx_server.events_of(AuthFailed))


def test_strict_mode_refuses_strangers_at_mail_whatever_they_try(strict_server):
    """Without the MX role an unregistered client gets no transaction at all."""
    with Dialog(strict_server.smtp_port) as c:
        c.ehlo("stranger.test")
        for sender in ("<>", "<someone@remote.test>", "<bob@localhost>", "<x@[127.0.0.1]>"):
            assert c.cmd(f"MAIL FROM:{sender}").startswith(b"550 5.7.1"), sender
        for rcpt in TRICKS[:6] + ["<bob@localhost>"]:
            assert code(c.cmd(f"RCPT TO:{rcpt}")) == 503
        assert code(c.cmd("DATA")) == 503
    assert strict_server.maildir_files("bob@localhost") == []
    nothing_queued(strict_server)
    assert not strict_server.events_of(MessageAccepted)
    assert {e.stage for e in strict_server.events_of(ClientRefused)} == {"mail"}


def test_registered_client_relays_tricky_addresses_to_the_parsed_domain(strict_server):
    """For a registered client the one parser decides the domain; nothing re-reads the text."""
    strict_server.add_client("loopback", "127.0.0.0/8")
    with Dialog(strict_server.smtp_port) as c:
        c.ehlo()
        assert code(c.cmd("MAIL FROM:<a@remote.test>")) == 250
        assert code(c.cmd('RCPT TO:<"x@localhost"@remote.test>')) == 250
        assert code(c.cmd("RCPT TO:<bob%localhost@remote.test>")) == 250
        assert code(c.cmd("DATA")) == 354
        assert code(c.cmd(b"Subject: x\r\n\r\nx\r\n.")) == 250
    assert strict_server.maildir_files("bob@localhost") == []
    [item] = strict_server.call(strict_server.core.queue.items)
    assert [r.address for r in item.recipients] == ['"x@localhost"@remote.test', "bob%localhost@remote.test"]
