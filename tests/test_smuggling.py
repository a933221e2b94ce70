"""SMTP smuggling: only <CRLF>.<CRLF> ends DATA, in and out.

Inbound, every bare-LF / bare-CR imitation of the end marker stays inside the
one message: the commands hidden behind it are never run as a second
transaction. Outbound, relayed mail and bounces leave with CRLF line endings
only and correct dot-stuffing, so no receiver can be fooled either. The
inbound tests run on port 25 and on both submission ports (STARTTLS and
implicit TLS): one session, three rule sets.
"""

from __future__ import annotations

import pytest
from dnsworld import A_ONLY_HOST, MX_HOST_2, free_port
from harness import PASSWORD, SUBMISSION, RunningServer, make_config, tls_context
from wire import SERVICES, Dialog, RawMX, bare_line_ends, data_section, ready_dialog, stuff, unstuff

from mailtui.events import Bounced, DeliveredRemote, MessageAccepted

pytestmark = pytest.mark.timeout(60)

FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n.\r", b"\r.\n",
             b"\r\n.\r\r\n", b"\r\n.\n\r\n"]
SMUGGLED = (b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsecond message\r\n")


@pytest.fixture
def server(tmp_path):
    srv = RunningServer(make_config(tmp_path / "data", submission=SUBMISSION)).start()
    srv.add_client("loopback", "127.0.0.0/8")  # registered: a smuggled relay would go out
    srv.add_mailbox("bob@localhost")
    try:
        yield srv
    finally:
        srv.stop()


def ready(srv: RunningServer, service: str) -> tuple[Dialog, str]:
    return ready_dialog(srv, service, "bob@localhost", PASSWORD, tls_context())


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=lambda b: b.hex())
def test_fake_end_of_data_stays_inside_the_one_message(server, fake_end, service):
    c, sender = ready(server, service)
    with c:
        c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n".encode())
        assert [c.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        c.send(b"Subject: one\r\n\r\nfirst" + fake_end + SMUGGLED + b".\r\n")
        assert c.reply().startswith(b"250 2.0.0")
        assert c.cmd("QUIT").startswith(b"221")  # no reply left over from a hidden transaction
    [stored] = [p.read_bytes() for p in server.maildir_files("bob@localhost")]
    assert b"Subject: smuggled" in stored and b"MAIL FROM:<evil@remote.test>" in stored
    assert not bare_line_ends(stored)
    assert len(server.events_of(MessageAccepted)) == 1
    assert len(server.core.queue) == 0  # the hidden relay to victim@remote.test never happened


@pytest.mark.parametrize("service", SERVICES)
def test_pipelined_commands_after_a_real_end_are_commands(server, service):
    """The converse: after <CRLF>.<CRLF> the next bytes are commands again."""
    c, sender = ready(server, service)
    with c:
        c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n".encode())
        [c.reply() for _ in range(3)]
        c.send(b"Subject: one\r\n\r\nfirst\r\n.\r\nRSET\r\nNOOP\r\n")
        assert [c.reply()[:3] for _ in range(3)] == [b"250", b"250", b"250"]
    assert len(server.maildir_files("bob@localhost")) == 1


# -- outbound: what relayed mail and bounces look like on the wire ----------------------

@pytest.fixture
def relay(tmp_path, dns_world):
    """A server that delivers to RawMXs on 127.0.0.3 (mx2.mx.test) and 127.0.0.4 (aonly.test)."""
    port = free_port(("127.0.0.1", "127.0.0.2", MX_HOST_2, A_ONLY_HOST))
    config = make_config(tmp_path / "data", submission=SUBMISSION,
                         dns={"nameservers": [str(dns_world.endpoint)], "timeout": 1.0},
                         delivery={"remote_port": port, "retry_intervals": [0.5], "max_attempts": 5,
                                   "connect_timeout": 1.0, "command_timeout": 3.0})
    mx2, aonly = RawMX(MX_HOST_2, port).start(), RawMX(A_ONLY_HOST, port).start()
    srv = RunningServer(config).start()
    srv.add_client("loopback", "127.0.0.0/8")
    srv.add_mailbox("alice@localhost")
    try:
        yield srv, mx2, aonly
    finally:
        srv.stop()
        mx2.stop()
        aonly.stop()


# What the client sends after DATA (dot-stuffed where it has CRLF lines, but
# also with bare LF and bare CR, a fake end marker and a hidden MAIL command),
# and what must be stored and relayed for it.
SENT = (b"Subject: dots and line ends\r\n\r\n"
        b"..\r\n...\r\n..x\r\n"
        b"bare lf\n.\nMAIL FROM:<evil@remote.test>\n"
        b"bare cr\rend\r\n")
STORED_BODY = (b"Subject: dots and line ends\r\n\r\n"
               b".\r\n..\r\n.x\r\n"
               b"bare lf\r\n.\r\nMAIL FROM:<evil@remote.test>\r\n"
               b"bare cr\r\nend\r\n")


@pytest.mark.parametrize("service", SERVICES)
def test_relayed_mail_is_crlf_and_dot_stuffed_on_the_wire(relay, service):
    """Submitted or relayed, a message for a remote domain is queued and leaves clean."""
    srv, mx2, _ = relay
    c, sender = ready_dialog(srv, service, "alice@localhost", PASSWORD, tls_context())
    with c:
        c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<far@mx.test>\r\nDATA\r\n".encode())
        [c.reply() for _ in range(3)]
        c.send(SENT + b".\r\n")
        assert c.reply().startswith(b"250 2.0.0")
    [tx] = mx2.wait_for(1)
    srv.wait_for(lambda: srv.events_of(DeliveredRemote), what="delivery")
    assert tx.sender == sender and tx.rcpts == ["far@mx.test"]
    assert (b"with ESMTPSA id" in tx.raw) == (service != "smtp")
    section = data_section(tx)
    assert not bare_line_ends(tx.raw)
    assert b"\r\n.\r\n" not in section and not section.startswith(b".\r\n")  # no early end
    assert section.endswith(stuff(STORED_BODY))
    assert unstuff(section).startswith(b"Received: from client.test ([127.0.0.1])")
    assert len(mx2.transactions) == 1  # the hidden MAIL never became a transaction


def test_bounce_is_crlf_and_dot_stuffed_on_the_wire(relay):
    srv, mx2, aonly = relay
    with Dialog(srv.smtp_port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<alice@aonly.test>\r\nRCPT TO:<bad@mx.test>\r\nDATA\r\n")
        [c.reply() for _ in range(3)]
        c.send(b"Subject: bounce me\r\n..X-Dot: dotted header\r\nX-Bare: lf\n\r\nbody\n.\n\r\n.\r\n")
        assert c.reply().startswith(b"250 2.0.0")
    [bounce] = aonly.wait_for(1)
    srv.wait_for(lambda: srv.events_of(Bounced), what="bounce event")
    assert mx2.transactions == []  # refused at RCPT
    assert bounce.sender == "" and bounce.rcpts == ["alice@aonly.test"]
    section = data_section(bounce)
    assert not bare_line_ends(bounce.raw)
    assert b"\r\n.\r\n" not in section
    assert b"\r\n..X-Dot: dotted header\r\n" in section  # the returned header, stuffed
    text = unstuff(section)
    assert b"multipart/report" in text and b"bad@mx.test" in text
