"""The outbound SMTP client's reply parser (tables and Hypothesis: it parses peer input),
and one connection against hostile peers on loopback."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from delivery_harness import smtp_port_fixture  # noqa: F401 (a fixture)
from dnsworld import MX_HOST_2
from hypothesis import given
from hypothesis import strategies as st

from mailtui.send.client import (
    MAX_LINE,
    BadReply,
    ConnectionLost,
    Reply,
    ReplyTimeout,
    SmtpConnection,
    parse_replies,
)
from mailtui.send.session import too_many_recipients

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("wire, replies, left", [
    (b"250 ok\r\n", [Reply(250, "ok")], b""),
    (b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
     [Reply(250, "mx.test\nPIPELINING\nSIZE 100")], b""),
    (b"250 a\r\n354 go\r\n250-par", [Reply(250, "a"), Reply(354, "go")], b"250-par"),
    (b"250 bare lf\n221\r\n", [Reply(250, "bare lf"), Reply(221, "")], b""),
    (b"220-first\r\n", [], b"220-first\r\n"),
    (b"", [], b""),
])
def test_parse_replies(wire, replies, left):
    buffer = bytearray(wire)
    assert parse_replies(buffer) == replies
    assert bytes(buffer) == left


@pytest.mark.parametrize("wire", [
    b"hello\r\n", b"25 short\r\n", b"250xno separator\r\n", b"2500 four digits\r\n",
    b"250 " + b"x" * MAX_LINE + b"\r\n",          # a line too long
    b"250 " + b"x" * (MAX_LINE + 10),              # on its way to being one
    b"250-x\r\n" * 20000,                          # a reply that never ends
    b"250-x\r\n" * 20000 + b"250 end\r\n",         # or ends too late
])
def test_parse_replies_refuses_what_is_no_reply(wire):
    with pytest.raises(BadReply):
        parse_replies(bytearray(wire))


@given(st.binary(max_size=300))
def test_parse_replies_on_any_bytes(data):
    buffer = bytearray(data)
    try:
        replies = parse_replies(buffer)
    except BadReply:
        return
    assert all(0 <= r.code <= 999 for r in replies)
    # what is left is the start of a reply: whole lines in it are continuation lines
    *whole, _ = bytes(buffer).split(b"\n")
    assert all(line[3:4] == b"-" for line in whole)
    assert data.endswith(bytes(buffer))


@given(st.lists(st.tuples(st.integers(200, 599),
                          st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                           max_size=20), min_size=1, max_size=4)),
                max_size=5), st.integers(0, 2000))
def test_parse_replies_in_any_chunks(replies, cut):
    wire = b"".join(b"".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode()
                             for i, line in enumerate(lines)) for code, lines in replies)
    buffer = bytearray(wire[:cut])
    got = parse_replies(buffer)
    buffer += wire[cut:]
    got += parse_replies(buffer)
    assert got == [Reply(code, "\n".join(lines)) for code, lines in replies] and not buffer


@pytest.mark.parametrize("reply, too_many", [
    (Reply(452, "4.5.3 Too many recipients"), True),
    (Reply(452, "Too many recipients"), True),
    (Reply(452, "4.3.1 Insufficient system storage"), False),
    (Reply(451, "4.5.3 too many recipients"), False),
    (Reply(552, "5.5.3 too many recipients"), False),
])
def test_too_many_recipients(reply, too_many):
    assert too_many_recipients(reply) is too_many


# -- one connection, hostile peers ------------------------------------------------

@contextlib.asynccontextmanager
async def peer(port: int, script):
    server = await asyncio.start_server(script, MX_HOST_2, port, reuse_address=True)
    try:
        yield
    finally:
        server.close()


async def test_a_silent_peer_times_out_and_the_connection_is_closed(smtp_port):
    async def greet_then_hush(reader, writer):
        writer.write(b"220 hello\r\n")
        await reader.read()

    async with peer(smtp_port, greet_then_hush):
        conn, greeting = await SmtpConnection.open(MX_HOST_2, smtp_port, 2.0)
        assert greeting == Reply(220, "hello") and conn.usable
        with pytest.raises(ReplyTimeout):
            await conn.command(b"NOOP", 0.1)
        assert not conn.usable
        with pytest.raises(ReplyTimeout):   # out of step for good: nothing more is read
            await conn.read_reply(0.1)


async def test_garbage_and_a_hang_up_are_errors_not_replies(smtp_port):
    async def garbage(reader, writer):
        writer.write(b"220 hello\r\n")
        await reader.readline()
        writer.write(b"<html>\r\n")
        await reader.read()

    async with peer(smtp_port, garbage):
        conn, _ = await SmtpConnection.open(MX_HOST_2, smtp_port, 2.0)
        with pytest.raises(BadReply):
            await conn.command(b"EHLO me", 2.0)
        assert not conn.usable

    async def bye(reader, writer):
        writer.write(b"220 hello\r\n")
        await reader.readline()
        writer.write(b"421 4.3.2 going down\r\n")
        writer.close()

    async with peer(smtp_port, bye):
        conn, _ = await SmtpConnection.open(MX_HOST_2, smtp_port, 2.0)
        assert await conn.command(b"MAIL FROM:<>", 2.0) == Reply(421, "4.3.2 going down")
        with pytest.raises(ConnectionLost):   # what came before the hang-up is still read first
            await conn.read_reply(2.0)
        with pytest.raises(ConnectionLost):
            conn.write(b"RSET\r\n")
