"""The durable queue of messages waiting for remote delivery.

A message arrives as one file, ``<id>.msg`` (envelope header and body: one
write, one fsync, and a directory fsync shared with every concurrent
arrival, all before the 250); ``<id>.json`` (the per-recipient state,
replaced atomically) is added only after an attempt that leaves something
pending. ``spoolfile.py`` has the format, and reads the two-file spools of
earlier versions. The files are the truth: at start the queue is rebuilt
from them, and the sharded TinyDB index (``index.py``) is written in batches
for readers outside the process.

Finishing a message unlinks its files without waiting for the directory
fsync that makes the unlinks durable: the ``DirSyncer`` runs it soon, shared
with the next arrivals' (the per-message directory fsync was 7.8 % of a relay
load's time). This risks a duplicate, never a loss, and not after kill -9: a
returned unlink is in the kernel at once, so only a power cut before the next
directory fsync (milliseconds under load) can bring the message back, to be
sent once more - the at-least-once window every MTA has between the remote's
250 and its own bookkeeping. An entry undone at intake (the client got a 4xx
and sends again) takes the same small risk.

The server does not wait for the rebuild: :meth:`Queue.start_scan` reads the
spool in the background (``spoolscan.py``) while mail is accepted, and each
message found becomes schedulable at once. Until the scan ends, ``scanning``
is true and ``len()`` counts what has been found so far.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .db import Store
from .safeio import DirSyncer, atomic_write, fsync_dir
from .spoolfile import MSG, OLD_BODY, STATE, SpoolFiles
from .spoolscan import Found, SpoolScan

log = logging.getLogger(__name__)

PENDING_STATES = ("queued", "deferred")

# Queue entries live long and form no reference cycles, yet the cyclic GC
# walks every one of them in each full collection while the loop waits
# (measured: 113 ms at 100,000 entries). After each FREEZE_EVERY entries the
# scan adopts, gc.freeze() moves everything alive out of the collector's
# reach (O(1)); refcounting still frees them when they leave the queue. The
# price: a reference cycle that is alive (or uncollected) at that moment is
# never collected. Small spools never freeze.
FREEZE_EVERY = 16384


_ID_PREFIX = secrets.randbits(12)
_id_counter = itertools.count(secrets.randbits(16))


def new_id() -> str:
    """A short, time-ordered, unique queue id (like Postfix's).

    Milliseconds, then a per-process random prefix and a counter: unique
    across restarts and concurrent processes without a syscall per message.
    """
    return f"{int(time.time() * 1000):011X}{_ID_PREFIX:03X}{next(_id_counter) & 0xFFF:03X}"


@dataclass(slots=True)
class RecipientState:
    address: str
    state: str = "queued"          # queued | deferred | delivered | failed
    attempts: int = 0
    last_error: str = ""           # plain words, for people
    status: str = ""               # RFC 3463 code, e.g. "4.4.1"
    diagnostic: str = ""           # e.g. "smtp; 550 5.1.1 no such user"
    remote_mta: str = ""           # e.g. "dns; mx1.example.com"
    updated: float = 0.0

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES


_RECIPIENT_WORDS = ("state", "last_error", "status", "diagnostic", "remote_mta")
_ITEM_WORDS = ("sender", "last_error", "peer", "helo")


def _interned(data: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        value = data.get(key)
        if type(value) is str:
            data[key] = sys.intern(value)
    return data


@dataclass(slots=True)
class QueueItem:
    id: str
    sender: str                    # "" is the null sender (bounces)
    recipients: list[RecipientState]
    arrival: float
    next_attempt: float
    size: int = 0
    attempts: int = 0
    last_error: str = ""
    peer: str = ""
    helo: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    dsn_sent: bool = False
    in_flight: bool = field(default=False, compare=False)

    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.pending]

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("in_flight")
        return data

    @classmethod
    def from_json(cls, data: dict) -> "QueueItem":
        """Rebuild an entry; the words that repeat across a big queue (states, errors, the
        client's name) share one string object each (~40 % of an entry's memory)."""
        data = dict(data)
        data["recipients"] = [RecipientState(**_interned(r, _RECIPIENT_WORDS)) for r in data["recipients"]]
        data.pop("in_flight", None)
        return cls(**_interned(data, _ITEM_WORDS))

    def summary(self) -> dict:
        """The row shown by ``queue list`` and the console."""
        return {
            "id": self.id, "sender": self.sender, "arrival": self.arrival,
            "next_attempt": self.next_attempt, "attempts": self.attempts,
            "last_error": self.last_error, "size": self.size,
            "recipients": [{"address": r.address, "state": r.state, "attempts": r.attempts,
                            "last_error": r.last_error} for r in self.recipients],
        }


class Queue:
    def __init__(self, spool_dir: Path, *, store: Store | None = None,
                 syncer: DirSyncer | None = None,
                 on_problem: Callable[[str], None] | None = None):
        self.dir = Path(spool_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._files = SpoolFiles(self.dir)
        self._store = store
        self._syncer = syncer or DirSyncer()
        self._on_problem = on_problem or (lambda text: log.warning("%s", text))
        self._items: dict[str, QueueItem] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._index = store.queue_index if store is not None else None
        if self._index is not None:
            self._index.bind(self._row, self._items.keys)
        self.scanning = False
        # Ids this process created or retired while a scan runs: whatever the
        # scan read of them is older than what the queue knows.
        self._live: set[str] | None = None
        self._scan_started = 0.0

    # -- loading -----------------------------------------------------------------

    def load(self) -> int:
        """Rebuild the queue from the spool at once; returns how many messages wait."""
        self._items.clear()
        self._heap.clear()
        scan = SpoolScan(self.dir, QueueItem.from_json)
        while not scan.done:
            self._remove_many(self._adopt(scan.next_batch()))
        return len(self._items)

    def start_scan(self, on_done: Callable[[int, float], None] | None = None) -> asyncio.Task:
        """Rebuild the queue from the spool in the background (see the module docstring).

        ``on_done(found, seconds)`` is called when the scan has read every file.
        """
        self._items.clear()
        self._heap.clear()
        self.scanning = True
        self._live = set()
        self._scan_started = time.time()
        return asyncio.create_task(self._scan(on_done), name="spool-scan")

    async def _scan(self, on_done: Callable[[int, float], None] | None) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        scan = SpoolScan(self.dir, QueueItem.from_json)
        unfrozen = 0
        try:
            while not scan.done:
                before = len(self._items)
                finished = self._adopt(await loop.run_in_executor(None, scan.next_batch))
                unfrozen += len(self._items) - before
                if unfrozen >= FREEZE_EVERY:
                    gc.freeze()
                    unfrozen = 0
                if finished:
                    await loop.run_in_executor(None, self._remove_many, finished)
        finally:
            scan.close()
            self.scanning = False
            self._live = None
        if on_done is not None:
            on_done(len(self._items), time.monotonic() - started)

    def _adopt(self, found: list[Found]) -> list[str]:
        """Take what a scan found; returns the ids of finished entries whose files should go."""
        finished = []
        for f in found:
            if f.kind == "temp":
                if self._stale_temp(f):
                    self._unlink(self.dir / f.name)
                continue
            if f.msg_id in self._items or (self._live is not None and f.msg_id in self._live):
                continue
            if f.kind == "entry":
                item: QueueItem = f.data  # type: ignore[assignment]
                if item.pending():
                    self._items[item.id] = item
                    self._push(item)
                    self._changed(item.id)
                else:
                    finished.append(item.id)
            elif f.kind == "unreadable":
                self._quarantine(f.name, f"unreadable ({f.error})")
                for ext in (MSG, STATE, OLD_BODY):
                    if f"{f.msg_id}{ext}" != f.name:
                        self._quarantine(f"{f.msg_id}{ext}", f"belongs with {f.name}")
            elif f.kind == "no-body":
                self._on_problem(f"queue: {f.name} has no body; dropped")
                self._unlink(self.dir / f.name)
            else:  # partial, orphan-body: cut short before its 250
                self._unlink(self.dir / f.name)
        return finished

    def _stale_temp(self, f: Found) -> bool:
        """Is this temporary file left by a crash, or the save of a message in progress now?"""
        if self._live is None:
            return True                      # a blocking load: nothing else writes
        if f.msg_id in self._live:
            return False
        if f.msg_id in self._items:          # found by this scan, so it may be being saved now
            return f.data < self._scan_started - 1.0  # type: ignore[operator]
        return True

    def _remove_many(self, ids: list[str]) -> None:
        """Remove finished entries a scan found (files of an earlier run: one directory fsync)."""
        for msg_id in ids:
            self._files.remove(msg_id)
        if ids:
            try:
                fsync_dir(self.dir)
            except OSError:
                pass

    def _touch(self, msg_id: str) -> None:
        if self._live is not None:
            self._live.add(msg_id)

    def _quarantine(self, name: str, why: str) -> None:
        bad = self.dir / "corrupt"
        bad.mkdir(exist_ok=True)
        try:
            os.replace(self.dir / name, bad / name)
            self._on_problem(f"queue: {name} {why}; moved to {bad}")
        except FileNotFoundError:
            pass

    # -- writing -----------------------------------------------------------------

    async def enqueue(self, sender: str, recipients: Iterable[str], body: bytes, *,
                      msg_id: str | None = None, peer: str = "", helo: str = "",
                      smtputf8: bool = False, body_8bit: bool = False,
                      arrival: float | None = None) -> QueueItem:
        """Spool a message durably (its one file and the directory, fsync'd), then schedule it."""
        now = time.time()
        item = QueueItem(
            id=msg_id or new_id(), sender=sender,
            recipients=[RecipientState(r) for r in recipients],
            arrival=arrival or now, next_attempt=now, size=len(body),
            peer=peer, helo=helo, smtputf8=smtputf8, body_8bit=body_8bit)
        self._touch(item.id)
        await asyncio.get_running_loop().run_in_executor(None, self._files.create, item.id, item.to_json(), body)
        await self._syncer.sync(self.dir)
        self._items[item.id] = item
        self._push(item)
        self._changed(item.id)
        return item

    async def save(self, item: QueueItem) -> None:
        """Durably record ``item``'s state; removes it when nothing is pending."""
        if item.id not in self._items:  # removed by the administrator meanwhile
            return
        if not item.pending():
            await self.finish(item)
            return
        data = json.dumps(item.to_json()).encode()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: atomic_write(self._files.path(item.id, STATE), data, sync_dir=False))
        await self._syncer.sync(self.dir)
        self._changed(item.id)

    async def finish(self, item: QueueItem) -> None:
        """Forget a message whose recipients are all done; its unlinks become durable soon
        after, with the next directory fsync (see the module docstring for why not now)."""
        self._touch(item.id)
        self._items.pop(item.id, None)
        await asyncio.get_running_loop().run_in_executor(None, self._files.remove, item.id)
        self._syncer.soon(self.dir)
        self._changed(item.id)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def read_body(self, item_or_id: QueueItem | str) -> bytes:
        return self._files.read_body(item_or_id if isinstance(item_or_id, str) else item_or_id.id)

    # -- scheduling --------------------------------------------------------------

    def _push(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item.next_attempt, next(self._seq), item.id))
        self._wake.set()

    def schedule(self, item: QueueItem, when: float) -> None:
        item.next_attempt = when
        if item.id in self._items:
            self._push(item)
        self._changed(item.id)

    def _valid(self, entry: tuple[float, int, str]) -> QueueItem | None:
        item = self._items.get(entry[2])
        if item is None or item.in_flight or item.next_attempt != entry[0] or not item.pending():
            return None
        return item

    def pop_due(self, now: float | None = None) -> QueueItem | None:
        """The earliest item due by ``now``, marked in flight; or None."""
        now = time.time() if now is None else now
        while self._heap:
            entry = self._heap[0]
            item = self._valid(entry)
            if item is None:
                heapq.heappop(self._heap)
                continue
            if entry[0] > now:
                return None
            heapq.heappop(self._heap)
            item.in_flight = True
            return item
        return None

    def next_due_time(self) -> float | None:
        while self._heap and self._valid(self._heap[0]) is None:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def wait_due(self) -> QueueItem:
        """Sleep until an item is due (or the queue changes), then return it."""
        while True:
            item = self.pop_due()
            if item is not None:
                return item
            due = self.next_due_time()
            self._wake.clear()
            timeout = None if due is None else max(0.0, due - time.time())
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow
                # a cancellation that lands as the event fires.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def release(self, item: QueueItem) -> None:
        """The delivery loop is done with ``item`` for now; reschedule it."""
        item.in_flight = False
        if item.id in self._items and item.pending():
            self._push(item)

    # -- admin -------------------------------------------------------------------

    def get(self, msg_id: str) -> QueueItem | None:
        item = self._items.get(msg_id)
        if item is None:
            matches = [i for key, i in self._items.items() if key.startswith(msg_id.upper())]
            item = matches[0] if len(matches) == 1 else None
        return item

    def items(self) -> list[QueueItem]:
        return sorted(self._items.values(), key=lambda i: i.arrival)

    def __len__(self) -> int:
        return len(self._items)

    async def flush(self, msg_id: str | None = None) -> int:
        """Make every waiting message (or one) due now; returns how many."""
        now = time.time()
        targets = [self.get(msg_id)] if msg_id else list(self._items.values())
        count = 0
        for item in targets:
            if item is None or item.in_flight:
                continue
            item.next_attempt = now
            self._push(item)
            await self.save(item)
            count += 1
        return count

    async def remove(self, msg_id: str) -> QueueItem | None:
        item = self.get(msg_id)
        if item is None:
            return None
        await self.finish(item)
        return item

    # -- the index -------------------------------------------------------------------

    @property
    def indexing(self) -> bool:
        """Changes are waiting for the index (after a big scan, for a while)."""
        return self._index is not None and self._index.dirty

    def _changed(self, msg_id: str) -> None:
        if self._index is not None:
            self._index.changed(msg_id)

    def _row(self, msg_id: str) -> dict | None:
        item = self._items.get(msg_id)
        return item.summary() if item is not None else None
