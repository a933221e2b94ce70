"""The POP3 state machine without sockets: a Pop3Session driven line by line against fake services."""

from __future__ import annotations

import base64
import io

import pytest

from mailtui.access.pop3 import Pop3Reply, Pop3Session, ProtocolError, State
from mailtui.access.pop3.parse import parse_sasl_plain
from mailtui.access.pop3.session import (
    MAX_AUTH_FAILURES,
    MAX_ERRORS,
    NO_PLAINTEXT,
    NO_PLAINTEXT_SASL,
    unique_id,
)
from mailtui.events import MailboxRetrieved
from mailtui.store.folder import Message

KEY = "alice@localhost"
VALIDITY = 1_700_000_000
MESSAGES = [Message(1, "1.a", 10, (), "/nonexistent/1"), Message(2, "2.b", 20, (), "/nonexistent/2")]


class FakeMaildrop:
    """INBOX in memory: what a session asks of a store.folder.Folder."""

    uidvalidity = VALIDITY

    def __init__(self, messages: list[Message] = MESSAGES):
        self.messages = list(messages)
        self.gone: set[int] = set()          # UIDs "IMAP expunged" after the snapshot
        self.expunged: list[int] = []
        self.stored: list[tuple[list[int], str, list[str]]] = []

    def snapshot(self) -> list[Message]:
        return list(self.messages)

    async def open_file(self, uid: int):
        if uid in self.gone:
            raise FileNotFoundError(uid)
        return io.BytesIO(b"Subject: %d\r\n\r\nline 1\r\nline 2\r\n" % uid)

    async def store(self, uids, mode, flags, origin=None) -> list[int]:
        self.stored.append((list(uids), mode, list(flags)))
        return list(uids)

    async def expunge(self, uids, origin=None) -> list[int]:
        self.expunged += uids
        return list(uids)


class FakeServices:
    """What a session needs from its server, in memory."""

    hostname = "mail.test"
    stls_available = True

    def __init__(self):
        self.locks: dict[str, str] = {}
        self.maildrop = FakeMaildrop()
        self.open: list[str] = []
        self.events: list = []
        self.failures = 0
        self.verified: list[str] = []      # logins whose password was checked

    @property
    def removed(self) -> list[Message]:
        return [m for m in MESSAGES if m.uid in self.maildrop.expunged]

    def login_delay(self, ip: str) -> float:
        return 0.0

    async def verify(self, login: str, password) -> str | None:
        self.verified.append(login)
        plain = password.decode() if isinstance(password, bytes) else password   # SASL gives bytes
        return KEY if (login, plain) == (KEY, "secret") else None

    def lock(self, key: str, session_id: str) -> bool:
        return self.locks.setdefault(key, session_id) == session_id

    def unlock(self, key: str, session_id: str) -> None:
        if self.locks.get(key) == session_id:
            del self.locks[key]

    async def open_maildrop(self, key: str) -> FakeMaildrop:
        self.open.append(key)
        return self.maildrop

    def close_maildrop(self, key: str, maildrop) -> None:
        self.open.remove(key)

    def login_failed(self, session, login: str) -> int:
        self.failures += 1
        return self.failures

    def login_succeeded(self, session) -> None:
        self.events.append(("login", session.login))

    def changed(self, session) -> None:
        self.events.append(("state", session.state))

    def publish(self, event) -> None:
        self.events.append(event)


def session(services: FakeServices | None = None, sid: str = "P1", ip: str = "127.0.0.1") -> Pop3Session:
    return Pop3Session(services or FakeServices(), sid, f"{ip}:5000", ip)


async def say(s: Pop3Session, *lines: str) -> list[Pop3Reply]:
    return [await s.handle_line(line.encode() + b"\r\n") for line in lines]


async def test_authorization_then_transaction_then_update():
    services = FakeServices()
    s = session(services)
    assert s.greeting().status == "+OK mail.test POP3 ready"
    stat, = await say(s, "STAT")
    assert stat.status == "-ERR command not valid before login" and s.state is State.AUTHORIZATION
    user, password = await say(s, f"USER {KEY}", "PASS secret")
    assert user.status == "+OK send PASS"
    assert password.status == f"+OK {KEY} has 2 messages (30 octets)"
    assert s.state is State.TRANSACTION and services.locks == {KEY: "P1"}
    replies = await say(s, "STAT", "LIST", "UIDL 2", "DELE 1", "LIST 1", "USER x", "QUIT")
    assert [r.status for r in replies] == [
        "+OK 2 30", "+OK 2 messages (30 octets)", "+OK 2 000000026553f100", "+OK message 1 deleted",
        "-ERR no such message", "-ERR command not valid after login",
        "+OK mail.test POP3 server signing off (1 messages left)"]
    assert replies[1].lines == ["1 10", "2 20"] and replies[-1].close
    assert services.removed == [MESSAGES[0]]
    retrieved = [e for e in services.events if isinstance(e, MailboxRetrieved)]
    assert retrieved == [MailboxRetrieved(session="P1", mailbox=KEY, retrieved=0, deleted=1, at=retrieved[0].at)]
    s.release()
    assert services.locks == {} and services.open == []


async def body(reply: Pop3Reply) -> bytes:
    assert reply.body is not None, reply.status
    return b"".join([chunk async for chunk in reply.body])


@pytest.mark.parametrize("uid, validity, uidl", [
    (1, 1_700_000_000, "000000016553f100"),
    (0x2A, 1, "0000002a00000001"),
    (2**32 - 1, 2**32 - 1, "ffffffffffffffff"),      # the largest: 16 octets, well inside RFC 1939's 70
])
def test_unique_id_is_dovecots_default_format(uid, validity, uidl):
    assert unique_id(uid, validity) == uidl


async def test_retr_marks_seen_at_quit_but_top_and_dele_do_not():
    services = FakeServices()
    s = session(services)
    await say(s, f"USER {KEY}", "PASS secret")
    top, retr2, retr1, dele, quit_ = await say(s, "TOP 1 1", "RETR 2", "RETR 1", "DELE 1", "QUIT")
    assert await body(top) == b"Subject: 1\r\n\r\nline 1\r\n.\r\n"
    assert retr2.status == "+OK 20 octets" and await body(retr2) == b"Subject: 2\r\n\r\nline 1\r\nline 2\r\n.\r\n"
    assert retr1.status == "+OK 10 octets" and await body(retr1)
    assert dele.status == "+OK message 1 deleted" and quit_.close
    # Message 1 was retrieved but deleted: it is expunged, not marked.
    assert services.maildrop.stored == [([2], "add", ["\\Seen"])] and services.maildrop.expunged == [1]
    await s.end()      # the connection ends after QUIT: nothing more to write
    assert len(services.maildrop.stored) == 1 and services.open == [] and services.locks == {}


async def test_a_session_without_quit_marks_what_it_retrieved_and_deletes_nothing():
    """As Dovecot does: \\Seen flags are written when the connection ends, deletions only at QUIT."""
    services = FakeServices()
    s = session(services)
    replies = await say(s, f"USER {KEY}", "PASS secret", "RETR 1", "RETR 2", "DELE 2")
    await body(replies[2])
    await body(replies[3])
    await s.end()
    assert services.maildrop.stored == [([1, 2], "add", ["\\Seen"])] and services.maildrop.expunged == []
    assert services.open == [] and services.locks == {}


async def test_rset_forgets_what_retr_would_mark_and_seen_messages_are_not_marked_again():
    seen = Message(3, "3.c", 30, ("\\Seen",), "/nonexistent/3")
    services = FakeServices()
    services.maildrop = FakeMaildrop([*MESSAGES, seen])
    s = session(services)
    replies = await say(s, f"USER {KEY}", "PASS secret", "RETR 1", "RSET", "RETR 3", "QUIT")
    await body(replies[2])
    await body(replies[4])
    assert replies[-1].status.startswith("+OK") and services.maildrop.stored == []


async def test_a_message_expunged_after_login_is_listed_but_not_readable():
    """RFC 1939's snapshot keeps it; RETR and TOP answer as Dovecot does, and asking twice is an error."""
    services = FakeServices()
    s = session(services)
    await say(s, f"USER {KEY}", "PASS secret")
    services.maildrop.gone.add(2)             # an IMAP session expunged it
    listing, retr, top, again = await say(s, "LIST", "RETR 2", "TOP 2 0", "RETR 2")
    assert listing.lines == ["1 10", "2 20"]
    assert [r.status for r in (retr, top, again)] == ["-ERR Message 2 expunged."] * 3
    assert s.errors == 2 and s.retrieved == set()
    replies = await say(s, "RETR 1", "DELE 2", "QUIT")
    await body(replies[0])
    assert replies[-1].status == "+OK mail.test POP3 server signing off (1 messages left)"
    assert services.maildrop.expunged == [2] and services.maildrop.stored == [([1], "add", ["\\Seen"])]


async def test_rset_unmarks_and_nothing_is_removed():
    services = FakeServices()
    s = session(services)
    await say(s, f"USER {KEY}", "PASS secret", "DELE 1", "DELE 2")
    rset, stat, quit_ = await say(s, "RSET", "STAT", "QUIT")
    assert rset.status == "+OK maildrop has 2 messages (30 octets)" and stat.status == "+OK 2 30"
    assert services.removed == [] and quit_.close


@pytest.mark.parametrize("lines, last", [
    (["PASS secret"], "-ERR USER first"),
    ([f"USER {KEY}", "NOOP", "PASS secret"], "-ERR USER first"),      # PASS must follow USER directly
    ([f"USER {KEY}", "PASS wrong"], "-ERR [AUTH] invalid login"),
    (["AUTH CRAM-MD5"], "-ERR unsupported authentication mechanism"),
    (["STLS", "STLS"], "+OK begin TLS negotiation"),                    # the I/O layer starts TLS
])
async def test_authorization_refusals(lines, last):
    s = session()
    replies = await say(s, *lines)
    assert replies[-1].status == last and s.state is State.AUTHORIZATION


async def test_a_locked_maildrop_is_in_use():
    services = FakeServices()
    first, second = session(services, "P1"), session(services, "P2")
    await say(first, f"USER {KEY}", "PASS secret")
    _, refused = await say(second, f"USER {KEY}", "PASS secret")
    assert refused.status == "-ERR [IN-USE] maildrop already locked" and second.state is State.AUTHORIZATION
    second.release()
    assert services.locks == {KEY: "P1"}


async def test_sasl_plain_initial_response_and_continuation():
    token = base64.b64encode(f"\0{KEY}\0secret".encode()).decode()
    s = session()
    assert (await say(s, f"AUTH PLAIN {token}"))[0].status.startswith(f"+OK {KEY} has 2")
    s = session()
    go_on, done = await say(s, "AUTH PLAIN", token)
    assert go_on.status == "+ " and done.status.startswith("+OK") and s.state is State.TRANSACTION
    s = session()
    _, cancelled = await say(s, "AUTH PLAIN", "*")
    assert cancelled.status == "-ERR authentication cancelled"


async def test_errors_and_failed_logins_end_the_session():
    s = session()
    replies = await say(s, *["FOO"] * MAX_ERRORS)
    assert [r.close for r in replies] == [False] * (MAX_ERRORS - 1) + [True] and s.result == "too many errors"
    s = session()
    replies = await say(s, *[f"USER {KEY}", "PASS wrong"] * MAX_AUTH_FAILURES)
    assert replies[-1].close and s.result == "too many failed logins"


@pytest.mark.parametrize("data, parts", [
    (base64.b64encode(b"\0alice\0pw"), ("", "alice", b"pw")),
    (base64.b64encode(b"admin\0alice\0p w\xff"), ("admin", "alice", b"p w\xff")),
    (b"=", None),                                             # empty: not three parts
    (b"not base64!", None),
    (base64.b64encode(b"alice\0pw"), None),
    (base64.b64encode(b"\0\xff\0pw"), None),                  # authcid not UTF-8
])
def test_parse_sasl_plain(data, parts):
    if parts is None:
        with pytest.raises(ProtocolError) as caught:
            parse_sasl_plain(data)
        assert caught.value.reply == "-ERR malformed authentication data"
    else:
        assert parse_sasl_plain(data) == parts


# -- no passwords in clear over the network (RFC 2595 2.1; Dovecot's disable_plaintext_auth) --------
# What Dovecot 2.3.19 answers with disable_plaintext_auth = yes to a client whose address is not its own
# (checked by hand against dovecot-pop3d, with the client bound to 127.0.0.2):
#   CAPA -> ... STLS, SASL (no mechanisms), no USER;  USER x / PASS y -> NO_PLAINTEXT;
#   AUTH -> "+OK" and an empty list;  AUTH PLAIN ... -> NO_PLAINTEXT_SASL.

TOKEN = base64.b64encode(f"\0{KEY}\0secret".encode()).decode()


def test_the_refusals_are_dovecots_words():
    assert NO_PLAINTEXT == "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
    assert NO_PLAINTEXT_SASL == "-ERR [AUTH] Plaintext authentication disabled."


@pytest.mark.parametrize("ip", ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"])
async def test_before_stls_a_network_client_is_offered_no_password_login(ip):
    s = session(ip=ip)
    [capa] = await say(s, "CAPA")
    assert "STLS" in capa.lines and "USER" not in capa.lines
    assert [line for line in capa.lines if line.startswith("SASL")] == ["SASL"]     # and no mechanism
    [mechanisms] = await say(s, "AUTH")
    assert (mechanisms.status, mechanisms.lines) == ("+OK SASL mechanisms follow", [])


@pytest.mark.parametrize("lines, refusal", [
    ([f"USER {KEY}", "PASS secret"], NO_PLAINTEXT),
    (["PASS secret"], NO_PLAINTEXT),
    ([f"AUTH PLAIN {TOKEN}"], NO_PLAINTEXT_SASL),
    (["AUTH PLAIN", TOKEN], NO_PLAINTEXT_SASL),   # no "+ " is sent: the credentials after it are a bad command
    (["AUTH CRAM-MD5"], NO_PLAINTEXT_SASL),
])
async def test_before_stls_a_network_client_cannot_log_in_and_no_password_is_checked(lines, refusal):
    services = FakeServices()
    s = session(services, ip="192.0.2.1")
    replies = await say(s, *lines)
    assert replies[0].status == refusal
    assert all(r.status.startswith("-ERR") for r in replies)
    assert s.state is State.AUTHORIZATION and services.verified == [] and services.failures == 0


async def test_refusals_count_towards_the_error_budget():
    s = session(ip="192.0.2.1")
    replies = await say(s, *[f"USER {KEY}"] * MAX_ERRORS)
    assert replies[-1].close and s.result == "too many errors"


async def test_after_stls_a_network_client_logs_in_as_usual():
    services = FakeServices()
    s = session(services, ip="192.0.2.1")
    [stls] = await say(s, "STLS")
    assert stls.starttls
    s.tls_started()                  # what the I/O layer does once the handshake is done
    [capa] = await say(s, "CAPA")
    assert "USER" in capa.lines and "SASL PLAIN" in capa.lines and "STLS" not in capa.lines
    _, logged_in = await say(s, f"USER {KEY}", "PASS secret")
    assert logged_in.status.startswith(f"+OK {KEY} has 2") and services.verified == [KEY]


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
async def test_loopback_may_log_in_without_tls(ip):
    s = session(ip=ip)
    [capa] = await say(s, "CAPA")
    assert "USER" in capa.lines and "SASL PLAIN" in capa.lines
    [logged_in] = await say(s, f"AUTH PLAIN {TOKEN}")
    assert logged_in.status.startswith("+OK") and s.state is State.TRANSACTION
