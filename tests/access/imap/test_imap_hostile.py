"""Hostile input against the IMAP server: every answer is a tagged BAD/NO or a hang-up, never a crash.

Pre-auth commands, literal bombs (before and after login, synchronising and
LITERAL+), unterminated literals, NUL, overlong lines, out-of-range sets,
IDLE slowloris, connection floods. Plus the no-passwords-in-clear rule for
peers off loopback, at the session layer (tests only run on loopback).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from harness import PASSWORD, RunningServer, make_config
from imap_raw import Raw

from hypothesis import given, settings
from hypothesis import strategies as st

from mailtui.access.imap import dispatch
from mailtui.access.imap.errors import ParseError
from mailtui.access.imap.parser import parse_command
from mailtui.access.imap.session import ImapSession, State
from mailtui.store.mailboxes import MailStore
from mailtui.store.maildir import Maildirs

ALICE = "alice@localhost"


def start(tmp_path, **imap) -> RunningServer:
    srv = RunningServer(make_config(tmp_path / "data", imap={"listen": ["127.0.0.1:0"],
                                                             "auth_failure_delay": 0.05, **imap},
                                    smtp={"listen": ["127.0.0.1:0"], "max_message_size": 100_000})).start()
    srv.add_mailbox(ALICE)
    return srv


@pytest.fixture
def srv(tmp_path):
    server = start(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("command", ["SELECT INBOX", "LIST \"\" *", "FETCH 1 FLAGS", "APPEND INBOX {3}",
                                     "IDLE", "STATUS INBOX (MESSAGES)", "UID FETCH 1:* FLAGS", "NAMESPACE"])
def test_commands_before_login_get_bad(srv, command):
    with Raw(srv.imap_port) as c:
        assert c.cmd("a", command) == b"a BAD Not logged in\r\n"


def test_selected_state_commands_without_a_mailbox(srv):
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        assert c.cmd("a", "FETCH 1 FLAGS") == b"a BAD No mailbox selected\r\n"
        assert c.cmd("b", "LOGIN x y") == b"b BAD Command not valid in this state\r\n"


def test_a_literal_bomb_before_login_is_refused_before_the_continuation(srv):
    with Raw(srv.imap_port) as c:
        c.send(b"a LOGIN {1000000}\r\n")
        reply = c.line()
        assert reply.startswith(b"a NO [TOOBIG]") and not reply.startswith(b"+")
        assert c.cmd("b", "NOOP") == b"b OK NOOP completed\r\n"      # still in step
        c.send(b"c LOGIN {20000+}\r\n")                              # LITERAL+: the bytes are coming
        assert c.line().startswith(b"c NO [TOOBIG]")
        assert c.line() == b"* BYE Literal too large\r\n"
        assert c.closed()


def test_append_over_the_message_size_gets_toobig_before_any_continuation(srv):
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.send(b"a APPEND INBOX {100001}\r\n")
        assert c.line() == b"a NO [TOOBIG] Message too large\r\n"
        c.send(b"b APPEND INBOX {5}\r\n")
        assert c.line().startswith(b"+ ")
        c.send(b"hello\r\n")
        assert c.until(b"b").startswith(b"b OK [APPENDUID")


def test_an_unterminated_literal_times_out(tmp_path):
    srv = start(tmp_path, idle_timeout=0.5)
    try:
        with Raw(srv.imap_port) as c:
            c.login(ALICE, PASSWORD)
            c.send(b"a APPEND INBOX {100}\r\n")
            assert c.line().startswith(b"+")
            c.send(b"only a little")
            assert c.line() == b"* BYE Autologout; idle for too long\r\n"
            assert c.closed()
    finally:
        srv.stop()


def test_slowloris_dribbling_a_line_does_not_extend_the_deadline(tmp_path):
    srv = start(tmp_path, idle_timeout=0.6)
    try:
        with Raw(srv.imap_port) as c:
            started = time.monotonic()
            try:
                for char in b"a LOGIN alice@localhost ":
                    c.send(bytes([char]))
                    time.sleep(0.05)
            except OSError:
                pass
            assert c.closed(3)
            assert time.monotonic() - started < 2.5
    finally:
        srv.stop()


def test_idle_slowloris_is_logged_out_after_the_idle_timeout(tmp_path):
    srv = start(tmp_path, idle_timeout=0.5)
    try:
        with Raw(srv.imap_port) as c:
            c.login(ALICE, PASSWORD)
            c.cmd("s", "SELECT INBOX")
            c.send(b"i IDLE\r\n")
            assert c.line() == b"+ idling\r\n"
            c.send(b"DO")                       # never finishes DONE
            assert c.line() == b"* BYE Autologout; idle for too long\r\n"
    finally:
        srv.stop()


def test_nul_and_garbage_get_bad_and_the_error_budget_ends_the_session(srv):
    with Raw(srv.imap_port) as c:
        assert c.cmd("a", b"NOOP\x00") == b"a BAD NUL octets are not allowed\r\n"
        assert c.cmd("b", "FROB") .startswith(b"b BAD")
        for i in range(7):
            c.cmd(f"x{i}", "NOT-A-COMMAND")
        c.send(b"y HELLO\r\n")
        assert c.line().startswith(b"y BAD")
        assert c.line() == b"* BYE Too many invalid commands\r\n"
        assert c.closed()


def test_an_overlong_line_ends_the_session(srv):
    with Raw(srv.imap_port) as c:
        c.send(b"a NOOP " + b"x" * 10_000 + b"\r\n")      # over 8 KiB before login
        assert c.line() == b"* BYE Command line too long\r\n"
        assert c.closed()


@pytest.mark.parametrize("command", ["FETCH 1:4294967296 FLAGS", "UID FETCH 1:4294967296 FLAGS",
                                     "SEARCH 4294967296", "UID STORE 0 +FLAGS (\\Seen)", "FETCH 5 FLAGS",
                                     "FETCH 1 (BODY[1.0])", "SEARCH " + "NOT " * 100 + "ALL",
                                     "FETCH 1 " + "(" * 40 + "FLAGS" + ")" * 40])
def test_out_of_range_and_deep_requests_get_bad(srv, command):
    srv.call(srv.core.maildirs.deliver_sync, ALICE, b"Subject: x\r\n\r\ny\r\n")
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        assert c.cmd("a", command).splitlines()[-1].startswith(b"a BAD")
        assert c.cmd("b", "NOOP").endswith(b"b OK NOOP completed\r\n")


def test_connection_limits_total_per_ip_and_per_user(tmp_path):
    srv = start(tmp_path, max_connections=3, max_connections_per_ip=2, max_connections_per_user=1)
    try:
        first, second = Raw(srv.imap_port), Raw(srv.imap_port)
        with Raw(srv.imap_port) as third:
            assert third.greeting == b"* BYE Too many connections from your address\r\n"
        assert first.login(ALICE, PASSWORD).startswith(b"L1 OK")
        assert second.login(ALICE, PASSWORD) == b"L1 NO [LIMIT] Too many sessions for this user\r\n"
        first.close()
        second.close()
        srv.wait_for(lambda: srv.core.imap.active == 0, what="sessions to end")
        with Raw(srv.imap_port) as again:
            assert again.login(ALICE, PASSWORD).startswith(b"L1 OK")     # the counts came back down
    finally:
        srv.stop()


def test_many_connections_are_served_and_released(srv):
    clients = [Raw(srv.imap_port) for _ in range(40)]
    try:
        assert all(c.greeting.startswith(b"* OK") for c in clients)
        assert all(c.cmd("n", "NOOP") == b"n OK NOOP completed\r\n" for c in clients)
    finally:
        for c in clients:
            c.close()
    srv.wait_for(lambda: srv.core.imap.active == 0, what="sessions to end")


# -- no passwords in clear off loopback (session layer: no socket) ------------------------
class Host:
    hostname = "mail.test"
    max_message_size = 1000
    tls_available = True

    def __init__(self, store: MailStore):
        self.store = store
        self.verified: list[str] = []

    async def verify(self, session, login, password):
        self.verified.append(login)
        return "alice@localhost"

    def logged_in(self, session) -> bool:
        return True

    def login_failed(self, session, login) -> None:
        pass

    def changed(self, session) -> None:
        pass


class Out:
    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass


async def run(session: ImapSession, line: bytes) -> bytes:
    out = Out()
    await dispatch.handle(session, parse_command([line]), out)
    return out.data


@pytest.mark.parametrize("ip", ["192.0.2.10", "2001:db8::1", "10.1.2.3"])
async def test_a_peer_off_loopback_cannot_log_in_before_tls(tmp_path, ip):
    host = Host(MailStore(Maildirs(tmp_path)))
    session = ImapSession(host, id="I1", ip=ip)
    caps = await run(session, b"a CAPABILITY")
    assert b"LOGINDISABLED" in caps and b"STARTTLS" in caps and b"AUTH=PLAIN" not in caps
    assert (await run(session, b"b LOGIN alice@localhost secret")).startswith(b"b NO [PRIVACYREQUIRED]")
    assert (await run(session, b"c AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")).startswith(b"c NO [PRIVACYREQUIRED]")
    assert host.verified == [] and session.state is State.NOT_AUTHENTICATED
    session.tls_started()
    caps = await run(session, b"d CAPABILITY")
    assert b"LOGINDISABLED" not in caps and b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps
    assert (await run(session, b"e LOGIN alice@localhost secret")).startswith(b"e OK")
    session.close()


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.8.9.10", "::1"])
async def test_loopback_may_log_in_without_tls(tmp_path, ip):
    host = Host(MailStore(Maildirs(tmp_path)))
    session = ImapSession(host, id="I1", ip=ip)
    assert b"AUTH=PLAIN" in await run(session, b"a CAPABILITY")
    assert (await run(session, b"b LOGIN alice@localhost secret")).startswith(b"b OK")
    await asyncio.sleep(0)
    session.close()


COMMANDS = [b"SELECT INBOX", b"EXAMINE Sent", b"FETCH 1:* (FLAGS BODY.PEEK[])", b"UID FETCH 1:* ENVELOPE",
            b"STORE 1 +FLAGS (\\Deleted)", b"EXPUNGE", b"SEARCH TEXT x", b"COPY 1:* Trash", b"MOVE 1 Junk",
            b"CREATE a.b", b"RENAME a b", b"DELETE b", b"LIST \"\" *", b"STATUS INBOX (MESSAGES UNSEEN)",
            b"APPEND INBOX {5+}", b"CLOSE", b"UNSELECT", b"NOOP", b"CHECK", b"IDLE", b"ENABLE X", b"ID NIL"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(COMMANDS), st.binary(max_size=40)), min_size=1, max_size=12))
def test_any_command_sequence_gets_answers_never_exceptions(tmp_path_factory, script):
    root = tmp_path_factory.mktemp("fuzz")

    async def go() -> None:
        maildirs = Maildirs(root)
        maildirs.deliver_sync("alice@localhost", b"Subject: a\r\n\r\nbody\r\n")
        session = ImapSession(Host(MailStore(maildirs)), id="I1", ip="127.0.0.1")
        await run(session, b"l LOGIN alice@localhost secret")
        for n, line in enumerate(script):
            tag = b"t%d" % n
            pieces = [tag + b" " + line]
            if line.endswith(b"{5+}"):
                pieces += [b"hello", b""]
            try:
                command = parse_command(pieces)
            except ParseError as exc:
                assert exc.response().startswith((tag, b"*"))
                continue
            out = Out()
            outcome = await dispatch.handle(session, command, out)
            if outcome.idle:
                dispatch.idle_done(session, b"DONE", out)
            assert out.data.endswith(b"\r\n") and (tag + b" " in out.data or b"* BYE" in out.data), out.data
            if outcome.close:
                break
        session.close()
    asyncio.run(go())
