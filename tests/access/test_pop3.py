"""POP3 server tests over real loopback sockets.

The server runs in the test's event loop; blocking clients (poplib, curl) run
in threads or subprocesses, raw clients use asyncio streams. Every wait has a
timeout, and fixtures stop every server and session they start.
"""

from __future__ import annotations

import asyncio
import base64
import os
import poplib
import shutil
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from harness import tls_context
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtui.access.pop3 import (
    MAX_COMMAND_LINE,
    Pop3Server,
    ProtocolError,
    dot_stuff,
    parse_command,
    terminator,
)
from mailtui.admin.registry import Registry
from mailtui.config import Pop3Config
from mailtui.events import (
    AuthFailed,
    AuthSucceeded,
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    MailboxRetrieved,
    SessionChanged,
)
from mailtui.server.tls import make_self_signed
from mailtui.store.db import Store
from mailtui.store.mailboxes import MailStore
from mailtui.store.maildir import Maildirs

WAIT = 5.0
ALICE = "alice@localhost"
PASSWORD = "correct horse"

MSG1 = (b"From: bob@localhost\r\nSubject: one\r\n\r\nHello\r\n.leading dot\r\n"
        b"..two dots\r\n.\r\n" + b"x" * 998 + b"\r\nend\r\n")
MSG2 = b"Subject: two\r\n\r\nsecond\r\n"
NO_CRLF = b"Subject: three\r\n\r\nno newline at the end"


def stuffed(data: bytes) -> bytes:
    """What RETR must put on the wire for ``data`` (after the status line)."""
    lines = data.split(b"\r\n")
    body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if not data.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


# -- the world --------------------------------------------------------------------

@dataclass
class Delivered:
    """A delivered message, wherever it is now: the first look moves it from ``new/`` to ``cur/``."""

    path: Path

    def exists(self) -> bool:
        box = self.path.parent.parent
        return self.path.exists() or any((box / "cur").glob(self.path.name + ":2,*"))


@dataclass
class World:
    store: Store
    registry: Registry
    maildirs: Maildirs
    mail: MailStore
    bus: EventBus
    events: list
    key: str
    stamp: int = 1_700_000_000

    def deliver(self, data: bytes) -> Delivered:
        """Deliver with distinct mtimes, so message numbers are predictable."""
        path = self.maildirs.deliver_sync(self.key, data)
        self.stamp += 10
        os.utime(path, (self.stamp, self.stamp))
        return Delivered(path)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    async def uidls(self) -> list[str]:
        """What UIDL must say for INBOX's messages: Dovecot's default ``%08Xu%08Xv`` (lower-case hex)."""
        folder = await self.mail.open(self.key, "INBOX")
        try:
            return [f"{m.uid:08x}{folder.uidvalidity:08x}" for m in folder.snapshot()]
        finally:
            self.mail.release(folder, self.key)


@pytest.fixture
def world(tmp_path):
    store = Store(tmp_path)
    registry = Registry(store, ("localhost",))
    key = registry.add_mailbox(ALICE, PASSWORD).address
    bus = EventBus()
    events: list = []
    bus.add_listener(events.append)
    maildirs = Maildirs(tmp_path / "mail")
    yield World(store, registry, maildirs, MailStore(maildirs), bus, events, key)
    store.close()


@pytest.fixture(scope="session")
def cert_files(tmp_path_factory):
    cert, key = make_self_signed("localhost")
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


@pytest.fixture
def server_tls(cert_files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_files)
    return context


@pytest.fixture
def client_tls():
    return tls_context()


@dataclass
class Running:
    pop: Pop3Server
    port: int


@pytest.fixture
async def start(world, server_tls):
    """Factory: start a POP3 server on a free loopback port; all are stopped at teardown."""
    started: list[tuple[Pop3Server, asyncio.Server]] = []

    async def _start(tls: bool = True, **config) -> Running:
        cfg = replace(Pop3Config(), **({"idle_timeout": 10.0, "auth_failure_delay": 0.01} | config))
        pop = Pop3Server(config=cfg, hostname="mail.test", registry=world.registry,
                         mail=world.mail, bus=world.bus,
                         tls_context=server_tls if tls else None, store=world.store)
        listener = await pop.serve("127.0.0.1", 0)
        started.append((pop, listener))
        return Running(pop, listener.sockets[0].getsockname()[1])

    yield _start
    for pop, listener in started:
        listener.close()
        await pop.close_all()
        await asyncio.wait_for(listener.wait_closed(), WAIT)


@pytest.fixture
async def running(start):
    return await start()


class Raw:
    """A line-level client on asyncio streams, for exact bytes and odd behaviour."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, *, greeting: bool = True) -> "Raw":
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
        raw = cls(reader, writer)
        if greeting:
            assert (await raw.line()).startswith(b"+OK mail.test POP3 ready")
        return raw

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), WAIT)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), WAIT)

    async def cmd(self, text: str | bytes) -> bytes:
        await self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return await self.line()

    async def multi(self) -> bytes:
        """The rest of a multi-line answer, terminator included, exactly as sent."""
        out = b""
        while True:
            line = await self.line()
            assert line, "connection closed inside a multi-line answer"
            out += line
            if line == b".\r\n":
                return out

    async def login(self) -> None:
        assert (await self.cmd(f"USER {ALICE}")).startswith(b"+OK")
        assert (await self.cmd(f"PASS {PASSWORD}")).startswith(b"+OK")

    async def closed(self) -> bool:
        """True if the server closed the connection (within WAIT)."""
        try:
            return await asyncio.wait_for(self.reader.read(1), WAIT) == b""
        except ConnectionResetError:
            return True

    async def silent(self, seconds: float = 0.2) -> bool:
        """True if the server sends nothing for ``seconds``."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), WAIT)
        except (OSError, TimeoutError, ssl.SSLError):
            pass


@pytest.fixture
async def raw_clients():
    clients: list[Raw] = []

    async def _connect(port: int, **kw) -> Raw:
        client = await Raw.connect(port, **kw)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.close()


async def in_thread(fn, *args):
    """Run a blocking client (poplib) without blocking the server's loop."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), 20)


def poplib_client(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=WAIT)


async def wait_until(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- parser -----------------------------------------------------------------------

def test_parse_command_basics():
    assert parse_command(b"stat\r\n") == ("STAT", ())
    assert parse_command(b"LIST 2") == ("LIST", (2,))
    assert parse_command(b"TOP 1 0\r\n") == ("TOP", (1, 0))
    assert parse_command(b"PASS correct horse \r\n") == ("PASS", ("correct horse ",))
    assert parse_command(b"AUTH PLAIN AGFsaWNl") == ("AUTH", ("PLAIN", "AGFsaWNl"))
    for bad, reply in [(b"", "-ERR empty command"), (b"FOO", "-ERR unknown command"),
                       (b"RETR x", "-ERR invalid number 'x'"), (b"RETR", "-ERR wrong number"),
                       (b"USER a\x00b", "-ERR control"), (b"RETR \xff", "-ERR command is not"),
                       (b"RETR 1234567890", "-ERR invalid number"), (b"RETR \xd9\xa1", "-ERR invalid"),
                       (b"USER " + b"x" * (MAX_COMMAND_LINE - 6), "-ERR line too long")]:
        with pytest.raises(ProtocolError) as caught:
            parse_command(bad)
        assert caught.value.reply.startswith(reply)
    assert parse_command(b"USER " + b"x" * (MAX_COMMAND_LINE - 7))  # exactly 255 with CRLF


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda verb, rest: verb + rest,
              st.sampled_from([b"USER ", b"PASS ", b"LIST ", b"TOP ", b"RETR ", b"AUTH ", b"uidl "]),
              st.binary(max_size=40)),
))
def test_parse_command_only_raises_protocol_error(line):
    try:
        verb, args = parse_command(line)
    except ProtocolError as exc:
        assert exc.reply.startswith("-ERR ")
        assert "\r" not in exc.reply and "\n" not in exc.reply
    else:
        assert verb.isupper() and isinstance(args, tuple)


def test_dot_stuffing_across_chunks():
    data = b"a\r\n.b\r\n..c\r\n.\r\n"
    for cut in range(len(data) + 1):
        first, start = dot_stuff(data[:cut], True)
        second, _ = dot_stuff(data[cut:], start)
        assert first + second + terminator(data[-2:]) == stuffed(data)
    assert terminator(b"") == b".\r\n"
    assert terminator(b"ab") == b"\r\n.\r\n"


# -- sessions over sockets ----------------------------------------------------------

async def test_capa(start, raw_clients):
    with_tls, plain = await start(), await start(tls=False)

    def script(port):
        client = poplib_client(port)
        before = client.capa()
        client.user(ALICE)
        client.pass_(PASSWORD)
        after = client.capa()
        client.quit()
        return before, after

    before, after = await in_thread(script, with_tls.port)
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "STLS"):
        assert cap in before
    assert before["SASL"] == ["PLAIN"] and before["IMPLEMENTATION"] == ["mailtui"]
    assert "USER" not in after and "STLS" not in after and "UIDL" in after

    client = await raw_clients(plain.port)
    assert await client.cmd("CAPA") == b"+OK capability list follows\r\n"
    assert b"STLS" not in await client.multi()
    assert await client.cmd("STLS") == b"-ERR STLS not available\r\n"


async def test_user_pass_login_and_events(world, running):
    world.deliver(MSG1)
    world.deliver(MSG2)

    def script():
        client = poplib_client(running.port)
        client.user("Alice@LocalHost")  # logins are case-insensitive
        welcome = client.pass_(PASSWORD)
        stat = client.stat()
        client.quit()
        return welcome, stat

    welcome, stat = await in_thread(script)
    assert welcome == f"+OK {ALICE} has 2 messages ({len(MSG1) + len(MSG2)} octets)".encode()
    assert stat == (2, len(MSG1) + len(MSG2))
    await wait_until(lambda: world.of(ConnectionClosed))
    opened = world.of(ConnectionOpened)[0]
    assert opened.proto == "pop3" and opened.registered is False and opened.session.startswith("P")
    assert world.of(AuthSucceeded)[0].login == ALICE
    states = [e.state for e in world.of(SessionChanged)]
    assert states == ["TRANSACTION", "UPDATE"]
    assert world.of(ConnectionClosed)[0].result == "0 retrieved, 0 deleted"
    assert world.of(MailboxRetrieved)[0].mailbox == ALICE
    logged = world.store.recent("connections")[0]
    assert logged["proto"] == "pop3" and logged["login"] == ALICE
    assert logged["result"] == "0 retrieved, 0 deleted" and logged["peer"].startswith("127.0.0.1:")


async def test_bad_password_then_good(world, running, raw_clients):
    client = await raw_clients(running.port)
    assert await client.cmd(f"USER {ALICE}") == b"+OK send PASS\r\n"
    assert await client.cmd("PASS wrong password") == b"-ERR [AUTH] invalid login\r\n"
    assert await client.cmd("USER nobody@localhost") == b"+OK send PASS\r\n"
    assert await client.cmd(f"PASS {PASSWORD}") == b"-ERR [AUTH] invalid login\r\n"
    await client.login()
    failed = world.of(AuthFailed)
    assert [e.login for e in failed] == [ALICE, "nobody@localhost"]
    assert [e.failures for e in failed] == [1, 2]


async def test_auth_plain(world, running, raw_clients):
    good = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    client = await raw_clients(running.port)
    assert await client.cmd("AUTH") == b"+OK SASL mechanisms follow\r\n"
    assert await client.multi() == b"PLAIN\r\n.\r\n"
    assert await client.cmd("AUTH CRAM-MD5") == b"-ERR unsupported authentication mechanism\r\n"
    assert await client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert await client.cmd("*") == b"-ERR authentication cancelled\r\n"
    assert await client.cmd("AUTH PLAIN !!!") == b"-ERR malformed authentication data\r\n"
    assert await client.cmd("AUTH PLAIN =") == b"-ERR malformed authentication data\r\n"
    proxy = base64.b64encode(f"bob@localhost\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert await client.cmd(f"AUTH PLAIN {proxy}") == b"-ERR [AUTH] invalid login\r\n"
    assert await client.cmd(f"AUTH PLAIN {good}") == b"+OK alice@localhost has 0 messages (0 octets)\r\n"
    await client.cmd("QUIT")

    other = await raw_clients(running.port)  # continuation form
    assert await other.cmd("auth plain") == b"+ \r\n"
    assert (await other.cmd(good)).startswith(b"+OK alice@localhost")


async def test_stat_list_uidl_exact(world, running, raw_clients):
    for data in (MSG1, MSG2, NO_CRLF):
        world.deliver(data)
    sizes = [len(MSG1), len(MSG2), len(NO_CRLF)]
    client = await raw_clients(running.port)
    await client.login()
    assert await client.cmd("STAT") == f"+OK 3 {sum(sizes)}\r\n".encode()
    assert await client.cmd("LIST") == f"+OK 3 messages ({sum(sizes)} octets)\r\n".encode()
    assert await client.multi() == "".join(f"{i} {s}\r\n" for i, s in enumerate(sizes, 1)).encode() + b".\r\n"
    assert await client.cmd("LIST 2") == f"+OK 2 {len(MSG2)}\r\n".encode()
    assert await client.cmd("LIST 4") == b"-ERR no such message\r\n"
    assert await client.cmd("LIST 0") == b"-ERR no such message\r\n"
    names = await world.uidls()       # UIDs 1, 2, 3 in arrival order, as IMAP numbers them
    assert names == [f"{uid:08x}{names[0][8:]}" for uid in (1, 2, 3)]
    assert await client.cmd("UIDL") == b"+OK unique-id listing follows\r\n"
    assert await client.multi() == "".join(f"{i} {n}\r\n" for i, n in enumerate(names, 1)).encode() + b".\r\n"
    assert await client.cmd("UIDL 3") == f"+OK 3 {names[2]}\r\n".encode()


async def test_retr_is_byte_exact(world, running, raw_clients):
    world.deliver(MSG1)
    world.deliver(NO_CRLF)
    client = await raw_clients(running.port)
    await client.login()
    assert await client.cmd("RETR 1") == f"+OK {len(MSG1)} octets\r\n".encode()
    body = await client.multi()
    assert body == stuffed(MSG1)
    assert b"\r\n" + b"x" * 998 + b"\r\n" in body
    assert b"\r\n..leading dot\r\n...two dots\r\n..\r\n" in body
    assert await client.cmd("RETR 2") == f"+OK {len(NO_CRLF)} octets\r\n".encode()
    assert await client.multi() == NO_CRLF + b"\r\n.\r\n"

    def script():
        pop = poplib_client(running.port)
        pop.user(ALICE)
        try:
            return pop.pass_(PASSWORD)
        except poplib.error_proto as exc:
            return exc.args[0]
        finally:
            pop.close()

    assert await in_thread(script) == b"-ERR [IN-USE] maildrop already locked"


async def test_retr_with_poplib(world, running):
    world.deliver(MSG1)

    def script():
        client = poplib_client(running.port)
        client.user(ALICE)
        client.pass_(PASSWORD)
        response, lines, octets = client.retr(1)
        client.quit()
        return response, lines

    response, lines = await in_thread(script)
    assert response == f"+OK {len(MSG1)} octets".encode()
    assert b"\r\n".join(lines) + b"\r\n" == MSG1


async def test_top(world, running, raw_clients):
    world.deliver(MSG1)
    client = await raw_clients(running.port)
    await client.login()
    assert await client.cmd("TOP 1 0") == b"+OK top of message follows\r\n"
    assert await client.multi() == b"From: bob@localhost\r\nSubject: one\r\n\r\n.\r\n"
    assert await client.cmd("TOP 1 2") == b"+OK top of message follows\r\n"
    assert await client.multi() == b"From: bob@localhost\r\nSubject: one\r\n\r\nHello\r\n..leading dot\r\n.\r\n"
    assert await client.cmd("TOP 1 1000") == b"+OK top of message follows\r\n"
    assert await client.multi() == stuffed(MSG1)
    assert await client.cmd("TOP 2 1") == b"-ERR no such message\r\n"
    assert await client.cmd("TOP 1") == b"-ERR wrong number of arguments for TOP\r\n"


async def test_dele_then_quit_deletes(world, running, raw_clients):
    first, second = world.deliver(MSG1), world.deliver(MSG2)
    client = await raw_clients(running.port)
    await client.login()
    assert await client.cmd("RETR 1") == f"+OK {len(MSG1)} octets\r\n".encode()
    await client.multi()
    assert await client.cmd("DELE 1") == b"+OK message 1 deleted\r\n"
    assert await client.cmd("DELE 1") == b"-ERR no such message\r\n"
    for command in ("RETR 1", "LIST 1", "TOP 1 0", "UIDL 1"):
        assert await client.cmd(command) == b"-ERR no such message\r\n"
    assert await client.cmd("STAT") == f"+OK 1 {len(MSG2)}\r\n".encode()
    assert first.exists()  # only marked, until QUIT
    assert await client.cmd("QUIT") == b"+OK mail.test POP3 server signing off (1 messages left)\r\n"
    assert await client.closed()
    assert not first.exists() and second.exists()
    await wait_until(lambda: world.of(ConnectionClosed))
    retrieved = world.of(MailboxRetrieved)[0]
    assert (retrieved.retrieved, retrieved.deleted) == (1, 1)
    assert world.of(ConnectionClosed)[0].result == "1 retrieved, 1 deleted"


async def test_dele_then_drop_deletes_nothing(world, running, raw_clients):
    first = world.deliver(MSG1)
    client = await raw_clients(running.port)
    await client.login()
    assert await client.cmd("DELE 1") == b"+OK message 1 deleted\r\n"
    await client.close()
    await wait_until(lambda: world.of(ConnectionClosed))
    assert first.exists()
    assert world.of(ConnectionClosed)[0].result == "dropped"
    assert not world.of(MailboxRetrieved)
    assert running.pop.locked() == {}


async def test_rset_unmarks(world, running, raw_clients):
    first, second = world.deliver(MSG1), world.deliver(MSG2)
    client = await raw_clients(running.port)
    await client.login()
    await client.cmd("DELE 1")
    await client.cmd("DELE 2")
    assert await client.cmd("STAT") == b"+OK 0 0\r\n"
    assert await client.cmd("RSET") == f"+OK maildrop has 2 messages ({len(MSG1) + len(MSG2)} octets)\r\n".encode()
    assert await client.cmd("LIST 1") == f"+OK 1 {len(MSG1)}\r\n".encode()
    assert (await client.cmd("QUIT")).startswith(b"+OK")
    assert await client.closed()
    assert first.exists() and second.exists()


async def test_new_mail_during_session_is_not_shown_or_deleted(world, running, raw_clients):
    old = world.deliver(MSG1)
    client = await raw_clients(running.port)
    await client.login()
    new = world.deliver(MSG2)
    assert await client.cmd("STAT") == f"+OK 1 {len(MSG1)}\r\n".encode()
    assert await client.cmd("LIST 2") == b"-ERR no such message\r\n"
    await client.cmd("DELE 1")
    assert (await client.cmd("QUIT")).startswith(b"+OK")
    assert await client.closed()
    assert not old.exists() and new.exists()


async def test_second_session_gets_in_use(world, running, raw_clients):
    first = await raw_clients(running.port)
    await first.login()
    second = await raw_clients(running.port)
    assert await second.cmd(f"USER {ALICE}") == b"+OK send PASS\r\n"
    assert await second.cmd(f"PASS {PASSWORD}") == b"-ERR [IN-USE] maildrop already locked\r\n"
    await first.close()  # a drop releases the lock too
    await wait_until(lambda: running.pop.locked() == {})
    await second.login()
    assert running.pop.locked() == {ALICE: world.of(AuthSucceeded)[-1].session}


@pytest.mark.parametrize("login", ["../alice@localhost", "../../etc/passwd", "alice/../alice@localhost",
                                   "/etc@localhost", "alice@../localhost", "alice@localhost/..",
                                   ".@localhost"])
async def test_path_traversal_login_fails(world, tmp_path, running, raw_clients, login):
    before = sorted(p for p in tmp_path.rglob("*") if "mail" in p.parts)
    client = await raw_clients(running.port)
    assert await client.cmd(f"USER {login}") == b"+OK send PASS\r\n"
    assert await client.cmd(f"PASS {PASSWORD}") == b"-ERR [AUTH] invalid login\r\n"
    assert await client.cmd(b"USER alice\x00@localhost") == b"-ERR control characters in command\r\n"
    assert await client.cmd(f"PASS {PASSWORD}") == b"-ERR USER first\r\n"
    assert sorted(p for p in tmp_path.rglob("*") if "mail" in p.parts) == before


async def test_overlong_lines_keep_the_session(running, raw_clients):
    client = await raw_clients(running.port)
    assert await client.cmd(b"NOOP " + b"x" * 300) == b"-ERR line too long\r\n"
    assert await client.cmd("NOOP") == b"+OK\r\n"
    # Longer than the StreamReader's own 64 KiB limit: skipped to the newline.
    assert await client.cmd(b"USER " + b"y" * 200_000) == b"-ERR line too long\r\n"
    assert await client.cmd("NOOP") == b"+OK\r\n"
    await client.send(b"NOOP\r\nNOOP " + b"z" * 70_000 + b"\r\nNOOP\r\n")  # pipelined
    assert [await client.line() for _ in range(3)] == [b"+OK\r\n", b"-ERR line too long\r\n", b"+OK\r\n"]


async def test_commands_before_login(world, running, raw_clients):
    world.deliver(MSG1)
    client = await raw_clients(running.port)
    for command in ("STAT", "LIST", "RETR 1", "DELE 1", "TOP 1 1", "UIDL", "RSET"):
        assert await client.cmd(command) == b"-ERR command not valid before login\r\n"
    assert await client.cmd("PASS x") == b"-ERR USER first\r\n"
    assert await client.cmd("HELO") == b"-ERR unknown command\r\n"
    assert await client.cmd("QUIT") == b"+OK mail.test POP3 server signing off\r\n"
    assert await client.closed()


async def test_after_login_refuses_authorization_commands(running, raw_clients):
    client = await raw_clients(running.port)
    await client.login()
    for command in ("USER x", "PASS y", "AUTH PLAIN", "STLS"):
        assert await client.cmd(command) == b"-ERR command not valid after login\r\n"


async def test_too_many_errors_closes(running, raw_clients):
    client = await raw_clients(running.port)
    for _ in range(10):
        assert await client.cmd("BOGUS") == b"-ERR unknown command\r\n"
    assert await client.closed()


async def test_max_connections(start, raw_clients):
    server = await start(max_connections=1)
    await raw_clients(server.port)
    refused = await raw_clients(server.port, greeting=False)
    assert await refused.line() == b"-ERR [SYS/TEMP] too many connections\r\n"
    assert await refused.closed()


async def test_idle_timeout_closes_and_unlocks(world, start, raw_clients):
    server = await start(idle_timeout=0.3)
    client = await raw_clients(server.port)
    await client.login()
    assert await client.line() == b"-ERR [SYS/TEMP] idle timeout\r\n"
    assert await client.closed()
    await wait_until(lambda: world.of(ConnectionClosed))
    assert world.of(ConnectionClosed)[0].result == "timeout"
    assert server.pop.locked() == {}


async def test_stls_with_poplib(world, running, client_tls):
    world.deliver(MSG1)

    def script():
        client = poplib_client(running.port)
        client.stls(client_tls)
        capa = client.capa()
        client.user(ALICE)
        client.pass_(PASSWORD)
        _, lines, _ = client.retr(1)
        cipher = client.sock.cipher()
        client.quit()
        return capa, lines, cipher

    capa, lines, cipher = await in_thread(script)
    assert "STLS" not in capa and "USER" in capa
    assert b"\r\n".join(lines) + b"\r\n" == MSG1
    assert cipher is not None
    await wait_until(lambda: world.of(ConnectionClosed))
    assert [e.tls for e in world.of(SessionChanged)] == [True, True, True]
    assert world.store.recent("connections")[0]["tls"] is True


async def test_second_stls_is_refused(running, raw_clients, client_tls):
    client = await raw_clients(running.port)
    assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
    await asyncio.wait_for(client.writer.start_tls(client_tls), WAIT)
    assert await client.cmd("STLS") == b"-ERR already using TLS\r\n"
    await client.login()


async def test_stls_discards_pipelined_plaintext(running, raw_clients, client_tls):
    client = await raw_clients(running.port)
    await client.send(b"STLS\r\nCAPA\r\nUSER alice@localhost\r\n")  # one write: injection attempt
    assert await client.line() == b"+OK begin TLS negotiation\r\n"
    await asyncio.wait_for(client.writer.start_tls(client_tls), WAIT)
    assert await client.silent()  # nothing of the injected CAPA is answered
    assert await client.cmd("NOOP") == b"+OK\r\n"
    assert await client.cmd(f"PASS {PASSWORD}") == b"-ERR USER first\r\n"  # injected USER is gone
    assert await client.silent()


async def test_plaintext_after_stls_fails_handshake(world, running, raw_clients):
    client = await raw_clients(running.port)
    assert await client.cmd("STLS") == b"+OK begin TLS negotiation\r\n"
    await client.send(b"CAPA\r\n")  # not a TLS ClientHello
    assert await client.closed()
    await wait_until(lambda: world.of(ConnectionClosed))
    assert world.of(ConnectionClosed)[0].result == "tls handshake failed"


async def test_failed_logins_are_slowed_and_closed(world, start, raw_clients):
    delay = 0.1
    server = await start(auth_failure_delay=delay)
    client = await raw_clients(server.port)
    took = []
    for _ in range(3):
        await client.cmd(f"USER {ALICE}")
        began = time.monotonic()
        assert await client.cmd("PASS wrong password") == b"-ERR [AUTH] invalid login\r\n"
        took.append(time.monotonic() - began)
    assert await client.closed()  # three strikes in one session
    # The wait comes before the password check: the base delay, doubling per failure.
    assert took[1] >= delay * 0.9 and took[2] >= 2 * delay * 0.9
    # The count is per client IP, so a fresh connection does not reset it.
    again = await raw_clients(server.port)
    await again.cmd(f"USER {ALICE}")
    began = time.monotonic()
    assert await again.cmd("PASS still wrong") == b"-ERR [AUTH] invalid login\r\n"
    assert time.monotonic() - began >= 4 * delay * 0.9
    assert [e.failures for e in world.of(AuthFailed)] == [1, 2, 3, 4]
    # Success resets it.
    await again.login()
    third = await raw_clients(server.port)
    await third.cmd(f"USER {ALICE}")
    began = time.monotonic()
    await third.cmd("PASS wrong again")
    assert time.monotonic() - began < 4 * delay


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_retrieves_message(world, running):
    world.deliver(MSG1)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--max-time", "10", f"pop3://127.0.0.1:{running.port}/1",
        "-u", f"{ALICE}:{PASSWORD}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err
    assert out == MSG1


async def test_close_all_ends_sessions_and_unlocks(world, running, raw_clients):
    client = await raw_clients(running.port)
    await client.login()
    assert running.pop.locked()
    await asyncio.wait_for(running.pop.close_all(), WAIT)
    assert await client.closed()
    assert running.pop.locked() == {} and running.pop.active == 0
    assert world.of(ConnectionClosed)[0].result == "server shutdown"
