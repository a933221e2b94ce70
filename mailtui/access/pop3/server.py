"""POP3 sockets: reading lines under limits and timeouts, writing replies and bodies.

:class:`Pop3Server` runs each connection's :class:`~.session.Pop3Session`:
it reads a line, hands it over, writes the :class:`~.session.Pop3Reply`,
and does what the reply asks (STLS, hang up). It also owns what sessions
share — connection count, maildrop locks, the login throttle, events, the
connection log, the INBOX folders of the :class:`~mailtui.store.mailboxes.MailStore`
IMAP uses too — and offers it to them as :class:`~.session.Services`.

The maildrop lock is POP3's own (RFC 1939 section 8: one POP3 session per
maildrop); IMAP sessions neither take it nor wait for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time

from ...admin.registry import Registry
from ...admin.throttle import LoginThrottle
from ...config import Pop3Config
from ...events import (
    AuthFailed,
    AuthSucceeded,
    ConnectionClosed,
    ConnectionOpened,
    Event,
    EventBus,
    SessionChanged,
)
from ...store.db import Store
from ...store.folder import Folder
from ...store.mailboxes import MailStore
from ...wire import CLOSE_WAIT, SHUTDOWN_WAIT, close_stream, discard_buffered, peer_of
from .bodies import CRLF
from .session import Pop3Reply, Pop3Session

log = logging.getLogger(__name__)

_session_ids = itertools.count(1)

_TOO_LONG = object()  # _read_line's answer for a line longer than the reader's buffer limit


class _IdleTimeout(Exception):
    """The client sent nothing for ``idle_timeout`` seconds."""


class _StalledWriter(Exception):
    """The client stopped reading what we send."""


class Pop3Server:
    """Serves POP3 connections; use :meth:`handle` with ``asyncio.start_server``."""

    def __init__(self, *, config: Pop3Config, hostname: str, registry: Registry, mail: MailStore,
                 bus: EventBus, tls_context: ssl.SSLContext | None, store: Store | None = None,
                 logins: LoginThrottle | None = None):
        self.config = config
        self.hostname = hostname
        self.registry = registry
        self.mail = mail
        self.bus = bus
        self.tls_context = tls_context
        self.store = store
        self.active = 0                               # open connections
        self._locks: dict[str, str] = {}              # mailbox key -> session id
        self.logins = logins or LoginThrottle()
        self._tasks: set[asyncio.Task] = set()
        self._close_wait = CLOSE_WAIT

    # -- public --

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port`` (port 0 picks a free one)."""
        return await asyncio.start_server(self.handle, host, port)

    async def close_all(self) -> None:
        """Cancel every open session and wait for their clean-up (shutdown, tests).

        Each session still marks what it retrieved ``\\Seen``; a TLS peer gets
        :data:`~mailtui.wire.SHUTDOWN_WAIT` seconds to answer our close_notify, then is dropped.
        """
        self._close_wait = SHUTDOWN_WAIT
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def locked(self) -> dict[str, str]:
        """Maildrops in use: mailbox key -> session id."""
        return dict(self._locks)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run one connection to the end; never raises for client behaviour."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        ip, peer = peer_of(writer.get_extra_info("peername"))
        # On an implicit-TLS listener (POP3S, RFC 8314) the session starts inside TLS.
        tls = writer.get_extra_info("ssl_object") is not None
        session = Pop3Session(self, f"P{next(_session_ids)}", peer, ip, tls=tls)
        started = time.time()
        self.publish(ConnectionOpened(session=session.id, proto="pop3", peer=ip, registered=False))
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
            try:
                await session.end()
            except asyncio.CancelledError:    # shut down meanwhile: the clean-up below must still run
                session.release()
            if task is not None:
                self._tasks.discard(task)
            if result == "dropped" and session.retrieved:
                result = f"dropped, {len(session.retrieved)} retrieved, nothing deleted"
            self.publish(ConnectionClosed(session=session.id, proto="pop3", peer=ip, result=result,
                                           messages=len(session.retrieved)))
            if self.store is not None:
                self.store.log("connections", {"time": started, "proto": "pop3", "peer": peer,
                                               "login": session.login, "result": result,
                                               "session": session.id, "tls": session.tls,
                                               "duration": round(time.time() - started, 3)})
            await close_stream(writer, self._close_wait)

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

    async def _send(self, writer: asyncio.StreamWriter, reply: Pop3Reply) -> None:
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
        dropped = discard_buffered(reader)  # no await between this and start_tls pausing reads
        if dropped:
            log.info("POP3 %s: discarded %d octets pipelined after STLS", session.id, dropped)
        try:
            await writer.start_tls(self.tls_context,
                                   ssl_handshake_timeout=min(self.config.idle_timeout, 60.0))
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            log.info("POP3 %s: TLS handshake failed: %s", session.id, exc)
            return False
        session.tls_started()
        self.changed(session)
        return True

    # -- services for sessions (session.Services) --

    @property
    def stls_available(self) -> bool:
        return self.tls_context is not None

    def login_delay(self, ip: str) -> float:
        return self.logins.delay(ip, self.config.auth_failure_delay)

    async def verify(self, login: str, password: str | bytes) -> str | None:
        return await self.registry.verify(login, password)

    def publish(self, event: Event) -> None:
        try:
            self.bus.publish(event)
        except Exception:  # a broken subscriber must not break a mail session
            log.exception("event listener failed")

    def changed(self, session: Pop3Session) -> None:
        self.publish(SessionChanged(session=session.id, proto="pop3", peer=session.ip,
                                    tls=session.tls, login=session.login, state=session.state.value))

    def lock(self, key: str, session_id: str) -> bool:
        if key in self._locks:
            return False
        self._locks[key] = session_id
        return True

    def unlock(self, key: str, session_id: str) -> None:
        if self._locks.get(key) == session_id:
            del self._locks[key]

    async def open_maildrop(self, key: str) -> Folder:
        return await self.mail.open(key, "INBOX")

    def close_maildrop(self, key: str, maildrop: Folder) -> None:
        self.mail.release(maildrop, key)

    def login_failed(self, session: Pop3Session, login: str) -> int:
        """Count a failed login for the client IP; returns its recent failures."""
        count = self.logins.failed(session.ip)
        self.publish(AuthFailed(session=session.id, proto="pop3", peer=session.ip, login=login,
                                failures=count))
        return count

    def login_succeeded(self, session: Pop3Session) -> None:
        self.logins.succeeded(session.ip)
        self.publish(AuthSucceeded(session=session.id, proto="pop3", peer=session.ip,
                                   login=session.login))
        self.changed(session)
