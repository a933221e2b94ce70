"""A loopback SMTP sink that shows what a client does with its connections.

tests/dnsworld.py's FakeMX (aiosmtpd) hides how commands arrived; this sink
reads raw chunks, so a test can see whether commands came pipelined (several
in one read), count connections, RSETs and QUITs, and script faults: a
``hook`` is asked before each command (and before the 250 at the end of
DATA, as ".") and may answer in the sink's place, hang up, or hold.

A message counts as taken (``messages``) once the sink has written its 250
for it, as an MTA that has stored it: a client that died before that never
got the 250 and must send it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dnsworld import server_tls_context
from wire import LoopThread

HANG_UP = "hang up"
TIMEOUT = 30.0


@dataclass
class Link:
    """One connection as the sink saw it."""

    number: int
    commands: list[tuple[str, int]] = field(default_factory=list)  # (line, number of the read)
    transactions: int = 0           # MAIL commands
    quit: bool = False
    closed: bool = False
    tls: bool = False
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)

    def verbs(self) -> list[str]:
        return [line.split(" ", 1)[0].split(":", 1)[0].upper() for line, _ in self.commands]

    def reads(self) -> list[list[str]]:
        """The commands grouped by the read they arrived in."""
        groups: dict[int, list[str]] = {}
        for line, read in self.commands:
            groups.setdefault(read, []).append(line.split(" ", 1)[0].split(":", 1)[0].upper())
        return list(groups.values())


@dataclass
class Message:
    link: int
    transaction: int                # its number on the link, from 1
    sender: str
    recipients: list[str]
    body: bytes                     # dot-stuffing undone, CRLF line ends, final CRLF


Hook = Callable[[Link, str], Awaitable[str | None]]


class _Lines:
    """Lines off a stream reader, remembering which read brought each."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.buffer = b""
        self.reads = 0

    async def line(self) -> tuple[bytes, int] | None:
        while b"\n" not in self.buffer:
            data = await asyncio.wait_for(self.reader.read(1 << 16), TIMEOUT)
            if not data:
                return None
            self.reads += 1
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r"), self.reads


class Sink:
    """An SMTP server on ``host:port`` that takes everything (``bad...`` local parts get 550)."""

    def __init__(self, host: str, port: int, *, pipelining: bool = True, tls: bool = False,
                 max_recipients: int = 0, hook: Hook | None = None):
        self.host, self.port = host, port
        self.pipelining = pipelining
        self.tls_context = server_tls_context() if tls else None
        self.max_recipients = max_recipients      # 0: no limit; else 452 4.5.3 beyond it
        self.hook = hook
        self.links: list[Link] = []
        self.messages: list[Message] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> Sink:
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 reuse_address=True)
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for link in self.links:
            if link.writer is not None and not link.closed:
                link.writer.close()

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def open_links(self) -> list[Link]:
        return [link for link in self.links if not link.closed]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(wait(), timeout)

    # -- one connection ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(len(self.links) + 1, writer=writer)
        self.links.append(link)
        lines = _Lines(reader)
        try:
            writer.write(f"220 {self.host} ESMTP sink\r\n".encode())
            await self._dialogue(link, lines, writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            link.closed = True
            writer.close()

    async def _dialogue(self, link: Link, lines: _Lines, writer: asyncio.StreamWriter) -> None:
        envelope: tuple[str, list[str]] | None = None
        while (got := await lines.line()) is not None:
            line, read = got
            text = line.decode("utf-8", "replace")
            link.commands.append((text, read))
            verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "MAIL":
                link.transactions += 1
            if self.hook is not None and (answer := await self.hook(link, verb)) is not None:
                if answer == HANG_UP:
                    return
                writer.write(answer.encode() + b"\r\n")
                if answer.startswith("421"):
                    await writer.drain()
                    return
                continue
            if verb == "MAIL":
                envelope = (_address(text), [])
            reply = await self._reply(link, verb, text, envelope, lines, writer)
            if reply is None:
                return
            if verb in ("RSET", "DATA", "EHLO"):
                envelope = None
            if reply:
                writer.write(reply.encode() + b"\r\n")
            if verb == "QUIT":
                link.quit = True
                await writer.drain()
                return

    async def _reply(self, link: Link, verb: str, text: str, envelope, lines: _Lines,
                     writer: asyncio.StreamWriter) -> str | None:
        """The sink's answer to one command ("": none due, None: the connection is over)."""
        if verb == "EHLO":
            extensions = ["SIZE 10000000", "8BITMIME", "SMTPUTF8"]
            extensions += ["PIPELINING"] if self.pipelining else []
            extensions += ["STARTTLS"] if self.tls_context and not link.tls else []
            return "\r\n".join([f"250-{self.host}"] + [f"250-{e}" for e in extensions[:-1]]
                               + [f"250 {extensions[-1]}"])
        if verb == "STARTTLS" and self.tls_context is not None and not link.tls:
            writer.write(b"220 2.0.0 go ahead\r\n")
            await writer.drain()
            await writer.start_tls(self.tls_context)
            link.tls = True
            return ""
        if verb in ("RSET", "NOOP"):
            return "250 2.0.0 ok"
        if verb == "QUIT":
            return "221 2.0.0 bye"
        if verb == "MAIL":
            return "250 2.1.0 ok"
        if verb == "RCPT":
            return self._rcpt(text, envelope)
        if verb == "DATA":
            return await self._data(link, envelope, lines, writer)
        return "502 5.5.1 not here"

    def _rcpt(self, text: str, envelope) -> str:
        if envelope is None:
            return "503 5.5.1 MAIL first"
        address = _address(text)
        if address.lower().startswith("bad"):
            return "550 5.1.1 no such user"
        if self.max_recipients and len(envelope[1]) >= self.max_recipients:
            return "452 4.5.3 too many recipients"
        envelope[1].append(address)
        return "250 2.1.5 ok"

    async def _data(self, link: Link, envelope, lines: _Lines,
                    writer: asyncio.StreamWriter) -> str | None:
        if envelope is None or not envelope[1]:
            return "554 5.5.1 no valid recipients"
        writer.write(b"354 go ahead\r\n")
        body: list[bytes] = []
        while (got := await lines.line()) is not None and got[0] != b".":
            body.append(got[0][1:] if got[0].startswith(b".") else got[0])
        if got is None:
            return None  # the client went away mid-DATA: nothing taken
        if self.hook is not None and (answer := await self.hook(link, ".")) is not None:
            return None if answer == HANG_UP else answer
        await asyncio.sleep(0)
        if lines.reader.at_eof() and not lines.buffer:
            return None  # the client is gone: it will never see a 250, so nothing is taken
        self.messages.append(Message(link.number, link.transactions, envelope[0], list(envelope[1]),
                                     b"".join(line + b"\r\n" for line in body)))
        return "250 2.0.0 taken"


def _address(command: str) -> str:
    match = re.search(r"<([^>]*)>", command)
    return match.group(1) if match else ""


class ThreadedSink:
    """A :class:`Sink` in a thread of its own, for tests that block (subprocesses)."""

    def __init__(self, *args, **kw):
        self.sink = Sink(*args, **kw)
        self._loop: LoopThread | None = None

    def __enter__(self) -> Sink:
        self._loop = LoopThread()
        self._loop.run(self.sink.start())
        return self.sink

    def __exit__(self, *exc) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.run(self.sink.stop())
        self._loop.stop()
