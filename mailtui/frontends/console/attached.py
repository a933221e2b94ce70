"""A console attached to a running ``mailtui serve``: the same shape as a Core, over the control socket.

:class:`AttachedServer` is a :class:`~.backend.MailServer`: the console shows
it and acts on it exactly as on a server of its own. Its views (listeners,
queue, registry) come from the snapshot that opens the stream and are kept
current from the events that follow; where an event does not carry enough
(the queue's rows after ``Queued`` or ``QueueChanged``, the registry after
``RegistryChanged``) the part is fetched again, at most once a second. Every
admin verb is sent to the server. The events are published into the
console's own bus, so the batch folds them like a local server's.

When the stream ends it says why: ``resync`` (this console fell behind: it
attaches again at once, for a new snapshot), ``bye`` (the server is
stopping), or nothing (it went away). Then it polls the socket, backing off
to every few seconds, and attaches again when the server is back. No
Textual here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from ... import events as ev
from ...admin import control
from ...admin.registry import Client, Mailbox
from ...admin.verbs import AdminError
from ...config import Config
from ...eventcodec import from_dict
from ...server.lag import LagStats
from ...server.stats import ServerStats
from ...store.maildir import Maildirs
from ...store.queue import QueueItem
from .batch import Attached, ViewsChanged
from .model import QUEUE_EVENTS

log = logging.getLogger(__name__)

REFETCH = 1.0           # seconds between two fetches of the same view
GATHER = 0.2            # seconds a burst of events gathers before a view is fetched
STREAM_CHUNK = 1 << 16  # bytes read from the stream at a time
BACKOFF = (0.2, 0.5, 1.0, 2.0, 3.0)   # seconds between attempts to attach again


# -- the views -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteListener:
    proto: str
    address: str
    bound: str = ""
    error: str = ""
    ok: bool = False

    @classmethod
    def of(cls, row: dict) -> "RemoteListener":
        return cls(proto=row["proto"], address=row["address"], bound=row.get("bound", ""),
                   error=row.get("error", ""), ok=bool(row.get("ok")))


class RemoteQueue:
    """The first rows of the server's queue, and its size."""

    def __init__(self) -> None:
        self._items: list[QueueItem] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def items(self, limit: int | None = None) -> Sequence[QueueItem]:
        return self._items[:limit]

    def take(self, part: dict) -> None:
        items = []
        for row in part.get("items", []):
            row = dict(row)
            in_flight = bool(row.pop("in_flight", False))
            item = QueueItem.from_json(row)
            item.in_flight = in_flight
            items.append(item)
        self._items, self._size = items, int(part.get("size", len(items)))


class RemoteLag:
    """The server's loop lag, as its stream says every few seconds (a console's own loop is not the
    server's); every window shows the latest figures."""

    def __init__(self) -> None:
        self.latest: LagStats | None = None

    def take(self) -> LagStats | None:
        return self.latest

    def window(self) -> "RemoteLag":
        return self

    def close(self, window: "RemoteLag") -> None:
        pass


class RemoteRegistry:
    def __init__(self) -> None:
        self._clients: list[Client] = []
        self._mailboxes: list[Mailbox] = []

    def clients(self) -> Sequence[Client]:
        return self._clients

    def mailboxes(self) -> Sequence[Mailbox]:
        return self._mailboxes

    def get_client(self, name: str) -> Client | None:
        return next((c for c in self._clients if c.name == name), None)

    def take(self, part: dict) -> None:
        self._clients = [Client(c["name"], tuple(c["networks"]), c.get("note", ""), c.get("created", 0.0))
                         for c in part.get("clients", [])]
        self._mailboxes = [Mailbox(m["address"], m.get("created", 0.0)) for m in part.get("mailboxes", [])]


class RemoteAdmin:
    """The admin desk of the attached server: its verbs go over the control socket."""

    def __init__(self, config: Config) -> None:
        self._data_dir = config.server.data_dir
        self.registry = RemoteRegistry()
        # Counting a mailbox is a directory listing: read here, on the same disk, costing the server nothing.
        self.maildirs = Maildirs(config.server.data_dir / "mail")

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        try:
            return await control.request(self._data_dir, op, args)
        except control.ControlError as exc:
            raise AdminError(str(exc)) from None


# -- the server ----------------------------------------------------------------------------------

State = Literal["attaching", "attached", "lost"]
REFETCH_PARTS = {"queue": ("queue",), "registry": ("clients",)}


class AttachedServer:
    """A running server seen through its control socket; ``on_state(state, reason)`` tells the lifecycle."""

    def __init__(self, config: Config, *, bus: ev.EventBus) -> None:
        self.config = config
        self.bus = bus
        self.listeners: list[RemoteListener] = []
        self.queue = RemoteQueue()
        self.admin = RemoteAdmin(config)
        self.status: dict = {}
        self.stats = ServerStats()       # the server's totals: from the snapshot, then counted on from its events
        self.lag = RemoteLag()
        self.state: State = "attaching"
        self.reason = ""
        self.started = False
        self.attaches = 0                # snapshots taken (more than one: it fell behind, or the server came back)
        self.on_state: Callable[[State, str], None] = lambda state, reason: None
        self._task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._fetching: dict[str, asyncio.Task] = {}
        self._stale: set[str] = set()

    @property
    def pid(self) -> int:
        return int(self.status.get("pid", 0))

    async def start(self) -> None:
        """Keep attached from now on, in the background (first attempt at once)."""
        self.started = True
        self._task = asyncio.create_task(self._keep_attached(), name="attached-server")

    async def stop(self) -> None:
        """Detach; the server runs on."""
        self.started = False
        for task in list(self._fetching.values()):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()

    def _set(self, state: State, reason: str = "") -> None:
        self.state, self.reason = state, reason
        if state == "lost":
            self.lag.latest = None       # a server that comes back is measured afresh
        self.on_state(state, reason)

    async def _keep_attached(self) -> None:
        tries = 0
        while True:
            try:
                reader, self._writer, snapshot = await control.open_stream(self.config.server.data_dir)
            except control.ControlError as exc:
                if self.state != "lost":   # (a server that said goodbye keeps its words on screen)
                    path = control.socket_path(self.config.server.data_dir)
                    self._set("lost", f"no mail server answers on {path}"
                              if isinstance(exc, control.Unreachable) else str(exc))
                await asyncio.sleep(BACKOFF[min(tries, len(BACKOFF) - 1)])
                tries += 1
                continue
            tries = 0
            self._take(snapshot)
            self._set("attached")
            word, reason = await self._follow(reader)
            self._writer.close()
            if word != "resync":
                self._set("lost", "the mail server stopped" if word == "bye" else reason or "the mail server went away")
                await asyncio.sleep(BACKOFF[0])

    def _take(self, snapshot: dict) -> None:
        self.attaches += 1
        self.status = snapshot.get("status", {})
        self.stats = ServerStats.restore(self.status.get("totals", {}))
        self.listeners = [RemoteListener.of(row) for row in self.status.get("listeners", [])]
        self.queue.take(snapshot.get("queue", {}))
        self.admin.registry.take(snapshot.get("registry", {}))
        self.bus.publish(Attached(snapshot=snapshot))

    async def _follow(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        """Publish the stream's events until it ends; returns how it ended (resync, bye or lost) and why.

        The stream is read in chunks, not line by line: at hundreds of messages a
        second that halves what a console spends on reading it.
        """
        rest = b""
        try:
            while chunk := await reader.read(STREAM_CHUNK):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    data = json.loads(line)
                    if not isinstance(data, dict):
                        continue
                    if "type" not in data:
                        for word in ("resync", "bye"):
                            if word in data:
                                return word, str(data[word])
                        if isinstance(data.get("lag"), dict):
                            self.lag.latest = LagStats.from_dict(data["lag"])
                        continue
                    event = from_dict(data)
                    if event is not None:      # a newer server's event this console does not know: skipped
                        self.stats.observe(event)
                        self.bus.publish(event)
                        self._watch(event)
        except (ConnectionError, OSError, ValueError) as exc:
            return "lost", f"the connection to the mail server broke ({exc})"
        return "lost", ""

    def _watch(self, event: ev.Event) -> None:
        if isinstance(event, QUEUE_EVENTS):
            self._refetch("queue")
        elif isinstance(event, ev.RegistryChanged):
            self._refetch("registry")

    def _refetch(self, part: str) -> None:
        """Fetch ``part`` again soon: once for a burst of events, and at most once a second."""
        if part in self._fetching:
            self._stale.add(part)        # the fetch under way may be too early: one more after it
            return
        self._fetching[part] = asyncio.create_task(self._fetch(part), name=f"fetch-{part}")

    async def _fetch(self, part: str) -> None:
        try:
            while True:
                await asyncio.sleep(GATHER)
                self._stale.discard(part)
                try:
                    snapshot = await control.request(self.config.server.data_dir, "snapshot", {"parts": [part]})
                except Exception as exc:   # the stream notices a server that went away; nothing to add here
                    log.debug("fetching %s failed: %s", part, exc)
                else:
                    (self.queue if part == "queue" else self.admin.registry).take(snapshot.get(part, {}))
                    self.bus.publish(ViewsChanged(panels=REFETCH_PARTS[part]))
                await asyncio.sleep(REFETCH - GATHER)
                if part not in self._stale:
                    return
        finally:
            self._fetching.pop(part, None)
