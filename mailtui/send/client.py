"""One outbound SMTP connection: commands written in groups, replies parsed as they arrive.

Why not aiosmtplib here: it reads exactly one reply per command written (a
second reply that arrives in the same segment waits in its buffer until more
bytes come), so it cannot PIPELINE (RFC 2920); and its STARTTLS has no way to
offer a saved TLS session. This protocol is the little the courier needs
instead. Because it parses replies in ``data_received``, a connection waiting
in the cache also knows, without a round trip, whether the peer has closed it
or said something unasked (a ``421`` before hanging up): :attr:`usable`.

The courier (:mod:`mailtui.send.transaction`) decides what replies mean;
this module only moves bytes and raises :class:`SmtpIOError` when the
connection cannot go on.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast

MAX_LINE = 8192            # RFC 5321 4.5.3.1.5 says 512; be generous, but bounded
MAX_REPLY = 64 * 1024      # a whole multi-line reply (a long EHLO is a few hundred octets)


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str              # the lines' texts joined by "\n"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


class SmtpIOError(Exception):
    """The connection cannot go on; what was in flight has no answer."""


class ConnectionLost(SmtpIOError):
    """The peer closed the connection, or the socket failed."""


class ReplyTimeout(SmtpIOError):
    """No (complete) reply in time; the connection is closed, its replies out of step."""


class BadReply(SmtpIOError):
    """The peer sent something that is not an SMTP reply."""


def parse_replies(buffer: bytearray) -> list[Reply]:
    """Take every complete reply off the front of ``buffer``.

    Raises :class:`BadReply` on a line that does not start with a code, on a
    line over :data:`MAX_LINE` and on a reply over :data:`MAX_REPLY`.
    """
    replies: list[Reply] = []
    start = pos = 0
    lines: list[str] = []
    while (end := buffer.find(b"\n", pos)) >= 0:
        line = bytes(buffer[pos:end]).rstrip(b"\r")
        pos = end + 1
        if len(line) > MAX_LINE or not (line[:3].isdigit() and line[3:4] in (b"", b" ", b"-")):
            raise BadReply(f"not an SMTP reply: {line[:60]!r}")
        lines.append(line[4:].decode("utf-8", "replace").strip())
        if pos - start > MAX_REPLY:
            raise BadReply("reply too long")
        if line[3:4] != b"-":
            replies.append(Reply(int(line[:3]), "\n".join(lines)))
            lines = []
            start = pos
    if len(buffer) - pos > MAX_LINE:
        raise BadReply("reply line too long")
    del buffer[:start]
    return replies


class SmtpConnection(asyncio.Protocol):
    """A client connection speaking SMTP; open one with :meth:`open`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: SmtpIOError | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, address: str, port: int, timeout: float) -> tuple[SmtpConnection, Reply]:
        """Connect and read the greeting, within ``timeout`` seconds in all.

        Raises OSError (and asyncio.TimeoutError) if no connection is made,
        :class:`SmtpIOError` if no greeting comes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        _, conn = await asyncio.wait_for(loop.create_connection(cls, address, port), timeout)
        try:
            greeting = await conn.read_reply(max(0.0, deadline - loop.time()))
        except BaseException:
            conn.close(quit=False)
            raise
        return conn, greeting

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass of it)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._replies.extend(parse_replies(self._buffer))
        except BadReply as exc:
            self._fail(exc)
            return
        if self._replies:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("the peer closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"connection lost: {exc}" if exc else "connection closed"))
        self.transport = None
        self._resume()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._resume()

    # -- state -----------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, and nothing has come that was not asked for (no EOF, no stray reply)."""
        return (self._error is None and self.transport is not None
                and not self.transport.is_closing() and not self._buffer and not self._replies)

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    def _fail(self, error: SmtpIOError) -> None:
        if self._error is None:
            self._error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _resume(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- talking ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost("connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._paused and self._error is None:
            self._drained = self._loop.create_future()
            await self._drained
        if self._error is not None:
            raise self._error

    async def read_reply(self, timeout: float) -> Reply:
        """The next reply; on a timeout the connection is closed (its replies would be out of step)."""
        if not self._replies and self._error is None:
            self._waiter = waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, self._wake)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._replies and self._error is None:
                self._fail(ReplyTimeout(f"no reply within {timeout:g} s"))
        if self._replies:
            return self._replies.popleft()
        assert self._error is not None
        raise self._error

    async def command(self, line: bytes, timeout: float) -> Reply:
        self.write(line + b"\r\n")
        return await self.read_reply(timeout)

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None,
                       timeout: float) -> None:
        """Start TLS after the peer's ``220`` to STARTTLS.

        Bytes that came before the handshake are dropped: a compliant server
        sends none, so they can only have been injected (RFC 3207 section 4.2).
        """
        assert self.transport is not None
        self._buffer.clear()
        self._replies.clear()
        self.transport = await self._loop.start_tls(
            self.transport, self, context, server_hostname=server_hostname,
            ssl_handshake_timeout=timeout)

    def close(self, quit: bool = True) -> None:
        """Say QUIT (without waiting for the answer, as Postfix does) and close."""
        if quit and self.usable:
            assert self.transport is not None
            self.transport.write(b"QUIT\r\n")
        if self.transport is not None:
            self.transport.close()
