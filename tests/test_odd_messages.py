"""Odd but legal messages are stored byte-exact, and handed out byte-exact by POP3.

The only change the server makes is the Received header it puts on top. Over
the size limit is a 552 with nothing stored; a mail loop (more than 50
Received headers) is refused.
"""

from __future__ import annotations

import re

import pytest
from harness import PASSWORD, RunningServer, make_config
from wire import Dialog, stuff, unstuff

pytestmark = pytest.mark.timeout(60)

LIMIT = 64 * 1024

def sized(size: int) -> bytes:
    """A message of exactly ``size`` octets, in lines of at most 100."""
    head = b"Subject: big\r\n\r\n"
    full, rest = divmod(size - len(head), 100)
    tail = b"w" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    body = head + (b"z" * 98 + b"\r\n") * full + tail
    if rest == 1:
        body = body[:-3] + b"zz\r\n"
    assert len(body) == size
    return body


ODD = {
    "header-only": b"Subject: only a header\r\n",
    "empty-body": b"Subject: empty body\r\nFrom: a@remote.test\r\n\r\n",
    "no-headers": b"no header at all, just text\r\nand a second line\r\n",
    "empty": b"",
    "one-blank-line": b"\r\n",
    "8bit": b"Subject: 8-bit\r\nContent-Type: text/plain; charset=latin-1\r\n\r\n"
            + bytes(range(0x80, 0x100)) + b"\r\ncaf\xe9\r\n",
    "utf-8": "From: Jörg <jörg@exämple.test>\r\nSubject: Grüße 🎉\r\n\r\nСпасибо, ευχαριστώ\r\n".encode(),
    "998-octet-lines": b"Subject: long lines\r\n\r\n" + b"x" * 998 + b"\r\n" + b"." + b"y" * 997 + b"\r\n",
    "dots": b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n. leading space\r\n.x\r\nend\r\n.\r\n",
    "leading-dot": b".starts with a dot, no headers\r\n",
    "whitespace": b"Subject: ws \t \r\n\r\ntrailing   \r\n\t\r\n \r\n",
    "just-under-the-limit": sized(LIMIT - 1),
}
SENDER = {"utf-8": "MAIL FROM:<jörg@exämple.test> SMTPUTF8", "8bit": "MAIL FROM:<a@remote.test> BODY=8BITMIME"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("odd") / "data",
                         smtp={"listen": ["127.0.0.1:0"], "max_message_size": LIMIT})
    srv = RunningServer(config).start()
    srv.add_client("loopback", "127.0.0.0/8")
    try:
        yield srv
    finally:
        srv.stop()


def send(srv: RunningServer, rcpt: str, body: bytes, mail: str = "MAIL FROM:<a@remote.test>",
         wire: bytes | None = None) -> bytes:
    with Dialog(srv.smtp_port) as c:
        c.ehlo()
        c.send(f"{mail}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        replies = [c.reply() for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354"], replies
        c.send((stuff(body) if wire is None else wire) + b".\r\n")
        return c.reply()


def retr(srv: RunningServer, address: str) -> bytes:
    """The only message of ``address`` through POP3, unstuffed."""
    with Dialog(srv.pop3_port) as c:
        c.cmd(f"USER {address}")
        assert c.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        assert c.cmd("RETR 1").startswith(b"+OK")
        wire = b""
        while (line := c.line()) != b".\r\n":
            assert line, "connection closed during RETR"
            wire += line
        c.cmd("QUIT")
    return unstuff(wire)


@pytest.mark.parametrize("name", list(ODD))
def test_odd_message_is_stored_and_retrieved_byte_exact(server, name):
    body = ODD[name]
    address = f"odd{list(ODD).index(name)}@localhost"
    server.add_mailbox(address)
    assert send(server, address, body, SENDER.get(name, "MAIL FROM:<a@remote.test>")).startswith(b"250 2.0.0")
    [path] = server.maildir_files(address)
    stored = path.read_bytes()
    assert stored.startswith(b"Received: from client.test ([127.0.0.1])")
    added = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", stored).group()  # the one header
    assert stored[len(added):] == body
    assert retr(server, address) == stored


def test_exactly_the_limit_is_taken_one_octet_more_is_552(server):
    server.add_mailbox("limit@localhost")
    exact = sized(LIMIT)
    assert send(server, "limit@localhost", sized(LIMIT + 1)).startswith(b"552 5.3.4")
    assert server.maildir_files("limit@localhost") == []
    assert send(server, "limit@localhost", exact, f"MAIL FROM:<a@remote.test> SIZE={LIMIT}").startswith(b"250")
    [path] = server.maildir_files("limit@localhost")
    assert path.read_bytes().endswith(exact)


def test_received_headers_in_the_body_are_no_loop(server):
    server.add_mailbox("loops@localhost")
    hops = b"".join(b"ReCeIvEd: from hop%d by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i for i in range(51))
    assert send(server, "loops@localhost", hops + b"Subject: loop\r\n\r\nx\r\n").startswith(b"554 5.4.6")
    assert send(server, "loops@localhost", b"Subject: quoting a loop\r\n\r\n" + hops).startswith(b"250")
    assert len(server.maildir_files("loops@localhost")) == 1
