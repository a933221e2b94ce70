"""Client-side probes: 250 latency beside a load, NOOP round trips, the first 250 after start.

smtp-source cannot say how long a server took to answer the end of DATA, so
:class:`SmtpProbe` is one more SMTP session beside the load (a small asyncio
client in a thread of the benchmark, with its own loop): it sends a message
of the load's size every ``pause`` seconds over one connection and times
each from its final ``.`` to the 250. :class:`NoopPinger` times NOOP round
trips the same way; it measures how long the server's event loop was held
from outside, so it works on any mailtui tree and on Postfix alike.
"""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import threading
import time

from common import log

REPLY_TIMEOUT = 60.0


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """A whole (possibly multi-line) SMTP reply; the last line."""
    while True:
        async with asyncio.timeout(REPLY_TIMEOUT):
            line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return line


async def _command(reader, writer, text: str, expect: bytes) -> bytes:
    writer.write(text.encode() + b"\r\n")
    line = await _reply(reader)
    if not line.startswith(expect):
        raise RuntimeError(f"{text.split()[0]}: {line.decode(errors='replace').strip()}")
    return line


async def _data(reader, writer, body: bytes) -> float:
    """Send a message body (ending in CRLF.CRLF); seconds from its last byte to the 250."""
    writer.write(body)
    await writer.drain()
    t0 = time.perf_counter()
    line = await _reply(reader)
    took = time.perf_counter() - t0
    if not line.startswith(b"250"):
        raise RuntimeError(f"end of DATA: {line.decode(errors='replace').strip()}")
    return took


async def _open(port: int, helo: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    banner = await _reply(reader)
    if not banner.startswith(b"220"):
        raise RuntimeError(f"banner: {banner.decode(errors='replace').strip()}")
    await _command(reader, writer, f"EHLO {helo}", b"250")
    return reader, writer


def message(size: int, rcpt: str, n: int) -> bytes:
    head = (f"From: <probe@example.org>\r\nTo: <{rcpt}>\r\nSubject: probe {n}\r\n"
            f"Message-Id: <{n}.{time.time_ns()}.probe@client.bench.test>\r\n\r\n").encode()
    line = b"Y" * 78 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size].rstrip(b"\r")
    if not body.endswith(b"\n"):
        body += b"\r\n"
    return head + body + b".\r\n"


def summary(values: list[float]) -> dict:
    """p50 / p99 / max in milliseconds (nearest rank), and the count."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000

    return {"n": len(ordered), "p50_ms": round(rank(0.5), 3), "p99_ms": round(rank(0.99), 3),
            "max_ms": round(ordered[-1] * 1000, 3), "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


class _Thread:
    """An asyncio coroutine run in a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> _Thread:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self.run())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    async def run(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


class SmtpProbe(_Thread):
    """One extra session beside the load, timing end of DATA -> 250 of each message."""

    def __init__(self, port: int, rcpt: str, size: int, pause: float = 0.01):
        super().__init__()
        self.port, self.rcpt, self.size, self.pause = port, rcpt, size, pause
        self.latencies: list[float] = []
        self.sent = 0

    async def run(self) -> None:
        reader, writer = await _open(self.port, "probe.bench.test")
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                await _command(reader, writer, "MAIL FROM:<probe@example.org>", b"250")
                await _command(reader, writer, f"RCPT TO:<{self.rcpt}>", b"250")
                await _command(reader, writer, "DATA", b"354")
                self.latencies.append(await _data(reader, writer, message(self.size, self.rcpt, n)))
                self.sent += 1
                await asyncio.sleep(self.pause)
            await _command(reader, writer, "QUIT", b"221")
        finally:
            writer.close()

    def figures(self) -> dict:
        return summary(self.latencies)


class NoopPinger(_Thread):
    """NOOP every ``interval`` seconds on one session; the round trips show a held event loop."""

    def __init__(self, port: int, interval: float = 0.01):
        super().__init__()
        self.port, self.interval = port, interval
        self.rtts: list[float] = []

    async def run(self) -> None:
        reader, writer = await _open(self.port, "noop.bench.test")
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                await _command(reader, writer, "NOOP", b"250")
                self.rtts.append(time.perf_counter() - t0)
                await asyncio.sleep(self.interval)
        finally:
            writer.close()

    def figures(self) -> dict:
        return summary(self.rtts)


def first_250(port: int, rcpt: str, started: float, timeout: float, proc=None) -> float:
    """Seconds from ``started`` (perf_counter) until the server took one message."""

    async def attempt() -> None:
        reader, writer = await _open(port, "first.bench.test")
        try:
            await _command(reader, writer, "MAIL FROM:<first@example.org>", b"250")
            await _command(reader, writer, f"RCPT TO:<{rcpt}>", b"250")
            await _command(reader, writer, "DATA", b"354")
            await _data(reader, writer, message(1024, rcpt, 0))
            await _command(reader, writer, "QUIT", b"221")
        finally:
            writer.close()

    deadline = started + timeout
    last = ""
    while time.perf_counter() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before accepting mail")
        try:
            asyncio.run(attempt())
            return time.perf_counter() - started
        except (OSError, RuntimeError) as exc:
            if str(exc) != last:
                last = str(exc)
                if not isinstance(exc, ConnectionRefusedError):
                    log(f"first message not accepted yet: {exc}")
            time.sleep(0.02)
    raise RuntimeError(f"no message accepted within {timeout:.0f}s ({last})")
