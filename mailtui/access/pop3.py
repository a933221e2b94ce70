"""POP3 server (RFC 1939, CAPA from RFC 2449, STLS from RFC 2595, AUTH PLAIN).

Three layers, each testable on its own:

* :func:`parse_command` turns one command line into ``(verb, args)`` or
  raises :class:`ProtocolError` carrying the ``-ERR`` reply; it is pure.
* :class:`Pop3Session` is the RFC 1939 state machine (AUTHORIZATION,
  TRANSACTION, UPDATE) for one connection. It returns :class:`Reply`
  objects and never touches a socket.
* :class:`Pop3Server` owns the sockets: reading lines under limits and
  timeouts, writing replies and message bodies, STLS, connection
  accounting, maildrop locks, per-IP login throttling and events.

Messages are Maildir files stored with CRLF line endings and without
dot-stuffing, so the octet counts we announce are plain file sizes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import itertools
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, NamedTuple

from ..admin.registry import Registry
from ..admin.throttle import LoginThrottle
from ..config import Pop3Config
from ..events import (
    AuthFailed,
    AuthSucceeded,
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    MailboxRetrieved,
    SessionChanged,
)
from ..store.db import Store
from ..store.maildir import MaildirError, Maildirs, StoredMessage
from ..wire import dot_stuff, peer_of

log = logging.getLogger(__name__)

CRLF = b"\r\n"
MAX_COMMAND_LINE = 255      # octets including CRLF (RFC 2449 section 4)
MAX_SASL_LINE = 8192        # a base64 PLAIN response with a 1024-character password fits
MAX_ERRORS = 10             # protocol errors before we hang up on a client
MAX_AUTH_FAILURES = 3       # failed logins before we hang up (per session)
CHUNK = 64 * 1024           # file read size for RETR

_session_ids = itertools.count(1)
_NUMBER = re.compile(r"[0-9]{1,9}")
_UID_OK = re.compile(r"[\x21-\x7e]{1,70}")


class ProtocolError(Exception):
    """A client mistake; ``reply`` is the complete ``-ERR`` line to send."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


class State(enum.Enum):
    """Session states, named as in RFC 1939 section 3."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


# -- layer 1: the command parser ------------------------------------------------

class Command(NamedTuple):
    verb: str
    args: tuple[str | int, ...]


# verb -> (minimum args, maximum args, positions of numeric args)
_SYNTAX: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "CAPA": (0, 0, ()), "QUIT": (0, 0, ()), "STLS": (0, 0, ()), "NOOP": (0, 0, ()),
    "RSET": (0, 0, ()), "STAT": (0, 0, ()), "USER": (1, 1, ()), "PASS": (1, 1, ()),
    "AUTH": (0, 2, ()), "LIST": (0, 1, (0,)), "UIDL": (0, 1, (0,)), "RETR": (1, 1, (0,)),
    "DELE": (1, 1, (0,)), "TOP": (2, 2, (0, 1)),
}


def parse_command(line: bytes) -> Command:
    """Parse one command line (with or without its CRLF).

    Pure syntax: the verb must be known and the arguments well formed; whether
    the command makes sense in the current state is the session's business.
    Numeric arguments come back as ``int``. PASS keeps the rest of the line as
    its one argument, because passwords may contain spaces (RFC 1939 section 7).
    """
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    if len(line) + 2 > MAX_COMMAND_LINE:
        raise ProtocolError("-ERR line too long")
    if not line:
        raise ProtocolError("-ERR empty command")
    if any(b < 0x20 or b == 0x7F for b in line):
        raise ProtocolError("-ERR control characters in command")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("-ERR command is not valid UTF-8") from None
    verb, _, rest = text.partition(" ")
    if not (verb.isascii() and verb.isalpha()):
        raise ProtocolError("-ERR unknown command")
    verb = verb.upper()
    syntax = _SYNTAX.get(verb)
    if syntax is None:
        raise ProtocolError("-ERR unknown command")
    if verb == "PASS":
        if not rest:
            raise ProtocolError("-ERR PASS needs a password")
        return Command(verb, (rest,))
    words = [w for w in rest.split(" ") if w]
    low, high, numeric = syntax
    if not low <= len(words) <= high:
        raise ProtocolError(f"-ERR wrong number of arguments for {verb}")
    args: list[str | int] = list(words)
    for pos in numeric:
        if pos < len(words):
            if not _NUMBER.fullmatch(words[pos]):
                raise ProtocolError(f"-ERR invalid number {words[pos][:20]!r}")
            args[pos] = int(words[pos])
    return Command(verb, tuple(args))


# -- message bodies ---------------------------------------------------------------

def _terminator(tail: bytes) -> bytes:
    """End a multi-line body, adding the CRLF a file may lack before the final '.'."""
    if not tail or tail.endswith(CRLF):
        return b".\r\n"
    if tail.endswith(b"\r"):
        return b"\n.\r\n"
    return b"\r\n.\r\n"


async def _stream_file(fh, loop: asyncio.AbstractEventLoop) -> AsyncIterator[bytes]:
    """Dot-stuffed chunks of an open file, read off the event loop, then the terminator."""
    try:
        at_start, tail = True, b""
        while chunk := await loop.run_in_executor(None, fh.read, CHUNK):
            out, at_start = dot_stuff(chunk, at_start)
            tail = (tail + chunk)[-2:]
            yield out
        yield _terminator(tail)
    finally:
        fh.close()


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    out, _ = dot_stuff(data, True)
    yield out + _terminator(data[-2:])


def _read_top(path, lines: int) -> bytes:
    """The header, the blank line and ``lines`` body lines of a message (RFC 1939 TOP)."""
    out: list[bytes] = []
    with open(path, "rb") as fh:
        for line in fh:
            out.append(line)
            if line in (b"\r\n", b"\n"):
                break
        else:
            return b"".join(out)
        out.extend(itertools.islice(fh, lines))
    return b"".join(out)


def unique_id(message: StoredMessage) -> str:
    """UIDL id: the Maildir name; hashed if it breaks RFC 1939's 1-70 printable octets."""
    if _UID_OK.fullmatch(message.name):
        return message.name
    return hashlib.sha1(message.name.encode("utf-8", "surrogateescape")).hexdigest()


# -- layer 2: the session state machine -------------------------------------------

@dataclass(slots=True)
class Reply:
    """What to send for one command; the I/O layer does the writing."""

    status: str                                 # first line, without CRLF
    lines: list[str] | None = None              # multi-line text answer
    body: AsyncIterator[bytes] | None = None    # dot-stuffed bytes, terminator included
    close: bool = False                         # hang up after sending
    starttls: bool = False                      # begin TLS after sending


@dataclass
class Pop3Session:
    """The RFC 1939 state machine for one connection; knows nothing about sockets."""

    server: "Pop3Server"
    id: str
    peer: str
    ip: str
    tls: bool = False
    state: State = State.AUTHORIZATION
    login: str = ""                 # last login tried, then the mailbox key
    key: str | None = None          # mailbox key once authenticated (and locked)
    messages: list[StoredMessage] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)      # 0-based indexes marked by DELE
    retrieved: set[int] = field(default_factory=set)    # 0-based indexes sent by RETR
    removed: int = 0
    errors: int = 0
    auth_failures: int = 0
    result: str = ""
    _user: str | None = None
    _sasl_pending: bool = False

    # -- entry points --

    def greeting(self) -> Reply:
        return Reply(f"+OK {self.server.hostname} POP3 ready")

    async def handle_line(self, line: bytes) -> Reply:
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

    def line_too_long(self) -> Reply:
        self._sasl_pending = False
        return self.error("-ERR line too long")

    def error(self, text: str) -> Reply:
        """Count a protocol error; the last one allowed also hangs up."""
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            self.result = "too many errors"
            return Reply(text, close=True)
        return Reply(text)

    def tls_started(self) -> None:
        self.tls = True
        self._user = None

    def release(self) -> None:
        """Unlock the maildrop; safe to call more than once."""
        if self.key is not None:
            self.server._unlock(self.key, self.id)

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

    async def _capa(self) -> Reply:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            caps += ["USER", "SASL PLAIN"]
            if self.server.tls_context is not None and not self.tls:
                caps.append("STLS")
        caps.append("IMPLEMENTATION mailtui")
        return Reply("+OK capability list follows", lines=caps)

    async def _noop(self) -> Reply:
        return Reply("+OK")

    async def _quit(self) -> Reply:
        host = self.server.hostname
        if self.state is State.AUTHORIZATION:
            self.result = "quit before login"
            return Reply(f"+OK {host} POP3 server signing off", close=True)
        self.state = State.UPDATE
        self.server._changed(self)
        failed = await self.server._remove(self, [self.messages[i] for i in sorted(self.deleted)])
        self.removed = len(self.deleted) - failed
        self.result = f"{len(self.retrieved)} retrieved, {self.removed} deleted"
        self.server._publish(MailboxRetrieved(session=self.id, mailbox=self.key or "",
                                              retrieved=len(self.retrieved), deleted=self.removed))
        if failed:
            return Reply("-ERR [SYS/TEMP] some deleted messages not removed", close=True)
        left = len(self.messages) - len(self.deleted)
        return Reply(f"+OK {host} POP3 server signing off ({left} messages left)", close=True)

    # -- AUTHORIZATION --

    async def _stls(self) -> Reply:
        if self.tls:
            raise ProtocolError("-ERR already using TLS")
        if self.server.tls_context is None:
            raise ProtocolError("-ERR STLS not available")
        return Reply("+OK begin TLS negotiation", starttls=True)

    async def _user_cmd(self, name: str) -> Reply:
        # Always +OK: whether a mailbox exists is only revealed by a correct password.
        self._user = name
        return Reply("+OK send PASS")

    async def _pass(self, user: str | None, password: str = "") -> Reply:
        if user is None:
            raise ProtocolError("-ERR USER first")
        return await self._login(user, password)

    async def _auth(self, mechanism: str | None = None, initial: str | None = None) -> Reply:
        if mechanism is None:
            return Reply("+OK SASL mechanisms follow", lines=["PLAIN"])
        if mechanism.upper() != "PLAIN":
            raise ProtocolError("-ERR unsupported authentication mechanism")
        if initial is None:
            self._sasl_pending = True
            return Reply("+ ")
        return await self._sasl_plain(initial.encode("utf-8", "surrogateescape"))

    async def _sasl_response(self, line: bytes) -> Reply:
        line = line.rstrip(b"\r\n")
        if len(line) + 2 > MAX_SASL_LINE:
            return self.error("-ERR line too long")
        if line == b"*":
            return self.error("-ERR authentication cancelled")
        return await self._sasl_plain(line)

    async def _sasl_plain(self, data: bytes) -> Reply:
        """RFC 4616: base64 of ``authzid NUL authcid NUL password``."""
        try:
            raw = b"" if data == b"=" else base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return self.error("-ERR malformed authentication data")
        parts = raw.split(b"\0")
        if len(parts) != 3:
            return self.error("-ERR malformed authentication data")
        authzid, authcid, password = parts
        try:
            login = authcid.decode("utf-8")
            as_user = authzid.decode("utf-8")
        except UnicodeDecodeError:
            return self.error("-ERR malformed authentication data")
        if as_user and as_user.strip().lower() != login.strip().lower():
            return await self._auth_failed(login)  # no proxy logins
        return await self._login(login, password)

    async def _login(self, login: str, password: str | bytes) -> Reply:
        """Verify, lock the maildrop and snapshot its messages (RFC 1939 section 4)."""
        login = login.strip().lower()
        self.login = login
        await asyncio.sleep(self.server.logins.delay(self.ip, self.server.config.auth_failure_delay))
        key = await self.server.registry.verify(login, password)
        if key is None:
            return await self._auth_failed(login)
        if not self.server._lock(key, self.id):
            return Reply("-ERR [IN-USE] maildrop already locked")
        self.key = key
        try:
            loop = asyncio.get_running_loop()
            messages = await loop.run_in_executor(None, self.server.maildirs.list, key)
        except (MaildirError, OSError):
            log.exception("cannot list maildrop %s", key)
            self.release()
            self.key = None
            return Reply("-ERR [SYS/TEMP] cannot open maildrop")
        self.messages = messages
        self.state = State.TRANSACTION
        self.login = key
        self.server._login_succeeded(self)
        return Reply(f"+OK {key} has {len(messages)} messages ({sum(m.size for m in messages)} octets)")

    async def _auth_failed(self, login: str) -> Reply:
        self.auth_failures += 1
        self.server._login_failed(self, login)
        if self.auth_failures >= MAX_AUTH_FAILURES:
            self.result = "too many failed logins"
            return Reply("-ERR [AUTH] invalid login", close=True)
        return Reply("-ERR [AUTH] invalid login")

    # -- TRANSACTION --

    def _message(self, number: int) -> StoredMessage:
        index = number - 1
        if not 0 <= index < len(self.messages) or index in self.deleted:
            raise ProtocolError("-ERR no such message")
        return self.messages[index]

    def _live(self) -> list[tuple[int, StoredMessage]]:
        return [(i + 1, m) for i, m in enumerate(self.messages) if i not in self.deleted]

    async def _stat(self) -> Reply:
        live = self._live()
        return Reply(f"+OK {len(live)} {sum(m.size for _, m in live)}")

    async def _list(self, number: int | None = None) -> Reply:
        if number is not None:
            return Reply(f"+OK {number} {self._message(number).size}")
        live = self._live()
        return Reply(f"+OK {len(live)} messages ({sum(m.size for _, m in live)} octets)",
                     lines=[f"{n} {m.size}" for n, m in live])

    async def _uidl(self, number: int | None = None) -> Reply:
        if number is not None:
            return Reply(f"+OK {number} {unique_id(self._message(number))}")
        return Reply("+OK unique-id listing follows",
                     lines=[f"{n} {unique_id(m)}" for n, m in self._live()])

    async def _retr(self, number: int) -> Reply:
        message = self._message(number)
        loop = asyncio.get_running_loop()
        try:
            fh = await loop.run_in_executor(None, open, message.path, "rb")
        except OSError:
            raise ProtocolError("-ERR [SYS/TEMP] message is no longer available") from None
        self.retrieved.add(number - 1)
        return Reply(f"+OK {message.size} octets", body=_stream_file(fh, loop))

    async def _top(self, number: int, lines: int) -> Reply:
        message = self._message(number)
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, _read_top, message.path, lines)
        except OSError:
            raise ProtocolError("-ERR [SYS/TEMP] message is no longer available") from None
        return Reply("+OK top of message follows", body=_one_chunk(data))

    async def _dele(self, number: int) -> Reply:
        self._message(number)
        self.deleted.add(number - 1)
        return Reply(f"+OK message {number} deleted")

    async def _rset(self) -> Reply:
        self.deleted.clear()
        return Reply(f"+OK maildrop has {len(self.messages)} messages "
                     f"({sum(m.size for m in self.messages)} octets)")


# -- layer 3: sockets -----------------------------------------------------------

_TOO_LONG = object()  # _read_line's answer for a line longer than the reader's buffer limit


class _IdleTimeout(Exception):
    """The client sent nothing for ``idle_timeout`` seconds."""


class _StalledWriter(Exception):
    """The client stopped reading what we send."""


def _discard_buffered(reader: asyncio.StreamReader) -> int:
    """Drop plaintext a client pipelined after STLS (CVE-2011-0411 class).

    Anything sent before the TLS handshake was not protected by it and must not
    be executed as if it had been. StreamReader has no public API for this; its
    buffer is a bytearray. Must run with no ``await`` before ``start_tls``
    pauses the plaintext transport, so that no byte slips in between.
    """
    buffer = getattr(reader, "_buffer", None)
    if isinstance(buffer, bytearray):
        dropped = len(buffer)
        buffer.clear()
        return dropped
    return 0


class Pop3Server:
    """Serves POP3 connections; use :meth:`handle` with ``asyncio.start_server``."""

    def __init__(self, *, config: Pop3Config, hostname: str, registry: Registry, maildirs: Maildirs,
                 bus: EventBus, tls_context: ssl.SSLContext | None, store: Store | None = None,
                 logins: LoginThrottle | None = None):
        self.config = config
        self.hostname = hostname
        self.registry = registry
        self.maildirs = maildirs
        self.bus = bus
        self.tls_context = tls_context
        self.store = store
        self.active = 0                               # open connections
        self._locks: dict[str, str] = {}              # mailbox key -> session id
        self.logins = logins or LoginThrottle()
        self._tasks: set[asyncio.Task] = set()

    # -- public --

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port`` (port 0 picks a free one)."""
        return await asyncio.start_server(self.handle, host, port)

    async def close_all(self) -> None:
        """Cancel every open session and wait for their clean-up (shutdown, tests)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def locked(self) -> dict[str, str]:
        """Maildrops in use: mailbox key -> session id."""
        return dict(self._locks)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run one connection to the end; never raises for client behaviour."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        ip, peer = peer_of(writer.get_extra_info("peername"))
        session = Pop3Session(self, f"P{next(_session_ids)}", peer, ip)
        started = time.time()
        self._publish(ConnectionOpened(session=session.id, proto="pop3", peer=ip, registered=False))
        over_limit = self.active >= self.config.max_connections
        self.active += 1
        result = "dropped"
        try:
            if over_limit:
                result = "too many connections"
                writer.write(b"-ERR [SYS/TEMP] too many connections\r\n")
                await self._drain(writer)
            else:
                result = await self._converse(session, reader, writer)
        except _IdleTimeout:
            result = "timeout"
            writer.write(b"-ERR [SYS/TEMP] idle timeout\r\n")
        except _StalledWriter:
            result = "timeout (client stopped reading)"
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            result = "dropped"
        except asyncio.CancelledError:
            # Only close_all() cancels us. Not re-raised: nobody awaits this task, and
            # Python 3.11's start_server callback logs a traceback for cancelled ones.
            result = "server shutdown"
        except Exception as exc:
            log.exception("POP3 session %s failed", session.id)
            result = f"internal error: {type(exc).__name__}"
        finally:
            self.active -= 1
            session.release()
            if task is not None:
                self._tasks.discard(task)
            if result == "dropped" and session.retrieved:
                result = f"dropped, {len(session.retrieved)} retrieved, nothing deleted"
            self._publish(ConnectionClosed(session=session.id, proto="pop3", peer=ip, result=result,
                                           messages=len(session.retrieved)))
            if self.store is not None:
                self.store.log("connections", {"time": started, "proto": "pop3", "peer": peer,
                                               "login": session.login, "result": result,
                                               "session": session.id, "tls": session.tls,
                                               "duration": round(time.time() - started, 3)})
            await self._close(writer)

    # -- the I/O loop --

    async def _converse(self, session: Pop3Session, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> str:
        await self._send(writer, session.greeting())
        while True:
            line = await self._read_line(reader)
            if line is None:
                return "dropped"
            reply = session.line_too_long() if line is _TOO_LONG else await session.handle_line(line)
            await self._send(writer, reply)
            if reply.starttls:
                if not await self._start_tls(session, reader, writer):
                    return "tls handshake failed"
            if reply.close:
                return session.result or "closed"

    async def _read_line(self, reader: asyncio.StreamReader):
        """Next line, ``None`` at EOF, or ``_TOO_LONG`` once an overlong line is skipped."""
        overlong = False
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                while True:
                    try:
                        line = await reader.readuntil(b"\n")
                    except asyncio.LimitOverrunError as exc:
                        # Longer than the reader's buffer limit: skip to the newline.
                        await reader.readexactly(exc.consumed)
                        overlong = True
                        continue
                    return _TOO_LONG if overlong else line
        except asyncio.IncompleteReadError:
            return None
        except TimeoutError:
            raise _IdleTimeout from None

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        data = reply.status.encode("utf-8") + CRLF
        if reply.lines is not None:
            data += b"".join((("." + line) if line.startswith(".") else line).encode("utf-8") + CRLF
                             for line in reply.lines) + b".\r\n"
        writer.write(data)
        if reply.body is not None:
            try:
                async for chunk in reply.body:
                    writer.write(chunk)
                    await self._drain(writer)
            finally:
                await reply.body.aclose()
        await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                await writer.drain()
        except TimeoutError:
            raise _StalledWriter from None

    async def _start_tls(self, session: Pop3Session, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bool:
        assert self.tls_context is not None
        dropped = _discard_buffered(reader)  # no await between this and start_tls pausing reads
        if dropped:
            log.info("POP3 %s: discarded %d octets pipelined after STLS", session.id, dropped)
        try:
            await writer.start_tls(self.tls_context,
                                   ssl_handshake_timeout=min(self.config.idle_timeout, 60.0))
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            log.info("POP3 %s: TLS handshake failed: %s", session.id, exc)
            return False
        session.tls_started()
        self._changed(session)
        return True

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            async with asyncio.timeout(2.0):
                await writer.wait_closed()
        except Exception:
            writer.transport.abort()

    # -- services for sessions --

    def _publish(self, event) -> None:
        try:
            self.bus.publish(event)
        except Exception:  # a broken subscriber must not break a mail session
            log.exception("event listener failed")

    def _changed(self, session: Pop3Session) -> None:
        self._publish(SessionChanged(session=session.id, proto="pop3", peer=session.ip,
                                     tls=session.tls, login=session.login, state=session.state.value))

    def _lock(self, key: str, session_id: str) -> bool:
        if key in self._locks:
            return False
        self._locks[key] = session_id
        return True

    def _unlock(self, key: str, session_id: str) -> None:
        if self._locks.get(key) == session_id:
            del self._locks[key]

    def _login_failed(self, session: Pop3Session, login: str) -> int:
        """Count a failed login for the client IP; returns its recent failures."""
        count = self.logins.failed(session.ip)
        self._publish(AuthFailed(session=session.id, proto="pop3", peer=session.ip, login=login,
                                 failures=count))
        return count

    def _login_succeeded(self, session: Pop3Session) -> None:
        self.logins.succeeded(session.ip)
        self._publish(AuthSucceeded(session=session.id, proto="pop3", peer=session.ip,
                                    login=session.login))
        self._changed(session)

    async def _remove(self, session: Pop3Session, messages: list[StoredMessage]) -> int:
        """Delete messages at QUIT (UPDATE state); returns how many could not be removed."""
        def remove_all() -> int:
            failed = 0
            for message in messages:
                try:
                    self.maildirs.remove(message)
                except OSError:
                    log.exception("POP3 %s: cannot remove %s", session.id, message.path)
                    failed += 1
            return failed
        if not messages:
            return 0
        return await asyncio.get_running_loop().run_in_executor(None, remove_all)

