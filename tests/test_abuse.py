"""Protocol abuse over real sockets: bad order, bad bytes, floods, other protocols.

Each test is one kind of hostile client. What is checked is what the server
promises: a clear refusal (the RFC 5321 reply and an RFC 3463 code), a closed
connection where the error budget says so, nothing stored or relayed that
should not be, and a server that goes on serving the next client.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time

import pytest
from harness import PASSWORD, RunningServer, make_config, tls_context
from wire import Dialog, auth_plain

from mailtui.events import AuthFailed, ConnectionClosed, MessageAccepted

pytestmark = pytest.mark.timeout(60)

MSG = b"Subject: hi\r\n\r\nhello\r\n"


def start(tmp_path, **sections) -> RunningServer:
    srv = RunningServer(make_config(tmp_path / "data", **sections)).start()
    srv.add_client("loopback", "127.0.0.0/8")
    srv.add_mailbox("bob@localhost")
    return srv


@pytest.fixture
def server(tmp_path):
    srv = start(tmp_path, smtp={"listen": ["127.0.0.1:0"], "error_budget": 50})
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def strict(tmp_path):
    """Default error budget, idle timeout of one second."""
    srv = start(tmp_path, smtp={"listen": ["127.0.0.1:0"], "idle_timeout": 1.0, "error_budget": 10,
                                "auth_failure_delay": 0.1},
                pop3={"listen": ["127.0.0.1:0"], "idle_timeout": 1.0})
    try:
        yield srv
    finally:
        srv.stop()


def send_message(port: int, rcpt: str = "bob@localhost", body: bytes = MSG) -> bytes:
    with Dialog(port) as c:
        c.ehlo()
        c.send(f"MAIL FROM:<a@remote.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        replies = [c.reply() for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354"], replies
        return c.cmd(body + b".")


def still_serving(srv: RunningServer) -> None:
    before = len(srv.maildir_files("bob@localhost"))
    assert send_message(srv.smtp_port).startswith(b"250 2.0.0")
    assert len(srv.maildir_files("bob@localhost")) == before + 1


def starttls(c: Dialog) -> None:
    assert c.cmd("STARTTLS").startswith(b"220")
    c.sock = tls_context().wrap_socket(c.sock)
    c.file = c.sock.makefile("rb")


# -- order and syntax ----------------------------------------------------------------

def test_commands_out_of_order(server):
    script = [
        ("MAIL FROM:<a@remote.test>", b"503 5.5.1"),     # before HELO/EHLO
        ("RCPT TO:<bob@localhost>", b"503 5.5.1"),
        ("DATA", b"503 5.5.1"),
        ("AUTH PLAIN AGFAYg==", b"503 5.5.1"),
        ("EHLO client.test", b"250-"),
        ("RCPT TO:<bob@localhost>", b"503 5.5.1"),       # before MAIL
        ("DATA", b"503 5.5.1"),
        ("MAIL FROM:<a@remote.test>", b"250 2.1.0"),
        ("DATA", b"554 5.5.1"),                          # no recipient yet
        ("MAIL FROM:<a@remote.test>", b"503 5.5.1"),     # nested MAIL
        ("RCPT TO:<bob@localhost>", b"250 2.1.5"),
        ("DATA extra", b"501 5.5.4"),
        ("RSET", b"250 2.0.0"),
        ("DATA", b"503 5.5.1"),                          # RSET ended the transaction
        ("RCPT TO:<bob@localhost>", b"503 5.5.1"),
        ("HELO client.test", b"250 "),
        ("MAIL FROM:<a@remote.test> BODY=8BITMIME", b"501 5.5.4"),  # parameters need EHLO
    ]
    with Dialog(server.smtp_port) as c:
        for line, expected in script:
            reply = c.cmd(line)
            assert reply.startswith(expected), (line, reply)
    assert server.maildir_files("bob@localhost") == []
    still_serving(server)


@pytest.mark.parametrize("line, expected", [
    (b"EHLO a\x00b", b"501 5.5.4"),
    (b"HELO a\x00b", b"501 5.5.4"),
    (b"EHLO evil\x1b[2J", b"501 5.5.4"),                  # terminal escapes never reach the console
    (b"EHLO " + b"h" * 300, b"501 5.5.4"),
    (b"EHLO not-utf8-\xff\xfe", b"501 5.5.4"),
    (b"MAIL FROM:<a\x00b@remote.test>", b"501 5.5.2"),
    (b"MAIL FROM:<a@remote.test>\x00 SIZE=10", b"501 5.5.2"),
    (b"NO\x00OP", b"500 5.5.2"),
    (b"\x00", b"500 5.5.2"),
])
def test_nul_and_control_bytes_in_commands(server, line, expected):
    with Dialog(server.smtp_port) as c:
        if not line.startswith((b"EHLO", b"HELO")):
            c.ehlo()
        assert c.cmd(line).startswith(expected)
        assert c.cmd("NOOP").startswith(b"250")
    assert all("\x00" not in e.helo and "\x1b" not in e.helo
               for e in server.events if hasattr(e, "helo"))


def test_rfc5321_size_limits(server):
    def domain(n: int) -> str:  # a domain of 133 + n octets
        return ".".join(["d" * 63, "e" * 63, "f" * n, "test"])
    local64 = "l" * 64
    path256 = f"<{local64}@{domain(56)}>"
    assert len(path256) == 256
    cases = [
        (f"MAIL FROM:<{local64}@remote.test>", 250),             # local part: 64 octets
        (f"MAIL FROM:<{local64}l@remote.test>", 553),            # 65
        (f"MAIL FROM:{path256}", 250),                           # path: 256 octets
        (f"MAIL FROM:<{local64}@{domain(57)}>", 501),            # 257
        (f"MAIL FROM:<a@{'x' * 63}.test>", 250),                 # a label of 63
        (f"MAIL FROM:<a@{'x' * 64}.test>", 553),                 # 64
        (f"RCPT TO:<{local64}l@remote.test>", 553),
        (f"RCPT TO:<{local64}@{domain(57)}>", 501),
        ("NOOP " + "x" * 600, 500),                              # command line over 512
        ("MAIL FROM:<a@remote.test> " + "X-PAD=" + "x" * 600, 500),
    ]
    with Dialog(server.smtp_port) as c:
        c.ehlo()
        for line, expected in cases:
            if line.startswith("MAIL"):
                c.cmd("RSET")
            elif line.startswith("RCPT"):
                c.cmd("RSET")
                c.cmd("MAIL FROM:<a@remote.test>")
            reply = c.cmd(line)
            assert int(reply[:3]) == expected, (line[:40], reply)
        reply = c.cmd("NOOP")
        assert reply.startswith(b"250")


# -- floods and other protocols --------------------------------------------------------

def flood(c: Dialog, data: bytes, chunk: int = 1 << 20) -> threading.Thread:
    """Send ``data`` from a thread (the server may hang up half way)."""
    def run() -> None:
        try:
            for i in range(0, len(data), chunk):
                c.sock.sendall(data[i:i + chunk])
        except OSError:
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_16_mib_of_garbage_is_cut_off_by_the_error_budget(strict):
    garbage = os.urandom(16 << 20)
    with Dialog(strict.smtp_port) as c:
        began = time.monotonic()
        thread = flood(c, garbage)
        lines = c.rest()
        thread.join(10)
        assert time.monotonic() - began < 5
    assert lines and lines[-1][:3] in (b"421", b"502"), lines[-3:]
    assert len(lines) <= 11
    still_serving(strict)


def test_16_mib_without_a_line_end_is_one_error(server):
    garbage = os.urandom(16 << 20).replace(b"\n", b"x")
    with Dialog(server.smtp_port) as c:
        began = time.monotonic()
        thread = flood(c, garbage + b"\r\nNOOP\r\n")
        assert c.reply().startswith(b"500 5.5.2")  # command line too long
        assert c.reply().startswith(b"250")
        thread.join(10)
        assert time.monotonic() - began < 15


def test_16_mib_of_data_over_the_size_limit(tmp_path):
    srv = start(tmp_path, smtp={"listen": ["127.0.0.1:0"], "max_message_size": 1 << 20})
    try:
        garbage = os.urandom(16 << 20).replace(b"\r", b"x")
        with Dialog(srv.smtp_port) as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
            [c.reply() for _ in range(3)]
            thread = flood(c, garbage + b"\r\n.\r\n")
            assert c.reply().startswith(b"552 5.3.4")
            thread.join(10)
            assert c.cmd("NOOP").startswith(b"250")  # the session goes on
        assert srv.maildir_files("bob@localhost") == []
        tmp = srv.data_dir / "mail" / "localhost" / "bob" / "tmp"
        assert not tmp.exists() or not list(tmp.iterdir())
        still_serving(srv)
    finally:
        srv.stop()


@pytest.mark.parametrize("verb", ["GET", "POST", "HEAD", "PUT", "DELETE", "CONNECT", "OPTIONS"])
def test_http_request_is_closed(server, verb):
    with Dialog(server.smtp_port) as c:
        c.send(f"{verb} / HTTP/1.1\r\nHost: mail.test\r\n\r\n".encode())
        assert c.reply().startswith(b"421 4.7.0")
        assert c.closed()


def client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mail.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_tls_client_hello_to_the_plaintext_port(strict):
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", strict.smtp_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            tls_context().wrap_socket(raw)  # reads "220 ..." as a TLS record and gives up
    assert time.monotonic() - began < 3
    # A client that sends a ClientHello and waits: the server does not wait with it.
    with Dialog(strict.smtp_port) as c:
        c.send(client_hello())
        assert c.closed(timeout=5)
    assert time.monotonic() - began < 8
    still_serving(strict)


def test_talking_before_the_greeting(tmp_path):
    srv = RunningServer(make_config(tmp_path / "data")).start()  # nobody registered
    try:
        with Dialog(srv.smtp_port, greeting=False) as c:
            c.send(b"EHLO early.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<victim@remote.test>\r\n"
                   b"DATA\r\nSubject: early\r\n\r\n.\r\nQUIT\r\n")
            assert c.reply().startswith(b"220 mail.test")  # the greeting still comes first
            assert c.reply().startswith(b"250-mail.test")
            assert c.reply().startswith(b"550 5.7.1")
            assert c.reply().startswith(b"503")
            assert c.reply().startswith(b"503")
        assert len(srv.core.queue) == 0 and not srv.events_of(MessageAccepted)
    finally:
        srv.stop()


def test_thousands_of_pipelined_commands(server):
    count = 5000
    with Dialog(server.smtp_port) as c:
        c.ehlo()
        thread = flood(c, b"NOOP\r\nRSET\r\n" * count + b"QUIT\r\n", chunk=4096)
        # Meanwhile another client is served at once.
        began = time.monotonic()
        still_serving(server)
        assert time.monotonic() - began < 2
        replies = c.rest()
        thread.join(10)
    assert len(replies) == 2 * count + 1
    assert all(r.startswith(b"250 2.0.0") for r in replies[:-1])
    assert replies[-1].startswith(b"221")


def test_nothing_pipelined_after_the_error_budget_runs(strict):
    """Once the budget is spent and 421 said, a transaction pipelined behind it is not run."""
    with Dialog(strict.smtp_port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<bad\r\n" * 10 + b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@localhost>\r\n"
               b"DATA\r\nSubject: after the budget\r\n\r\nx\r\n.\r\n")
        lines = c.rest()
    assert lines[-1].startswith(b"421 4.7.0")
    assert len(lines) == 11  # ten 501s, then the 421
    assert strict.maildir_files("bob@localhost") == []


# -- STARTTLS and AUTH -----------------------------------------------------------------

def test_starttls_command_injection_is_discarded(server):
    """CVE-2011-0411 / CVE-2024-34083: plaintext pipelined after STARTTLS is dropped."""
    with Dialog(server.smtp_port) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<far@remote.test>\r\n"
               b"DATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n")
        assert c.reply().startswith(b"220")
        c.sock = tls_context().wrap_socket(c.sock)
        c.file = c.sock.makefile("rb")
        assert c.cmd("NOOP").startswith(b"250")  # the first reply under TLS is ours
        assert c.cmd("MAIL FROM:<a@remote.test>").startswith(b"503")  # EHLO again first
        c.ehlo()
        assert c.cmd("RCPT TO:<far@remote.test>").startswith(b"503")  # no transaction survived
        assert c.cmd("STARTTLS")[:3] in (b"554", b"503")  # and no second STARTTLS
    assert len(server.core.queue) == 0 and not server.events_of(MessageAccepted)


def test_failed_auth_is_prompt_then_slowed_and_logged(strict, caplog):
    caplog.set_level(logging.WARNING, logger="mailtui.receive.smtp")
    delay = strict.config.smtp.auth_failure_delay
    took = []
    with Dialog(strict.smtp_port) as c:
        c.ehlo()
        starttls(c)
        c.ehlo()
        for _ in range(3):
            began = time.monotonic()
            assert c.cmd(auth_plain("bob@localhost", "wrong password")).startswith(b"535 5.7.8")
            took.append(time.monotonic() - began)
    assert took[0] < 1.0                                    # prompt
    assert took[1] >= delay * 0.9 and took[2] >= 2 * delay * 0.9
    with Dialog(strict.smtp_port) as c:                     # per client address, not per session
        c.ehlo()
        starttls(c)
        c.ehlo()
        began = time.monotonic()
        assert c.cmd(auth_plain("bob@localhost", PASSWORD)).startswith(b"235")
        assert time.monotonic() - began >= 4 * delay * 0.9
    assert [e.failures for e in strict.events_of(AuthFailed)] == [1, 2, 3]
    assert caplog.text.count("SMTP AUTH failed for 'bob@localhost' from 127.0.0.1") == 3


def test_failed_auth_counts_towards_the_error_budget(tmp_path):
    srv = start(tmp_path, smtp={"listen": ["127.0.0.1:0"], "error_budget": 3, "auth_failure_delay": 0.01})
    try:
        with Dialog(srv.smtp_port) as c:
            c.ehlo()
            starttls(c)
            c.ehlo()
            for _ in range(2):
                assert c.cmd(auth_plain("bob@localhost", "guess")).startswith(b"535")
            assert c.cmd(auth_plain("bob@localhost", "guess")).startswith(b"535")
            assert c.reply().startswith(b"421 4.7.0")
            assert c.closed()
    finally:
        srv.stop()


# -- POP3 through the whole server -------------------------------------------------------

def pop3(srv: RunningServer) -> Dialog:
    c = Dialog(srv.pop3_port)
    assert c.greeting.startswith(b"+OK")
    return c


def test_pop3_garbage_flood_is_closed(strict):
    with pop3(strict) as c:
        thread = flood(c, os.urandom(4 << 20))
        lines = c.rest()
        thread.join(10)
    assert 1 <= len(lines) <= 10 and all(line.startswith(b"-ERR") for line in lines)
    with pop3(strict) as c:
        assert c.cmd("NOOP").startswith(b"+OK")


def test_pop3_bad_arguments(strict):
    with pop3(strict) as c:
        assert c.cmd("USER bob@localhost").startswith(b"+OK")
        assert c.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        for line, expected in [("RETR 0", b"-ERR no such message"), ("RETR -1", b"-ERR invalid number"),
                               ("RETR 99999999999", b"-ERR invalid number"), ("TOP 1 -1", b"-ERR invalid"),
                               ("LIST 1 2", b"-ERR wrong number"), ("DELE abc", b"-ERR invalid number"),
                               ("APOP bob x", b"-ERR unknown command"), ("USER ../../etc", b"-ERR command not valid"),
                               ("RETR ١", b"-ERR invalid number")]:
            assert c.cmd(line).startswith(expected), line
        assert c.cmd("STAT").startswith(b"+OK 0 0")


def test_pop3_client_that_never_reads_is_dropped_and_unlocks(strict):
    big = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 100_000     # 7.8 MB
    strict.call(strict.core.maildirs.deliver_sync, "bob@localhost", big)
    with pop3(strict) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.cmd("USER bob@localhost")
        assert c.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        c.send(b"RETR 1\r\nDELE 1\r\nQUIT\r\n")               # ... and read nothing
        strict.wait_for(lambda: [e for e in strict.events_of(ConnectionClosed) if e.proto == "pop3"],
                        timeout=6, what="the stalled POP3 session to end")
        with pop3(strict) as other:                           # the maildrop is free again
            other.cmd("USER bob@localhost")
            assert other.cmd(f"PASS {PASSWORD}").startswith(b"+OK bob@localhost has 1 messages")
    assert len(strict.maildir_files("bob@localhost")) == 1   # nothing deleted


def test_pop3_new_mail_during_a_deleting_session(strict):
    send_message(strict.smtp_port, body=b"Subject: old\r\n\r\nold\r\n")
    with pop3(strict) as c:
        c.cmd("USER bob@localhost")
        assert c.cmd(f"PASS {PASSWORD}").startswith(b"+OK bob@localhost has 1 messages")
        assert c.cmd("DELE 1").startswith(b"+OK")
        assert send_message(strict.smtp_port, body=b"Subject: new\r\n\r\nnew\r\n").startswith(b"250")
        assert c.cmd("STAT").startswith(b"+OK 0 0")
        assert c.cmd("QUIT").startswith(b"+OK")
    [left] = strict.maildir_files("bob@localhost")
    assert b"Subject: new" in left.read_bytes()
