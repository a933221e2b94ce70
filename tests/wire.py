"""Byte-level tools for the hardening tests: a raw SMTP client, and remote mail
hosts that record exactly what came over the wire or never answer at all.

* :class:`Dialog` is a blocking line client on a real socket: it sends exact
  bytes and reads whole (multi-line) replies, with a timeout on every read;
  :func:`ready_dialog` opens one ready for MAIL on port 25 or either
  submission port;
* :class:`RawMX` is a minimal SMTP server in its own thread and event loop that
  keeps the DATA section as sent (dot-stuffing and line endings included);
* :class:`SilentMX` accepts TCP connections (the kernel does, from its backlog)
  and never says a word.

Everything listens and connects on 127.0.0.0/8 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

WAIT = 10.0
_REPLY = re.compile(rb"^\d{3}[ -]")


# -- a raw client ----------------------------------------------------------------

class Dialog:
    """One SMTP (or POP3) connection driven line by line."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, source: str | None = None,
                 greeting: bool = True, timeout: float = WAIT, tls: ssl.SSLContext | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        if tls is not None:   # implicit TLS (RFC 8314): the handshake comes before the greeting
            self.sock = tls.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply() if greeting else b""

    def starttls(self, context: ssl.SSLContext) -> None:
        """STARTTLS, then go on inside TLS."""
        reply = self.cmd("STARTTLS")
        assert reply.startswith(b"220"), reply
        self.sock = context.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def reply(self) -> bytes:
        """One whole reply; a multi-line one is returned joined (b"" at EOF)."""
        out = b""
        while True:
            line = self.file.readline()
            if not line:
                return out
            out += line
            if not _REPLY.match(line) or line[3:4] != b"-":
                return out

    def cmd(self, text: str | bytes) -> bytes:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "client.test") -> bytes:
        return self.cmd(f"EHLO {name}")

    def closed(self, timeout: float = WAIT) -> bool:
        """True once the server has closed the connection (what it still sends is skipped)."""
        self.sock.settimeout(timeout)
        try:
            while self.file.readline():
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except (TimeoutError, socket.timeout):
            return False
        return True

    def rest(self) -> list[bytes]:
        """Every line until the server closes the connection."""
        lines = []
        try:
            while line := self.file.readline():
                lines.append(line)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return lines

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "Dialog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def auth_plain(login: str, password: str) -> str:
    """An SMTP ``AUTH PLAIN`` command with its initial response."""
    return "AUTH PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


SERVICES = ("smtp", "submission", "submissions")   # port 25; 587-style STARTTLS; 465-style implicit TLS


def ready_dialog(srv, service: str, login: str, password: str, tls: ssl.SSLContext) -> tuple[Dialog, str]:
    """A Dialog on ``service`` past EHLO (and STARTTLS and AUTH on submission), and the sender to use.

    On port 25 ``srv`` must treat loopback as a registered network; the
    sender is then a stranger's address, on submission ``login`` itself.
    """
    if service == "smtp":
        c = Dialog(srv.smtp_port)
        c.ehlo()
        return c, "a@remote.test"
    c = Dialog(srv.submissions_port, tls=tls) if service == "submissions" else Dialog(srv.submission_port)
    c.ehlo()
    if service == "submission":
        c.starttls(tls)
        c.ehlo()
    reply = c.cmd(auth_plain(login, password))
    assert reply.startswith(b"235 2.7.0"), reply
    return c, login


def stuff(data: bytes) -> bytes:
    """Dot-stuff ``data`` (CRLF lines) as a client must before sending it after DATA."""
    out = data.replace(b"\r\n.", b"\r\n..")
    return b"." + out if out.startswith(b".") else out


def unstuff(wire: bytes) -> bytes:
    out = wire.replace(b"\r\n..", b"\r\n.")
    return out[1:] if out.startswith(b"..") else out


def bare_line_ends(data: bytes) -> bool:
    """True if ``data`` holds a CR or an LF that is not part of a CRLF."""
    return data.count(b"\r") != data.count(b"\r\n") or data.count(b"\n") != data.count(b"\r\n")


# -- an event loop in a thread -------------------------------------------------------

class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="wire-loop", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = WAIT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


# -- remote mail hosts ---------------------------------------------------------------

@dataclass
class Transaction:
    mail: bytes                        # the MAIL command line as sent (without CRLF)
    rcpts: list[str]
    raw: bytes                         # the DATA section as sent, up to and including CRLF.CRLF
    peer: str = ""

    @property
    def sender(self) -> str:
        match = re.match(rb"MAIL FROM:<([^>]*)>", self.mail, re.I)
        return match.group(1).decode("utf-8", "replace") if match else ""


@dataclass
class RawMX:
    """An SMTP server that records the wire bytes of every message it takes.

    ``rules`` map a local-part prefix to the reply its RCPT gets (``bad`` ->
    550 by default). Runs in its own thread, so that it keeps answering
    whatever the server under test is doing.
    """

    host: str
    port: int
    rules: dict[str, str] = field(default_factory=lambda: {"bad": "550 5.1.1 no such user"})
    transactions: list[Transaction] = field(default_factory=list)
    sessions: int = 0

    def start(self) -> "RawMX":
        self._loop = LoopThread()
        self._server = self._loop.run(asyncio.start_server(self._serve, self.host, self.port,
                                                           reuse_address=True, limit=2**25))
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        with contextlib.suppress(Exception):
            self._loop.run(close())
        self._loop.stop()

    def __enter__(self) -> "RawMX":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Transaction]:
        deadline = time.monotonic() + timeout
        while len(self.transactions) < count:
            assert time.monotonic() < deadline, \
                f"{self.host} got {len(self.transactions)} of {count} messages in {timeout}s"
            time.sleep(0.02)
        return list(self.transactions)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        peer = str(writer.get_extra_info("peername")[0])
        mail, rcpts = b"", []

        async def say(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        try:
            await say(f"220 {self.host} ESMTP rawmx")
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line:
                    return
                command = line.rstrip(b"\r\n")
                verb = command[:4].upper()
                if verb == b"EHLO":
                    await say(f"250-{self.host}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 100000000")
                elif verb == b"HELO":
                    await say(f"250 {self.host}")
                elif verb == b"MAIL":
                    mail, rcpts = command, []
                    await say("250 2.1.0 ok")
                elif verb == b"RCPT":
                    address = re.search(rb"<([^>]*)>", command)
                    rcpt = address.group(1).decode("utf-8", "replace") if address else ""
                    refusal = next((r for p, r in self.rules.items()
                                    if rcpt.lower().startswith(p)), None)
                    if refusal:
                        await say(refusal)
                    else:
                        rcpts.append(rcpt)
                        await say("250 2.1.5 ok")
                elif verb == b"DATA":
                    await say("354 go ahead")
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 30)
                    self.transactions.append(Transaction(mail, rcpts, b"\r\n" + raw, peer))
                    mail, rcpts = b"", []
                    await say("250 2.0.0 taken")
                elif verb in (b"RSET", b"NOOP"):
                    await say("250 2.0.0 ok")
                elif verb == b"QUIT":
                    await say("221 2.0.0 bye")
                    return
                else:
                    await say("502 5.5.1 not here")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            return
        finally:
            writer.close()


def data_section(transaction: Transaction) -> bytes:
    """The message as the MX saw it: CRLF-leading DATA section without the final ``.CRLF``."""
    raw = transaction.raw
    assert raw.endswith(b"\r\n.\r\n")
    return raw[2:-3]


class SilentMX:
    """A port that completes TCP handshakes (from the listen backlog) and never answers."""

    def __init__(self, host: str, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SilentMX":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
