"""The POP3 state machine (RFC 1939): one connection's AUTHORIZATION, TRANSACTION and UPDATE.

Commands come in as lines and go out as :class:`Pop3Reply` objects; the
session never touches a socket, and asks its server for everything else
through :class:`Services` (logins, maildrop locks, the maildrop, events), so
it can be driven by a test without one. States are named as in RFC 1939
section 3; CAPA is RFC 2449, STLS RFC 2595, AUTH PLAIN RFC 4616.

The maildrop is INBOX as IMAP sees it (:class:`~mailtui.store.folder.Folder`,
one per mailbox for the whole process): the session works on a snapshot of
its UIDs taken at login, reads messages by UID (a flag change IMAP makes
renames the file; the UID stays), and expunges through the folder at QUIT,
so IMAP sessions hear of it at once. As Dovecot does (``pop3_no_flag_updates
= no``, its default): RETR, not TOP, marks a message ``\\Seen``, written at QUIT
or when the connection ends without one; a message IMAP expunged meanwhile is
still listed, and RETR or TOP of it gets ``-ERR Message N expunged.``.

No password in clear over the network (RFC 2595 section 2.1; Dovecot's
``disable_plaintext_auth = yes``, whose replies these are): before STLS,
USER, PASS and AUTH PLAIN are refused unless the client is on this machine
(loopback), and CAPA lists no USER and a SASL without mechanisms, so a
client knows to start TLS first. The refusal comes before any password is
checked: a password sent in clear anyway is never tried.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from ...events import Event, MailboxRetrieved
from ...store.folder import FolderGone, Message
from ...store.maildir import MaildirError
from ...wire import is_loopback
from .bodies import one_chunk, read_top, stream_file
from .parse import ProtocolError, parse_command, parse_sasl_plain

log = logging.getLogger(__name__)

MAX_SASL_LINE = 8192        # a base64 PLAIN response with a 1024-character password fits
MAX_ERRORS = 10             # protocol errors before we hang up on a client
MAX_AUTH_FAILURES = 3       # failed logins before we hang up (per session)
SEEN = "\\Seen"
NO_PLAINTEXT = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
NO_PLAINTEXT_SASL = "-ERR [AUTH] Plaintext authentication disabled."


class State(enum.Enum):
    """Session states, named as in RFC 1939 section 3."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


def unique_id(uid: int, uidvalidity: int) -> str:
    """UIDL id: Dovecot's default ``pop3_uidl_format = %08Xu%08Xv`` (it prints lower-case hex).

    The IMAP UID and the folder's UIDVALIDITY, so both protocols name a
    message alike, the id survives restarts and flag changes, and is never
    given to another message (a new UIDVALIDITY changes every id).
    """
    return f"{uid:08x}{uidvalidity:08x}"


class Maildrop(Protocol):
    """The INBOX a session reads: :class:`mailtui.store.folder.Folder`, shared with IMAP."""

    uidvalidity: int

    def snapshot(self) -> list[Message]: ...

    async def open_file(self, uid: int) -> BinaryIO:
        """The message's file; FileNotFoundError once it is expunged."""

    async def store(self, uids: Sequence[int], mode: str, flags: Sequence[str],
                    origin: object = None) -> list[int]: ...

    async def expunge(self, uids: Sequence[int], origin: object = None) -> list[int]: ...


class Services(Protocol):
    """What a session asks of its server (:class:`~mailtui.access.pop3.server.Pop3Server`)."""

    hostname: str

    @property
    def stls_available(self) -> bool: ...

    def login_delay(self, ip: str) -> float:
        """Seconds to wait before checking a password from ``ip`` (the shared login throttle)."""

    async def verify(self, login: str, password: str | bytes) -> str | None:
        """The mailbox key for a login and password, or None."""

    def lock(self, key: str, session_id: str) -> bool:
        """Take the maildrop's exclusive lock (RFC 1939 section 8); False if another session has it."""

    def unlock(self, key: str, session_id: str) -> None: ...

    async def open_maildrop(self, key: str) -> Maildrop:
        """The mailbox's INBOX, brought up to date (may raise MaildirError, FolderGone or OSError)."""

    def close_maildrop(self, key: str, maildrop: Maildrop) -> None: ...

    def login_failed(self, session: Pop3Session, login: str) -> int: ...

    def login_succeeded(self, session: Pop3Session) -> None: ...

    def changed(self, session: Pop3Session) -> None: ...

    def publish(self, event: Event) -> None: ...


@dataclass(slots=True)
class Pop3Reply:
    """What to send for one command; the I/O layer does the writing."""

    status: str                                 # first line, without CRLF
    lines: list[str] | None = None              # multi-line text answer
    body: AsyncIterator[bytes] | None = None    # dot-stuffed bytes, terminator included
    close: bool = False                         # hang up after sending
    starttls: bool = False                      # begin TLS after sending


@dataclass
class Pop3Session:
    """The RFC 1939 state machine for one connection; knows nothing about sockets."""

    server: Services
    id: str
    peer: str
    ip: str
    tls: bool = False
    state: State = State.AUTHORIZATION
    login: str = ""                 # last login tried, then the mailbox key
    key: str | None = None          # mailbox key once authenticated (and locked)
    maildrop: Maildrop | None = None
    messages: list[Message] = field(default_factory=list)  # the snapshot taken at login
    deleted: set[int] = field(default_factory=set)      # 0-based indexes marked by DELE
    retrieved: set[int] = field(default_factory=set)    # 0-based indexes sent by RETR
    seen: set[int] = field(default_factory=set)         # UIDs to mark \Seen (RETR; RSET forgets them)
    gone_asked: set[int] = field(default_factory=set)   # message numbers found expunged by RETR/TOP
    removed: int = 0
    errors: int = 0
    auth_failures: int = 0
    result: str = ""
    _user: str | None = None
    _sasl_pending: bool = False

    # -- entry points --

    def greeting(self) -> Pop3Reply:
        return Pop3Reply(f"+OK {self.server.hostname} POP3 ready")

    async def handle_line(self, line: bytes) -> Pop3Reply:
        """Answer one line; client mistakes become ``-ERR`` replies, never exceptions."""
        if self._sasl_pending:
            self._sasl_pending = False
            return await self._sasl_response(line)
        try:
            command = parse_command(line)
            user, self._user = self._user, None  # PASS must directly follow USER
            handler = self._handlers(command.verb)
            if command.verb == "PASS":
                return await self._pass(user, *command.args)
            return await handler(*command.args)
        except ProtocolError as exc:
            return self.error(exc.reply)

    def line_too_long(self) -> Pop3Reply:
        self._sasl_pending = False
        return self.error("-ERR line too long")

    def error(self, text: str) -> Pop3Reply:
        """Count a protocol error; the last one allowed also hangs up."""
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            self.result = "too many errors"
            return Pop3Reply(text, close=True)
        return Pop3Reply(text)

    def tls_started(self) -> None:
        self.tls = True
        self._user = None

    @property
    def plaintext_ok(self) -> bool:
        """Whether a password may be sent now: inside TLS, or from this machine."""
        return self.tls or is_loopback(self.ip)

    def release(self) -> None:
        """Let go of the maildrop and unlock it; safe to call more than once."""
        if self.maildrop is not None and self.key is not None:
            self.server.close_maildrop(self.key, self.maildrop)
            self.maildrop = None
        if self.key is not None:
            self.server.unlock(self.key, self.id)

    async def end(self) -> None:
        """The connection is over: what RETR sent is marked \\Seen even without QUIT (as Dovecot does)."""
        try:
            if self.maildrop is not None and self.state is State.TRANSACTION and self.seen:
                await self.maildrop.store(sorted(self.seen), "add", [SEEN], origin=self.id)
        except Exception:      # the server's clean-up after us must run whatever happens here
            log.exception("POP3 %s: cannot mark retrieved messages seen", self.id)
        finally:
            self.release()

    # -- dispatch --

    def _handlers(self, verb: str):
        common = {"CAPA": self._capa, "QUIT": self._quit, "NOOP": self._noop}
        if self.state is State.AUTHORIZATION:
            table = common | {"USER": self._user_cmd, "PASS": self._pass, "AUTH": self._auth,
                              "STLS": self._stls}
            refusal = "-ERR command not valid before login"
        else:
            table = common | {"STAT": self._stat, "LIST": self._list, "UIDL": self._uidl,
                              "RETR": self._retr, "TOP": self._top, "DELE": self._dele,
                              "RSET": self._rset}
            refusal = "-ERR command not valid after login"
        handler = table.get(verb)
        if handler is None:
            raise ProtocolError(refusal)
        return handler

    # -- any state --

    async def _capa(self) -> Pop3Reply:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            caps += ["USER", "SASL PLAIN"] if self.plaintext_ok else ["SASL"]
            if self.server.stls_available and not self.tls:
                caps.append("STLS")
        caps.append("IMPLEMENTATION mailtui")
        return Pop3Reply("+OK capability list follows", lines=caps)

    async def _noop(self) -> Pop3Reply:
        return Pop3Reply("+OK")

    async def _quit(self) -> Pop3Reply:
        host = self.server.hostname
        if self.state is State.AUTHORIZATION:
            self.result = "quit before login"
            return Pop3Reply(f"+OK {host} POP3 server signing off", close=True)
        self.state = State.UPDATE
        self.server.changed(self)
        failed = not await self._update()
        self.removed = 0 if failed else len(self.deleted)
        self.result = f"{len(self.retrieved)} retrieved, {self.removed} deleted"
        self.server.publish(MailboxRetrieved(session=self.id, mailbox=self.key or "",
                                              retrieved=len(self.retrieved), deleted=self.removed))
        if failed:
            return Pop3Reply("-ERR [SYS/TEMP] some deleted messages not removed", close=True)
        left = len(self.messages) - len(self.deleted)
        return Pop3Reply(f"+OK {host} POP3 server signing off ({left} messages left)", close=True)

    async def _update(self) -> bool:
        """The UPDATE state (RFC 1939 section 6): mark what was retrieved, expunge what was deleted."""
        assert self.maildrop is not None
        deleted = [self.messages[i].uid for i in sorted(self.deleted)]
        seen = sorted(self.seen.difference(deleted))
        try:
            if seen:
                await self.maildrop.store(seen, "add", [SEEN], origin=self.id)
            if deleted:
                await self.maildrop.expunge(deleted, origin=self.id)   # IMAP sessions hear of it now
        except OSError:
            log.exception("POP3 %s: cannot update maildrop %s", self.id, self.key)
            return False
        return True

    # -- AUTHORIZATION --

    async def _stls(self) -> Pop3Reply:
        if self.tls:
            raise ProtocolError("-ERR already using TLS")
        if not self.server.stls_available:
            raise ProtocolError("-ERR STLS not available")
        return Pop3Reply("+OK begin TLS negotiation", starttls=True)

    async def _user_cmd(self, name: str) -> Pop3Reply:
        if not self.plaintext_ok:
            raise ProtocolError(NO_PLAINTEXT)
        # Always +OK: whether a mailbox exists is only revealed by a correct password.
        self._user = name
        return Pop3Reply("+OK send PASS")

    async def _pass(self, user: str | None, password: str = "") -> Pop3Reply:
        if not self.plaintext_ok:
            raise ProtocolError(NO_PLAINTEXT)
        if user is None:
            raise ProtocolError("-ERR USER first")
        return await self._login(user, password)

    async def _auth(self, mechanism: str | None = None, initial: str | None = None) -> Pop3Reply:
        if mechanism is None:
            return Pop3Reply("+OK SASL mechanisms follow", lines=["PLAIN"] if self.plaintext_ok else [])
        if not self.plaintext_ok:
            raise ProtocolError(NO_PLAINTEXT_SASL)
        if mechanism.upper() != "PLAIN":
            raise ProtocolError("-ERR unsupported authentication mechanism")
        if initial is None:
            self._sasl_pending = True
            return Pop3Reply("+ ")
        return await self._sasl_plain(initial.encode("utf-8", "surrogateescape"))

    async def _sasl_response(self, line: bytes) -> Pop3Reply:
        line = line.rstrip(b"\r\n")
        if len(line) + 2 > MAX_SASL_LINE:
            return self.error("-ERR line too long")
        if line == b"*":
            return self.error("-ERR authentication cancelled")
        return await self._sasl_plain(line)

    async def _sasl_plain(self, data: bytes) -> Pop3Reply:
        try:
            as_user, login, password = parse_sasl_plain(data)
        except ProtocolError as exc:
            return self.error(exc.reply)
        if as_user and as_user.strip().lower() != login.strip().lower():
            return await self._auth_failed(login)  # no proxy logins
        return await self._login(login, password)

    async def _login(self, login: str, password: str | bytes) -> Pop3Reply:
        """Verify, lock the maildrop and snapshot its messages (RFC 1939 section 4)."""
        login = login.strip().lower()
        self.login = login
        await asyncio.sleep(self.server.login_delay(self.ip))
        key = await self.server.verify(login, password)
        if key is None:
            return await self._auth_failed(login)
        if not self.server.lock(key, self.id):
            return Pop3Reply("-ERR [IN-USE] maildrop already locked")
        self.key = key
        try:
            self.maildrop = await self.server.open_maildrop(key)
        except (MaildirError, FolderGone, OSError):
            log.exception("cannot open maildrop %s", key)
            self.release()
            self.key = None
            return Pop3Reply("-ERR [SYS/TEMP] cannot open maildrop")
        self.messages = messages = self.maildrop.snapshot()
        self.state = State.TRANSACTION
        self.login = key
        self.server.login_succeeded(self)
        return Pop3Reply(f"+OK {key} has {len(messages)} messages ({sum(m.size for m in messages)} octets)")

    async def _auth_failed(self, login: str) -> Pop3Reply:
        self.auth_failures += 1
        self.server.login_failed(self, login)
        if self.auth_failures >= MAX_AUTH_FAILURES:
            self.result = "too many failed logins"
            return Pop3Reply("-ERR [AUTH] invalid login", close=True)
        return Pop3Reply("-ERR [AUTH] invalid login")

    # -- TRANSACTION --

    def _message(self, number: int) -> Message:
        index = number - 1
        if not 0 <= index < len(self.messages) or index in self.deleted:
            raise ProtocolError("-ERR no such message")
        return self.messages[index]

    def _live(self) -> list[tuple[int, Message]]:
        return [(i + 1, m) for i, m in enumerate(self.messages) if i not in self.deleted]

    async def _stat(self) -> Pop3Reply:
        live = self._live()
        return Pop3Reply(f"+OK {len(live)} {sum(m.size for _, m in live)}")

    async def _list(self, number: int | None = None) -> Pop3Reply:
        if number is not None:
            return Pop3Reply(f"+OK {number} {self._message(number).size}")
        live = self._live()
        return Pop3Reply(f"+OK {len(live)} messages ({sum(m.size for _, m in live)} octets)",
                     lines=[f"{n} {m.size}" for n, m in live])

    async def _uidl(self, number: int | None = None) -> Pop3Reply:
        assert self.maildrop is not None
        validity = self.maildrop.uidvalidity
        if number is not None:
            return Pop3Reply(f"+OK {number} {unique_id(self._message(number).uid, validity)}")
        return Pop3Reply("+OK unique-id listing follows",
                         lines=[f"{n} {unique_id(m.uid, validity)}" for n, m in self._live()])

    async def _retr(self, number: int) -> Pop3Reply:
        message = self._message(number)
        fh = await self._open(message)
        if fh is None:
            return self._expunged(number)
        self.retrieved.add(number - 1)
        if SEEN not in message.flags:
            self.seen.add(message.uid)
        return Pop3Reply(f"+OK {message.size} octets", body=stream_file(fh, asyncio.get_running_loop()))

    async def _top(self, number: int, lines: int) -> Pop3Reply:
        fh = await self._open(self._message(number))
        if fh is None:
            return self._expunged(number)
        data = await asyncio.get_running_loop().run_in_executor(None, read_top, fh, lines)
        return Pop3Reply("+OK top of message follows", body=one_chunk(data))

    async def _open(self, message: Message) -> BinaryIO | None:
        """The message's file by UID (IMAP may have renamed it since login); None if it was expunged."""
        assert self.maildrop is not None
        try:
            return await self.maildrop.open_file(message.uid)
        except FileNotFoundError:
            return None
        except OSError:
            log.exception("POP3 %s: cannot open message %d", self.id, message.uid)
            raise ProtocolError("-ERR [SYS/TEMP] cannot read the message") from None

    def _expunged(self, number: int) -> Pop3Reply:
        """A message IMAP expunged after login: still listed (RFC 1939's snapshot), not readable.

        Dovecot's words. Asking again counts as an error, so a client that
        loops on it is hung up on in the end.
        """
        reply = f"-ERR Message {number} expunged."
        if number in self.gone_asked:
            return self.error(reply)
        self.gone_asked.add(number)
        return Pop3Reply(reply)

    async def _dele(self, number: int) -> Pop3Reply:
        self._message(number)
        self.deleted.add(number - 1)
        return Pop3Reply(f"+OK message {number} deleted")

    async def _rset(self) -> Pop3Reply:
        self.deleted.clear()
        self.seen.clear()
        return Pop3Reply(f"+OK maildrop has {len(self.messages)} messages "
                     f"({sum(m.size for m in self.messages)} octets)")
