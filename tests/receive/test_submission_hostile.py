"""Hostile clients on the submission ports: stalled handshakes, plaintext where TLS is due,
injection after STARTTLS, and port 25's message limits on every service."""

from __future__ import annotations

import logging
import socket
import ssl
import time

import pytest
from conftest import start_server
from harness import PASSWORD, SUBMISSION, tls_context
from wire import SERVICES, Dialog, auth_plain, ready_dialog

from mailtui.events import AuthFailed, ConnectionOpened, MessageAccepted

pytestmark = pytest.mark.timeout(60)

MSG = b"Subject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def quick(tmp_path, caplog):
    """Submission with an idle timeout (and so a TLS handshake timeout) of one second, one slot per IP."""
    srv = start_server(tmp_path, submission=SUBMISSION, smtp={"listen": ["127.0.0.1:0"], "idle_timeout": 1.0,
                                                              "max_connections_per_ip": 1,
                                                              "max_message_size": 4000})
    srv.add_client("loopback", "127.0.0.0/8")
    srv.add_mailbox("bob@localhost")
    try:
        yield srv
    finally:
        srv.stop()
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()     # nothing went wrong inside a callback


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (which sends nothing more); fails after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize("opening", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
                         ids=["silent", "half a ClientHello"])
def test_a_handshake_never_finished_is_dropped_and_holds_no_slot(quick, opening):
    with socket.create_connection(("127.0.0.1", quick.submissions_port), timeout=10) as stalled:
        stalled.sendall(opening)
        # One slot per IP, and the stalled client (same IP) is not in it: a real client gets in.
        with Dialog(quick.submissions_port, tls=tls_context()) as c:
            assert c.greeting.startswith(b"220 mail.test ESMTP")
            c.ehlo()
            assert c.cmd(auth_plain("bob@localhost", PASSWORD)).startswith(b"235")
        assert closed_within(stalled, 8.0) < 5.0       # the handshake timeout (1 s here), not never
    assert [e.proto for e in quick.events_of(ConnectionOpened)] == ["submission"]   # only the real one
    assert quick.core.submission.sessions == set()


def test_plaintext_on_the_implicit_tls_port_gets_no_greeting(quick):
    with socket.create_connection(("127.0.0.1", quick.submissions_port), timeout=10) as sock:
        sock.sendall(b"EHLO client.test\r\nAUTH PLAIN AGJvYkBsb2NhbGhvc3QAeA==\r\n")
        sock.settimeout(5)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"220" not in received and b"235" not in received      # nothing said in the clear
    assert not quick.events_of(AuthFailed) and not quick.events_of(ConnectionOpened)


def test_a_tls_client_on_the_starttls_port_is_a_clear_failure_not_a_hang(quick):
    with pytest.raises((ssl.SSLError, ConnectionError, socket.timeout)):
        with Dialog(quick.submission_port, tls=tls_context(), timeout=5):
            pass


def test_plaintext_pipelined_after_starttls_is_discarded(quick):
    """CVE-2011-0411 on submission: an AUTH and a MAIL sent with STARTTLS never run inside TLS."""
    with Dialog(quick.submission_port) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\n" + auth_plain("bob@localhost", PASSWORD).encode() + b"\r\n"
               b"MAIL FROM:<bob@localhost>\r\nRCPT TO:<far@remote.test>\r\n")
        assert c.reply().startswith(b"220")
        c.sock = tls_context().wrap_socket(c.sock)
        c.file = c.sock.makefile("rb")
        assert c.cmd("NOOP").startswith(b"250")             # the first reply under TLS is ours
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@localhost>").startswith(b"530 5.7.0")   # the injected AUTH is gone
    assert len(quick.core.queue) == 0 and not quick.events_of(MessageAccepted)


def test_auth_before_starttls_is_refused_and_no_password_is_checked(quick):
    with Dialog(quick.submission_port) as c:
        c.ehlo()
        assert c.cmd(auth_plain("bob@localhost", "a guess")).startswith(b"538 5.7.11")
        assert c.cmd("AUTH LOGIN").startswith(b"538 5.7.11")
    assert not quick.events_of(AuthFailed)


def test_failed_logins_on_submission_count_in_the_shared_throttle(quick):
    with Dialog(quick.submissions_port, tls=tls_context()) as c:
        c.ehlo()
        assert c.cmd(auth_plain("bob@localhost", "wrong")).startswith(b"535 5.7.8")
    [failed] = quick.events_of(AuthFailed)
    assert failed.proto == "submission" and failed.failures == 1
    assert quick.core.logins is quick.core.submission.logins is quick.core.smtp.logins


HOPS = b"".join(b"Received: from hop%d by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i for i in range(51))


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("body, refusal", [
    (b"Subject: big\r\n\r\n" + b"y" * 70 * 60 + b"\r\n", b"552 5.3.4"),
    (HOPS + MSG, b"554 5.4.6"),
    (b"Subject: long\r\n\r\n" + b"z" * 999 + b"\r\n", b"500 5.5.6"),
], ids=["too big", "mail loop", "long line"])
def test_message_limits_hold_on_every_service(quick, service, body, refusal):
    c, sender = ready_dialog(quick, service, "bob@localhost", PASSWORD, tls_context())
    with c:
        assert c.cmd(f"MAIL FROM:<{sender}> SIZE=5000").startswith(b"552 5.3.4")   # declared too big
        c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n".encode())
        assert [c.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        assert c.cmd(body + b".").startswith(refusal)
        assert c.cmd("NOOP").startswith(b"250")          # the session goes on
    assert quick.maildir_files("bob@localhost") == []
