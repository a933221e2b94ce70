"""SMTP intake over real loopback sockets: registration, routing, limits, TLS, AUTH."""

from __future__ import annotations

import re
import smtplib
import socket

import pytest
from conftest import start_server
from harness import PASSWORD, tls_context

from mailtui.events import ClientRefused, MessageAccepted
from mailtui.store.spoolfile import read_head

MSG = b"From: a@example.org\r\nTo: b@localhost\r\nSubject: hi\r\n\r\nHello there.\r\n"


def smtp(server, **kw) -> smtplib.SMTP:
    conn = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10, **kw)
    return conn


def registered(server) -> None:
    server.add_client("loopback", "127.0.0.0/8")


def test_ehlo_advertises_extensions_and_auth_only_after_tls(server):
    with smtp(server) as c:
        code, text = c.ehlo("client.test")
        assert code == 250
        feats = text.decode().upper()
        for ext in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "STARTTLS", "ENHANCEDSTATUSCODES"):
            assert ext in feats
        assert "AUTH" not in feats
        c.starttls(context=tls_context())
        code, text = c.ehlo("client.test")
        feats = text.decode().upper()
        assert "AUTH" in feats and "PLAIN" in feats and "LOGIN" in feats
        assert "STARTTLS" not in feats


def test_unregistered_client_refused_before_data_and_nothing_stored(server):
    server.add_mailbox("bob@localhost")
    with smtp(server) as c:
        c.ehlo("stranger.test")
        code, text = c.mail("someone@example.org")
        assert code == 550 and text.startswith(b"5.7.1")
        assert b"not registered" in text
        code, _ = c.rcpt("bob@localhost")
        assert code == 503
    assert server.maildir_files("bob@localhost") == []
    refused = server.events_of(ClientRefused)
    assert refused and refused[0].stage == "mail"


def test_registered_network_delivers_locally_byte_exact(server):
    registered(server)
    server.add_mailbox("bob@localhost")
    with smtp(server) as c:
        c.ehlo("client.test")
        code, text = c.mail("a@example.org")
        assert (code, text[:5]) == (250, b"2.1.0")
        code, text = c.rcpt("bob@localhost")
        assert (code, text[:5]) == (250, b"2.1.5")
        code, text = c.data(MSG)
        assert code == 250 and text.startswith(b"2.0.0 OK: queued as ")
    files = server.maildir_files("bob@localhost")
    assert len(files) == 1
    data = files[0].read_bytes()
    assert data.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mail.test (mailtui) with ESMTP id ")
    assert data.endswith(MSG)
    assert f",S={len(data)}" in files[0].name


def test_unknown_local_user_is_550_at_rcpt(server):
    registered(server)
    with smtp(server) as c:
        c.ehlo("client.test")
        c.mail("a@example.org")
        code, text = c.rcpt("nobody@localhost")
        assert code == 550 and text.startswith(b"5.1.1")


def test_postmaster_always_exists(server):
    registered(server)
    with smtp(server) as c:
        c.ehlo("client.test")
        c.mail("a@example.org")
        assert c.rcpt("postmaster@example.test")[0] == 250
        assert c.rcpt("PostMaster@localhost")[0] == 250
        assert c.data(MSG)[0] == 250
    assert len(server.maildir_files("postmaster@localhost")) == 1


def test_remote_recipient_is_queued_with_spool_files(server):
    registered(server)
    with smtp(server) as c:
        c.ehlo("client.test")
        c.mail("a@example.org")
        assert c.rcpt("far@remote.test")[0] == 250
        code, text = c.data(MSG)
        assert code == 250
    msg_id = text.decode().rsplit(" ", 1)[1]
    spool = server.data_dir / "spool"
    assert sorted(p.name for p in spool.iterdir()) == [f"{msg_id}.msg"]    # no state before an attempt
    envelope = read_head(spool / f"{msg_id}.msg")
    assert envelope["sender"] == "a@example.org"
    assert envelope["recipients"][0]["address"] == "far@remote.test"
    rows = server.run(server.core.admin.call("queue_list", {}))
    assert rows[0]["id"] == msg_id


def test_accept_unregistered_for_local_is_mx_role_never_relay(tmp_path):
    srv = start_server(tmp_path, policy={"accept_unregistered_for_local": True})
    try:
        srv.add_mailbox("bob@localhost")
        with smtp(srv) as c:
            c.ehlo("stranger.test")
            assert c.mail("someone@example.org")[0] == 250
            code, text = c.rcpt("victim@elsewhere.test")
            assert code == 554 and text.startswith(b"5.7.1")
            assert c.rcpt("bob@localhost")[0] == 250
            assert c.data(MSG)[0] == 250
            c.rset()
            # a spoofed local sender from outside is refused
            code, text = c.mail("bob@localhost")
            assert code == 550 and text.startswith(b"5.7.1")
        assert len(srv.maildir_files("bob@localhost")) == 1
    finally:
        srv.stop()


def test_starttls_auth_makes_a_registered_client(server):
    server.add_mailbox("alice@localhost")
    with smtp(server) as c:
        c.ehlo("client.test")
        assert c.mail("alice@localhost")[0] == 550  # not yet registered
        c.rset()
        c.starttls(context=tls_context())
        c.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            c.login("alice@localhost", "wrong password")
        assert exc.value.smtp_code == 535
        c.login("alice@localhost", PASSWORD)
        assert c.mail("alice@localhost")[0] == 250
        assert c.rcpt("far@remote.test")[0] == 250
        code, text = c.data(MSG)
        assert code == 250
    assert len(server.core.queue) == 1
    data = next((server.data_dir / "spool").glob("*.msg")).read_bytes()
    assert b"with ESMTPSA id" in data


def test_authenticated_user_cannot_send_as_another_local_mailbox(server):
    server.add_mailbox("alice@localhost")
    server.add_mailbox("bob@localhost")
    with smtp(server) as c:
        c.starttls(context=tls_context())
        c.login("alice@localhost", PASSWORD)
        code, text = c.mail("bob@localhost")
        assert code == 553 and text.startswith(b"5.7.1")


def test_auth_plain_refused_without_tls(server):
    server.add_mailbox("alice@localhost")
    with smtp(server) as c:
        c.ehlo("client.test")
        code, text = c.docmd("AUTH", "PLAIN AGFsaWNlQGxvY2FsaG9zdABjb3JyZWN0IGhvcnNlIGJhdHRlcnk=")
        assert code == 538


def test_size_limits_declared_and_actual(tmp_path):
    srv = start_server(tmp_path, smtp={"max_message_size": 2000, "listen": [srv_ep()]})
    try:
        registered(srv)
        srv.add_mailbox("bob@localhost")
        with smtp(srv) as c:
            c.ehlo("client.test")
            code, text = c.mail("a@example.org", ["SIZE=5000"])
            assert code == 552 and text.startswith(b"5.3.4")
            c.rset()
            c.mail("a@example.org")
            c.rcpt("bob@localhost")
            code, text = c.data(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 0 + (b"y" * 70 + b"\r\n") * 40)
            assert code == 552 and text.startswith(b"5.3.4")
            # the session goes on, and a small message still fits
            c.mail("a@example.org")
            c.rcpt("bob@localhost")
            assert c.data(MSG)[0] == 250
        assert len(srv.maildir_files("bob@localhost")) == 1
    finally:
        srv.stop()


def srv_ep() -> str:
    return "127.0.0.1:0"


def test_max_recipients(tmp_path):
    srv = start_server(tmp_path, smtp={"max_recipients": 3, "listen": [srv_ep()]})
    try:
        registered(srv)
        with smtp(srv) as c:
            c.ehlo("client.test")
            c.mail("a@example.org")
            for i in range(3):
                assert c.rcpt(f"r{i}@remote.test")[0] == 250
            code, text = c.rcpt("r4@remote.test")
            assert code == 452 and text.startswith(b"4.5.3")
    finally:
        srv.stop()


def test_mail_loop_is_refused(server):
    registered(server)
    server.add_mailbox("bob@localhost")
    hops = b"".join(b"Received: from hop%d by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i for i in range(51))
    with smtp(server) as c:
        c.ehlo("client.test")
        c.mail("a@example.org")
        c.rcpt("bob@localhost")
        code, text = c.data(hops + MSG)
        assert code == 554 and text.startswith(b"5.4.6")
        c.mail("a@example.org")
        c.rcpt("bob@localhost")
        assert c.data(hops[: -len(hops) // 51] + MSG)[0] == 250  # exactly 50 is fine


def test_every_reply_after_greeting_carries_an_enhanced_code(server):
    registered(server)
    replies = []
    with smtp(server) as c:
        c.ehlo("client.test")
        for cmd, arg in (("NOOP", ""), ("MAIL", "FROM:<bad"), ("RCPT", "TO:<x@remote.test>"),
                         ("MAIL", "FROM:<a@example.org>"), ("MAIL", "FROM:<a@example.org>"),
                         ("RCPT", "TO:<x@remote.test>"), ("RSET", ""), ("VRFY", "bob"),
                         ("XCLIENT", "ADDR=1.2.3.4"), ("DATA", "")):
            code, text = c.docmd(cmd, arg)
            replies.append((cmd, code, text))
    for cmd, code, text in replies:
        assert re.match(rb"^[245]\.\d{1,3}\.\d{1,3} ", text), (cmd, code, text)


def test_only_crlf_dot_crlf_ends_data(server):
    """SMTP smuggling: bare-LF end markers stay inside the one message."""
    registered(server)
    server.add_mailbox("bob@localhost")
    smuggled = (b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.org>\nRCPT TO:<bob@localhost>\n"
                b"DATA\nSubject: two\n\nsecond\r\n.\r\n")
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        assert f.readline().startswith(b"250")
        assert f.readline().startswith(b"250")
        assert f.readline().startswith(b"354")
        s.sendall(smuggled)
        assert f.readline().startswith(b"250 2.0.0")
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221")
    files = server.maildir_files("bob@localhost")
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"Subject: two" in data and b"\n.\n" not in data
    assert data.count(b"\n") == data.count(b"\r\n")  # normalised to CRLF
    assert len(server.events_of(MessageAccepted)) == 1


def test_dot_stuffing_and_pipelined_commands_after_data(server):
    registered(server)
    server.add_mailbox("bob@localhost")
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n" + b"x" * 998 + b"\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        for _ in range(3):
            f.readline()
        s.sendall(stuffed + b".\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        assert f.readline().startswith(b"250 2.0.0")
        assert f.readline().startswith(b"250 2.1.0")
        assert f.readline().startswith(b"250 2.1.5")
        assert f.readline().startswith(b"354")
        s.sendall(b".\r\n")  # an empty message is legal too
        assert f.readline().startswith(b"250 2.0.0")
    datas = sorted((p.read_bytes() for p in server.maildir_files("bob@localhost")), key=len)
    assert datas[1].endswith(body)
    assert datas[0].endswith(b"\r\n\t" + datas[0].rsplit(b"\r\n\t", 1)[1])  # only the Received header


def test_line_too_long_refused(server):
    registered(server)
    server.add_mailbox("bob@localhost")
    with smtp(server) as c:
        c.ehlo("client.test")
        c.mail("a@example.org")
        c.rcpt("bob@localhost")
        code, text = c.data(b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n")
        assert code == 500
    assert server.maildir_files("bob@localhost") == []


def test_strict_address_parsing(server):
    registered(server)
    with smtp(server) as c:
        c.ehlo("client.test")
        for bad in ("FROM:a@example.org", "FROM:<a@example.org", "FROM:<@relay.test:a@example.org>",
                    "FROM:<a@@example.org>", "FROM:<a@exa mple.org>", "FROM:<a.@example.org>",
                    "FROM:<" + "a" * 65 + "@example.org>"):
            code, _ = c.docmd("MAIL", bad)
            assert code in (501, 553), bad
        assert c.docmd("MAIL", "FROM:<>")[0] == 250


def test_smtputf8_addresses_need_the_parameter(server):
    registered(server)
    with smtp(server) as c:
        c.ehlo("client.test")
        c.command_encoding = "utf-8"
        code, text = c.docmd("MAIL", "FROM:<jörg@example.org>")
        assert code == 553 and text.startswith(b"5.6.7")
        assert c.docmd("MAIL", "FROM:<jörg@example.org> SMTPUTF8")[0] == 250
        assert c.docmd("RCPT", "TO:<zoë@remote.test>")[0] == 250


def test_error_budget_closes_session(server):
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c.test\r\n" + b"RCPT TO:<x@localhost>\r\nDATA\r\n" * 15)
        lines = []
        while True:
            line = f.readline()
            if not line:
                break
            lines.append(line)
        assert lines[-1].startswith(b"421 4.7.0")
        assert len(lines) < 25


def test_http_request_on_smtp_port_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert f.readline().startswith(b"421")
        assert f.readline() == b""


def test_connection_limit_per_ip(tmp_path):
    srv = start_server(tmp_path, smtp={"max_connections_per_ip": 2, "listen": ["127.0.0.1:0"]})
    try:
        socks = [socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=10) for _ in range(3)]
        try:
            greetings = [s.makefile("rb").readline() for s in socks]
            assert [g[:3] for g in greetings] == [b"220", b"220", b"421"]
        finally:
            for s in socks:
                s.close()
    finally:
        srv.stop()


def test_idle_timeout_closes(tmp_path):
    srv = start_server(tmp_path, smtp={"idle_timeout": 0.5, "listen": ["127.0.0.1:0"]})
    try:
        with socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            assert f.readline().startswith(b"421 4.4.2")
            assert f.readline() == b""
    finally:
        srv.stop()


def test_second_starttls_refused(server):
    with smtp(server) as c:
        c.starttls(context=tls_context())
        c.ehlo("client.test")
        code, _ = c.docmd("STARTTLS")
        assert code in (554, 503)


def test_an_unexpected_error_is_a_451_and_the_session_goes_on(server):
    registered(server)

    def broken(*args):
        raise RuntimeError("policy blew up")
    server.core.policy.check_sender = broken
    with smtp(server) as c:
        c.ehlo("client.test")
        code, text = c.mail("a@example.org")
        assert code == 451 and text.startswith(b"4.3.0")
        assert c.noop()[0] == 250
