"""How the queue is rebuilt from its spool: at once (``load``) or in the background (``start_scan``).

A mixin of :class:`~.queue.Queue`, apart because it is the one part that
deals with what an earlier run (or a crash) left behind: temporary files,
finished entries whose files were not yet unlinked, cut-short and damaged
ones. The spool's files are read by :class:`~.spoolscan.SpoolScan` in a
worker thread; what it finds is adopted here, on the loop.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

from .safeio import fsync_dir
from .spoolfile import MSG, OLD_BODY, STATE
from .spoolscan import Found, SpoolScan
from .waiting import Waiting, waiting_of

# Queue entries live long and form no reference cycles, yet the cyclic GC
# walks every one of them in each full collection while the loop waits
# (measured: 113 ms at 100,000 entries). After each FREEZE_EVERY entries the
# scan adopts, gc.freeze() moves everything alive out of the collector's
# reach (O(1)); refcounting still frees them when they leave the queue. The
# price: a reference cycle that is alive (or uncollected) at that moment is
# never collected. Small spools never freeze.
FREEZE_EVERY = 16384


class SpoolLoading:
    """The loading half of the queue (its state lives in :class:`~.queue.Queue`)."""

    def load(self) -> int:
        """Rebuild the queue from the spool at once; returns how many messages wait."""
        self._items.clear()
        self._heap.clear()
        scan = SpoolScan(self.dir, waiting_of)
        while not scan.done:
            self._remove_many(self._adopt(scan.next_batch()))
        if self._index is not None:
            self._index.rebuild()
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
        scan = SpoolScan(self.dir, waiting_of)
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
            if self._index is not None:
                self._index.rebuild()        # the finds, all at once (see QueueIndex.rebuild)
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
                item: Waiting = f.data  # type: ignore[assignment]
                if item.pending():
                    self._items[item.id] = item
                    self._push(item)
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

