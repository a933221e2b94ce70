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

A message nobody is looking at is kept as a small :class:`~.waiting.Waiting`
(id, due time, arrival) and read back from its envelope when it is due,
shown or asked about (see ``waiting.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .db import Store
from .entry import QueueItem, RecipientState, new_id
from .queueload import SpoolLoading
from .safeio import DirSyncer, atomic_write
from .spoolfile import MSG, OLD_BODY, STATE, SpoolFiles
from .waiting import Waiting

log = logging.getLogger(__name__)



class Queue(SpoolLoading):
    def __init__(self, spool_dir: Path, *, store: Store | None = None,
                 syncer: DirSyncer | None = None,
                 on_problem: Callable[[str], None] | None = None):
        self.dir = Path(spool_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._files = SpoolFiles(self.dir)
        self._store = store
        self._syncer = syncer or DirSyncer()
        self._on_problem = on_problem or (lambda text: log.warning("%s", text))
        self._items: dict[str, QueueItem | Waiting] = {}
        self._heap: list[tuple[float, str]] = []   # (due, id); an entry whose item changed is skipped
        self._wake = asyncio.Event()
        self._index = store.queue_index if store is not None else None
        if self._index is not None:
            self._index.bind(self._row, self._items.keys, self._row_from_spool)
        self.scanning = False
        # Ids this process created or retired while a scan runs: whatever the
        # scan read of them is older than what the queue knows.
        self._live: set[str] | None = None
        self._scan_started = 0.0

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

    # -- whole entries, read back --------------------------------------------------

    def _read_entry(self, msg_id: str) -> dict:
        """The envelope's JSON: its state file, else its ``.msg`` header (blocking; raises OSError or
        ValueError)."""
        return self._files.read_envelope(msg_id)

    def _whole(self, waiting: Waiting, data: dict | None = None) -> QueueItem | None:
        """``waiting`` read back whole from its envelope (or from ``data``, its JSON), or None (and
        forgotten) if that is gone or damaged. The due time in memory wins: a reschedule is not
        always saved."""
        try:
            item = QueueItem.from_json(self._read_entry(waiting.id) if data is None else data)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self._lost(waiting, exc)
            return None
        item.next_attempt = waiting.next_attempt
        return item

    def _lost(self, waiting: Waiting, exc: Exception) -> None:
        if isinstance(exc, FileNotFoundError):
            self._on_problem(f"queue: {waiting.id} has gone from the spool; forgotten")
        else:
            for ext in (STATE, MSG, OLD_BODY):
                self._quarantine(f"{waiting.id}{ext}", f"unreadable ({exc})")
        self._forget(waiting)

    def _forget(self, waiting: Waiting) -> None:
        if self._items.get(waiting.id) is waiting:
            del self._items[waiting.id]
            self._changed(waiting.id)

    def _hydrate(self, entry: QueueItem | Waiting, keep: bool = True) -> QueueItem | None:
        """The whole item of ``entry`` (read from the spool on the loop: admin and views only);
        ``keep`` holds it in memory until its next attempt ends."""
        if isinstance(entry, QueueItem):
            return entry
        item = self._whole(entry)
        if item is not None and keep and self._items.get(entry.id) is entry:
            self._items[entry.id] = item
        return item

    async def _hydrate_due(self, entry: QueueItem | Waiting) -> QueueItem | None:
        """The whole item of a due ``entry``, its envelope read in the executor."""
        if isinstance(entry, QueueItem):
            return entry
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, self._read_entry, entry.id)
        except (OSError, ValueError) as exc:
            data, error = None, exc
        current = self._items.get(entry.id)
        if current is not entry:          # removed, or read whole by an admin verb, meanwhile
            return current if isinstance(current, QueueItem) and not current.in_flight else None
        if data is None:
            self._lost(entry, error)
            return None
        item = self._whole(entry, data)
        if item is not None:
            self._items[entry.id] = item
        return item

    # -- scheduling --------------------------------------------------------------

    def _push(self, item: QueueItem | Waiting) -> None:
        heapq.heappush(self._heap, (item.next_attempt, item.id))
        self._wake.set()

    def schedule(self, item: QueueItem, when: float) -> None:
        item.next_attempt = when
        if item.id in self._items:
            self._push(item)
        self._changed(item.id)

    def _valid(self, entry: tuple[float, str]) -> QueueItem | Waiting | None:
        item = self._items.get(entry[1])
        if item is None or item.in_flight or item.next_attempt != entry[0] or not item.pending():
            return None
        return item

    def _take_due(self, now: float) -> QueueItem | Waiting | None:
        while self._heap:
            entry = self._heap[0]
            item = self._valid(entry)
            if item is None:
                heapq.heappop(self._heap)
                continue
            if entry[0] > now:
                return None
            heapq.heappop(self._heap)
            return item
        return None

    def pop_due(self, now: float | None = None) -> QueueItem | None:
        """The earliest item due by ``now``, marked in flight; or None (its envelope is read here)."""
        now = time.time() if now is None else now
        while (entry := self._take_due(now)) is not None:
            item = self._hydrate(entry)
            if item is not None:
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
            entry = self._take_due(time.time())
            if entry is not None:
                item = await self._hydrate_due(entry)
                if item is not None:
                    item.in_flight = True
                    return item
                continue
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
        """The delivery loop is done with ``item`` for now; reschedule it, and keep only its
        :class:`Waiting` part (its envelope was saved by the attempt)."""
        item.in_flight = False
        if self._items.get(item.id) is item and item.pending():
            self._items[item.id] = waiting = Waiting(item.id, item.next_attempt, item.arrival)
            self._push(waiting)

    # -- admin -------------------------------------------------------------------

    def get(self, msg_id: str) -> QueueItem | None:
        item = self._items.get(msg_id)
        if item is None:
            matches = [i for key, i in self._items.items() if key.startswith(msg_id.upper())]
            item = matches[0] if len(matches) == 1 else None
        return None if item is None else self._hydrate(item)

    def items(self, limit: int | None = None) -> list[QueueItem]:
        """The oldest ``limit`` messages (all by default), whole; with a limit they stay whole in
        memory (a view shows them again and again), without one they are read each time."""
        entries = sorted(self._items.values(), key=lambda i: i.arrival)[:limit]
        whole = (self._hydrate(entry, keep=limit is not None) for entry in entries)
        return [item for item in whole if item is not None]

    async def summaries(self, batch: int = 2000) -> list[dict]:
        """Every message's ``queue list`` row, oldest first.

        Waiting messages' envelopes are read in a worker thread, a batch at a
        time: 500,000 of them take seconds that the loop must not wait through.
        """
        entries = sorted(self._items.values(), key=lambda i: i.arrival)
        rows: list[dict] = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(entries), batch):
            chunk = entries[start:start + batch]
            waiting = [e for e in chunk if not isinstance(e, QueueItem)]
            read = dict(await loop.run_in_executor(None, self._read_summaries, waiting)) if waiting else {}
            for entry in chunk:
                row = entry.summary() if isinstance(entry, QueueItem) else read.get(entry.id)
                if row is not None:       # (gone or damaged meanwhile: its attempt says so)
                    rows.append(row)
        return rows

    def _read_summaries(self, entries: list[Waiting]) -> list[tuple[str, dict]]:
        """The rows of waiting messages, from their envelopes (blocking: a worker thread)."""
        rows = []
        for entry in entries:
            try:
                item = QueueItem.from_json(self._read_entry(entry.id))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                continue
            item.next_attempt = entry.next_attempt
            rows.append((entry.id, item.summary()))
        return rows

    def __len__(self) -> int:
        return len(self._items)

    async def flush(self, msg_id: str | None = None) -> int:
        """Make every waiting message (or one) due now; returns how many."""
        now = time.time()
        targets = [self.get(msg_id)] if msg_id else list(self._items.values())
        count = 0
        for entry in targets:
            if entry is not None and not isinstance(entry, QueueItem):
                entry.next_attempt = now    # a waiting message: the due time in memory wins (waiting.py)
                self._push(entry)
                count += 1
                continue
            item = None if entry is None else self._hydrate(entry)
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

    def _row(self, msg_id: str) -> dict | float | None:
        """An index row; for a :class:`Waiting`, its due time: the row is read from the spool in the
        index's worker thread (:meth:`_row_from_spool`)."""
        item = self._items.get(msg_id)
        if item is None:
            return None
        return item.summary() if isinstance(item, QueueItem) else item.next_attempt

    def _row_from_spool(self, msg_id: str, next_attempt: float) -> dict | None:
        """The row of a waiting message, from its envelope (in a worker thread); None if it is gone."""
        try:
            item = QueueItem.from_json(self._read_entry(msg_id))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        item.next_attempt = next_attempt
        return item.summary()
