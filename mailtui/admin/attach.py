"""Attached consoles: a snapshot, then the live event stream, never slowing the server.

After Mailpit's websocket hub: one bus subscription for every attached
console (taken while at least one is attached), drained a few times a
second, each event encoded once (:mod:`mailtui.eventcodec`) and the batch
written to every console's socket. Nothing here awaits a console: a write
only appends to the socket's buffer, and a console whose buffer has grown
past ``max_buffer`` (it stopped reading, or reads too slowly) is told to
re-sync and dropped; it comes back for a new snapshot. If the hub itself
fell behind (its subscription dropped events), every console re-syncs.

The stream, one JSON object per line::

    {"snapshot": {...}}            first (see mailtui.server.snapshot)
    {"type": "ConnectionOpened", ...}   then every event, as it happens
    {"lag": {"p99_ms": ...}}       every LAG_EVERY seconds: the loop lag over that period
    {"resync": "why"}              last, when the server drops a console that fell behind
    {"bye": "why"}                 last, when the server stops

The lag line is the figure of the server's loop (mailtui.server.lag), which a
console in another process cannot measure itself: its own loop is not the one
that serves mail. One window feeds every console, so the period is the same
for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Callable, Iterable, Protocol

from ..eventcodec import encode
from ..events import EventBus, Subscription

log = logging.getLogger(__name__)

Snapshot = Callable[[Iterable[str] | None], dict]

MAX_BUFFER = 4 << 20     # bytes waiting in one console's socket buffer before it must re-sync
GATHER = 0.05            # seconds a burst of events gathers before one write per console
BUS_QUEUE = 50_000       # events the hub's subscription holds before it drops (then: all re-sync)
LAG_EVERY = 5.0          # seconds between two lag lines (the period each one covers)


class LagFigures(Protocol):
    def as_dict(self) -> dict: ...


class LagWindow(Protocol):
    def take(self) -> LagFigures: ...


class LagSource(Protocol):
    """The server's loop-lag probe (:class:`mailtui.server.lag.LagProbe`)."""

    def window(self) -> LagWindow: ...
    def close(self, window: LagWindow) -> None: ...


def line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class _Console:
    """One attached console: its socket, and whether the hub still writes to it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.open = True

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def drop(self, reason: str, word: str = "resync") -> None:
        if self.open:
            self.open = False
            self.transport.write(line({word: reason}))
            self.transport.close()   # the buffer is sent first (or lost with the console)


class AttachHub:
    def __init__(self, bus: EventBus, snapshot: Snapshot, *, max_buffer: int = MAX_BUFFER,
                 gather: float = GATHER, lag: LagSource | None = None) -> None:
        self.bus = bus
        self.snapshot = snapshot
        self.max_buffer = max_buffer
        self.gather = gather
        self.lag = lag
        self.consoles: set[_Console] = set()
        self.resyncs = 0                     # consoles told to re-sync so far
        self._sub: Subscription | None = None
        self._task: asyncio.Task | None = None
        self._lag_task: asyncio.Task | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Stream to one console until it goes (or is dropped)."""
        console = _Console(writer)
        self._flush()                        # events still pending belong to the consoles already here
        self.consoles.add(console)           # (all at once: no event can come between the snapshot and these)
        self._start()
        writer.write(line({"snapshot": self.snapshot(None)}))
        try:
            while await reader.read(4096):   # the console says nothing more; EOF when it leaves
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            console.open = False
            self.consoles.discard(console)
            if not self.consoles:
                self._stop()
            writer.close()

    def _start(self) -> None:
        if self._sub is None:
            self._sub = self.bus.subscribe(maxsize=BUS_QUEUE)
            self._task = asyncio.create_task(self._run(self._sub), name="attach-hub")
        if self._lag_task is None and self.lag is not None:
            self._lag_task = asyncio.create_task(self._send_lag(self.lag), name="attach-lag")

    def _stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for task in (self._task, self._lag_task):
            if task is not None:
                task.cancel()
        self._task = self._lag_task = None

    async def close(self) -> None:
        """Drop every console (the server is stopping)."""
        for console in list(self.consoles):
            console.drop("the server is stopping", "bye")
        self.consoles.clear()
        task = self._task
        self._stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, sub: Subscription) -> None:
        while True:
            await sub.wait()
            await asyncio.sleep(self.gather)   # a burst gathers: one encode per event, one write per console
            try:
                self._flush()
            except Exception:                  # never let one bad batch end every console's stream
                log.exception("attached consoles: a batch failed")

    async def _send_lag(self, source: LagSource) -> None:
        """A lag line to every console each LAG_EVERY seconds, while any is attached."""
        window = source.window()
        try:
            while True:
                await asyncio.sleep(LAG_EVERY)
                self._write(line({"lag": window.take().as_dict()}))
        finally:
            source.close(window)

    def _write(self, blob: bytes) -> None:
        for console in list(self.consoles):
            if console.buffered() > self.max_buffer:
                self._resync(console, "this console fell behind")
            else:
                console.transport.write(blob)

    def _flush(self) -> None:
        sub = self._sub
        if sub is None:
            return
        events = sub.drain()
        if sub.dropped:
            sub.dropped = 0
            for console in list(self.consoles):
                self._resync(console, "the server's stream to consoles fell behind")
            return
        if not events:
            return
        self._write(b"".join(map(encode, events)))

    def _resync(self, console: _Console, reason: str) -> None:
        self.resyncs += 1
        console.drop(reason)
        self.consoles.discard(console)
