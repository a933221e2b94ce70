"""The IMAP server's I/O layer: sockets, framing, limits, TLS, IDLE, accounting and events.

Reads each command as lines and literals through a
:class:`literals.CommandAssembler` (an over-large literal is refused before
the ``+``: before login anything over 8 KiB, after it anything over
``smtp.max_message_size``, which an APPEND hears as ``NO [TOOBIG]``), hands
the parsed command to :func:`dispatch.handle` and writes what the session
wrote. One asyncio task per connection; every read has a deadline
(``imap.idle_timeout``, at least 30 minutes by RFC 3501 §5.4), so a client
that dribbles a line byte by byte gains nothing.

IDLE is pushed: the intake's ``DeliveredLocal`` event pokes the folder,
which looks at ``new/`` once and wakes every session watching it; changes
made by other sessions wake them the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import ssl
import time

from ...admin.registry import Registry
from ...admin.throttle import LoginThrottle
from ...config import ImapConfig
from ...events import (
    AuthFailed,
    AuthSucceeded,
    ConnectionClosed,
    ConnectionOpened,
    DeliveredLocal,
    Event,
    EventBus,
    SessionChanged,
)
from ...store.db import Store
from ...store.mailboxes import MailStore
from ...wire import CLOSE_WAIT, SHUTDOWN_WAIT, close_stream, discard_buffered, peer_of
from . import dispatch
from .errors import ParseError
from .literals import CommandAssembler, LiteralRefused, Limits
from .parser import parse_command
from .response import Code, status_line
from .session import ImapSession, Outcome, State

log = logging.getLogger(__name__)
PRE_AUTH = Limits(max_line=8192, max_literal=8192, max_literals=4, max_total=16384)
MAX_LINE = 64 * 1024            # one command line after login (Dovecot's imap_max_line_length)
SASL_LINE = 8192
_APPEND = re.compile(rb"[^ ]+ +APPEND ", re.IGNORECASE)
_LOGIN = re.compile(rb"[^ ]+ +LOGIN ", re.IGNORECASE)
_ids = itertools.count(1)


_PLAIN = Outcome()


def _pipelined(reader: asyncio.StreamReader) -> bool:
    """Whether the client has already sent another whole line (mbsync sends hundreds).

    StreamReader has no public look at its buffer (see ``wire.discard_buffered``);
    without one we simply drain after every command.
    """
    buffer = getattr(reader, "_buffer", None)
    return isinstance(buffer, bytearray) and b"\n" in buffer


class _Timeout(Exception):
    """The client sent nothing for ``idle_timeout`` seconds."""


class _Stalled(Exception):
    """The client stopped reading what we send."""


class _TooLong(Exception):
    """A line over the limit: the stream cannot be trusted to resynchronise."""


class _Out:
    """The session's output: gathered, then written to the transport and drained with a deadline.

    Responses come as many short lines (50,000 FETCH lines for one command);
    handing each to the transport costs a send() system call apiece, so they
    are joined and written at each drain, or once 64 KiB have gathered.
    """

    FLUSH_AT = 64 * 1024

    def __init__(self, writer: asyncio.StreamWriter, timeout: float):
        self.writer = writer
        self.timeout = timeout
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self.FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.writer.write(b"".join(self._pending))
            self._pending.clear()
            self._size = 0

    def backlog(self) -> int:
        """Octets gathered or in the transport's buffer, not yet sent."""
        return self._size + self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Back-pressure for long answers: wait only once enough has piled up."""
        if self.backlog() >= self.FLUSH_AT:
            await self.push()

    async def push(self) -> None:
        """Send everything now and wait until the transport has taken it (the client must see it)."""
        self.flush()
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except TimeoutError:
            raise _Stalled from None


class ImapServer:
    """Serves IMAP connections: :meth:`handle` (STARTTLS offered) and :meth:`handle_tls` (implicit TLS)."""

    def __init__(self, *, config: ImapConfig, hostname: str, registry: Registry, store: MailStore,
                 bus: EventBus, tls_context: ssl.SSLContext | None, max_message_size: int,
                 logins: LoginThrottle | None = None, db: Store | None = None):
        self.config = config
        self.hostname = hostname
        self.registry = registry
        self.store = store
        self.bus = bus
        self.tls_context = tls_context
        self.max_message_size = max_message_size
        self.logins = logins or LoginThrottle()
        self.db = db
        self.active = 0
        self._per_ip: dict[str, int] = {}
        self._per_user: dict[str, int] = {}
        self._tasks: dict[asyncio.Task, ImapSession] = {}
        self._close_wait = CLOSE_WAIT
        self.limits = Limits(max_line=MAX_LINE, max_literal=max_message_size, max_literals=64,
                             max_total=max_message_size + MAX_LINE * 4)
        bus.add_listener(self._on_event)
        self._listening = True

    @property
    def tls_available(self) -> bool:
        return self.tls_context is not None

    # -- the Host protocol, for sessions ---------------------------------------------
    async def verify(self, session: ImapSession, login: str, password: str | bytes) -> str | None:
        await asyncio.sleep(self.logins.delay(session.ip, self.config.auth_failure_delay))
        return await self.registry.verify(login, password)

    def logged_in(self, session: ImapSession) -> bool:
        count = self._per_user.get(session.key, 0)
        if count >= self.config.max_connections_per_user:
            return False
        self._per_user[session.key] = count + 1
        session.counted = True
        self.logins.succeeded(session.ip)
        self._publish(AuthSucceeded(session=session.id, proto="imap", peer=session.ip, login=session.key))
        return True

    def login_failed(self, session: ImapSession, login: str) -> None:
        count = self.logins.failed(session.ip)
        self._publish(AuthFailed(session=session.id, proto="imap", peer=session.ip, login=login,
                                 failures=count))

    def changed(self, session: ImapSession) -> None:
        self._publish(SessionChanged(session=session.id, proto="imap", peer=session.ip, tls=session.tls,
                                     login=session.login, state=session.state.value))

    # -- public -------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._run(reader, writer, tls=False)

    async def handle_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._run(reader, writer, tls=True)

    async def close_all(self) -> None:
        """Say BYE to every session and wait for them to end (shutdown)."""
        self._close_wait = SHUTDOWN_WAIT
        if self._listening:
            self.bus.remove_listener(self._on_event)
            self._listening = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.store.close()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DeliveredLocal):
            self.store.poke(event.mailbox)

    # -- one connection ---------------------------------------------------------------------
    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        task = asyncio.current_task()
        ip, peer = peer_of(writer.get_extra_info("peername"))
        session = ImapSession(self, id=f"I{next(_ids)}", ip=ip, tls=tls)
        if task is not None:
            self._tasks[task] = session
        out = _Out(writer, self.config.idle_timeout)
        started = time.time()
        self._publish(ConnectionOpened(session=session.id, proto="imap", peer=ip, registered=False))
        refusal = self._admit(ip)
        self.active += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        result = "dropped"
        try:
            if refusal:
                result = refusal
                out.write(status_line("*", "BYE", refusal))
                await out.push()
            else:
                result = await self._converse(session, reader, writer, out)
        except _Timeout:
            result = "timeout"
            out.flush()
            writer.write(status_line("*", "BYE", "Autologout; idle for too long"))
        except _TooLong:
            result = "line too long"
            out.flush()
            writer.write(status_line("*", "BYE", "Command line too long"))
        except _Stalled:
            result = "timeout (client stopped reading)"
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            result = "dropped"
        except asyncio.CancelledError:      # close_all(); not re-raised: nobody awaits this task
            result = "server shutdown"
            out.flush()
            writer.write(status_line("*", "BYE", "Server shutting down"))
        except Exception as exc:
            log.exception("IMAP session %s failed", session.id)
            result = f"internal error: {type(exc).__name__}"
            writer.write(status_line("*", "BYE", "Internal server error"))
        finally:
            self._finish(session, task, ip, peer, started, result)
            await close_stream(writer, self._close_wait)

    def _admit(self, ip: str) -> str:
        if self.active >= self.config.max_connections:
            return "Too many connections"
        if self._per_ip.get(ip, 0) >= self.config.max_connections_per_ip:
            return "Too many connections from your address"
        return ""

    def _finish(self, session: ImapSession, task, ip: str, peer: str, started: float, result: str) -> None:
        self.active -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]
        if session.counted:
            self._per_user[session.key] -= 1
            if not self._per_user[session.key]:
                del self._per_user[session.key]
        session.close()
        self._tasks.pop(task, None)
        self._publish(ConnectionClosed(session=session.id, proto="imap", peer=ip, result=result))
        if self.db is not None:
            self.db.log("connections", {"time": started, "proto": "imap", "peer": peer, "login": session.login,
                                        "result": result, "session": session.id, "tls": session.tls,
                                        "duration": round(time.time() - started, 3)})

    async def _converse(self, session: ImapSession, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, out: _Out) -> str:
        out.write(session.greeting())
        await out.push()
        while True:
            outcome = await self._one_command(session, reader, out)
            if outcome is None:
                return session.result or "dropped"
            if not (outcome == _PLAIN and _pipelined(reader) and out.backlog() < _Out.FLUSH_AT):
                await out.push()               # else: answer the pipelined commands in one write
            if outcome.sasl:
                line = await self._read_line(reader, SASL_LINE)
                if line is None:
                    return "dropped"
                outcome = await session.sasl_line(line, out)
                await out.push()
            if outcome.starttls and not await self._start_tls(session, reader, writer):
                return "tls handshake failed"
            if outcome.idle:
                outcome = await self._idle(session, reader, out)
                await out.push()
            if outcome.close:
                return session.result or "closed"

    async def _one_command(self, session: ImapSession, reader: asyncio.StreamReader,
                           out: _Out) -> Outcome | None:
        """Read, parse and answer one command; None at end of stream."""
        limits = PRE_AUTH if session.state is State.NOT_AUTHENTICATED else self.limits
        assembler = CommandAssembler(limits)
        line = await self._read_line(reader, limits.max_line)
        while True:
            if line is None:
                return None
            try:
                info = assembler.feed_line(line)
            except LiteralRefused as exc:
                return self._refused_literal(session, exc, line, out)
            except ParseError as exc:
                return session.refuse(exc, out)
            if info is None:
                break
            if limits is PRE_AUTH and not _LOGIN.match(assembler.pieces[0]):
                # Before login only LOGIN may carry literals; nobody else gets a "+" for one.
                return self._refused_literal(session, LiteralRefused("Not logged in", assembler.tag, info), line, out)
            if info.synchronising:
                out.write(b"+ Ready for literal data\r\n")
                await out.push()
            assembler.feed_literal(await self._read_exactly(reader, info.size))
            line = await self._read_line(reader, limits.max_line)
        try:
            command = parse_command(assembler.take())
        except ParseError as exc:
            return session.refuse(exc, out)
        return await dispatch.handle(session, command, out)

    def _refused_literal(self, session: ImapSession, exc: LiteralRefused, line: bytes, out: _Out) -> Outcome:
        if exc.status == "NO":
            what = "Message too large" if _APPEND.match(line) else "Literal too large"
            out.write(status_line(exc.tag, "NO", what, Code.of("TOOBIG")))
        else:
            out.write(exc.response())
        if exc.must_drain:          # LITERAL+: the octets are already on their way; do not read them
            out.write(status_line("*", "BYE", "Literal too large"))
            session.result = "literal too large"
            return Outcome(close=True)
        return Outcome()

    # -- reading -----------------------------------------------------------------------
    async def _read_line(self, reader: asyncio.StreamReader, limit: int) -> bytes | None:
        """One line without CRLF; None at EOF; _TooLong past ``limit``; _Timeout when silent."""
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise _TooLong from None
        except TimeoutError:
            raise _Timeout from None
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if len(line) > limit:
            raise _TooLong
        return line

    async def _read_exactly(self, reader: asyncio.StreamReader, size: int) -> bytes:
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                return await reader.readexactly(size)
        except TimeoutError:
            raise _Timeout from None

    # -- IDLE, STARTTLS ----------------------------------------------------------------------
    async def _idle(self, session: ImapSession, reader: asyncio.StreamReader, out: _Out) -> Outcome:
        """Wait for DONE, pushing updates whenever the folder says something changed."""
        reading = asyncio.ensure_future(self._read_line(reader, 64))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.idle_timeout
        waking: asyncio.Future | None = None
        try:
            while True:
                waking = asyncio.ensure_future(session.woken.wait())
                done, _ = await asyncio.wait({reading, waking}, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                if reading in done:
                    line = reading.result()
                    if line is None:
                        return Outcome(close=True)
                    return dispatch.idle_done(session, line, out)
                if not done:
                    raise _Timeout
                await dispatch.idle_update(session, out)
                await out.push()
        finally:   # also when shutdown cancels us: a task left waiting is destroyed pending at exit
            for task in (reading, waking):
                if task is not None and not task.done():
                    task.cancel()

    async def _start_tls(self, session: ImapSession, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bool:
        dropped = discard_buffered(reader)   # no await between this and start_tls pausing reads
        if dropped:
            log.info("IMAP %s: discarded %d octets pipelined after STARTTLS", session.id, dropped)
        try:
            await writer.start_tls(self.tls_context, ssl_handshake_timeout=min(self.config.idle_timeout, 60.0))
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            log.info("IMAP %s: TLS handshake failed: %s", session.id, exc)
            return False
        session.tls_started()
        return True

    def _publish(self, event: Event) -> None:
        try:
            self.bus.publish(event)
        except Exception:  # a broken subscriber must not break a mail session
            log.exception("event listener failed")
