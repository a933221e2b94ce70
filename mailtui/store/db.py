"""TinyDB state on disk: replaced atomically, kept in memory, written in batches.

Kept apart, so that high-churn logs never force a rewrite of the small,
precious tables:

* ``state.json``   clients and mailboxes; written through on every change,
                   with the previous version kept as ``state.json.bak``;
* ``queue-index/`` an index of the spool in shards (``index.py``; rebuilt
                   from the spool at start);
* ``logs.json``    connection, DNS and delivery logs, each capped.

TinyDB's own JSONStorage truncates and rewrites in place, so a crash
mid-write loses the file; :class:`AtomicJSONStorage` never does. Batched
files are serialised in the executor, from a copy taken on the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from tinydb import TinyDB
from tinydb.storages import Storage

from .index import QueueIndex
from .safeio import atomic_write

log = logging.getLogger(__name__)

LOG_TABLES = ("connections", "dns", "deliveries")


class AtomicJSONStorage(Storage):
    """A TinyDB storage held in memory and persisted by atomic replacement.

    ``write_through`` persists on every write (small, precious tables);
    otherwise writes only mark the data dirty and :meth:`persist` is called by
    the store's flusher. ``insert_only`` promises that documents are never
    changed in place (logs), so a copy of the tables is a consistent snapshot
    that another thread may serialise.
    """

    def __init__(self, path: str | os.PathLike, *, write_through: bool = True,
                 keep_backup: bool = False, insert_only: bool = False,
                 on_problem: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".bak") if keep_backup else None
        self.write_through = write_through
        self.insert_only = insert_only
        self.dirty = False
        self._on_problem = on_problem or (lambda text: log.warning("%s", text))
        self._data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            return self._parse(self.path)
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as exc:
            problem = f"{self.path.name} is unreadable ({exc})"
        if self.backup is not None:
            try:
                data = self._parse(self.backup)
            except (ValueError, OSError):
                pass
            else:
                self._on_problem(f"{problem}; recovered from {self.backup.name}")
                self._keep_damaged()
                self.dirty = True
                return data
        self._on_problem(f"{problem}; starting it empty (the damaged file is kept as {self.path.name}.damaged)")
        self._keep_damaged()
        self.dirty = True
        return {}

    def _keep_damaged(self) -> None:
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".damaged"))
        except OSError:
            pass

    @staticmethod
    def _parse(path: Path) -> dict[str, Any]:
        with open(path, "rb") as fh:
            raw = fh.read()
        if not raw.strip():
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise ValueError("not a TinyDB document")
        return data

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self.dirty = True
        if self.write_through:
            self.persist()

    def snapshot(self) -> dict[str, Any]:
        """The data as of now, safe to serialise in another thread.

        Copying the tables costs a few microseconds per thousand documents;
        a file whose documents may change in place is copied whole.
        """
        if self.insert_only:
            return {name: dict(table) for name, table in self._data.items()}
        return json.loads(self.encode(self._data))

    @staticmethod
    def encode(data: dict[str, Any]) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode()

    def persist(self, data: dict[str, Any] | None = None) -> None:
        """Write ``data`` (a snapshot taken earlier) or the current data."""
        if data is None:
            data = self._data
            self.dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, self.encode(data), backup=self.backup)

    def close(self) -> None:
        if self.dirty:
            self.persist()


def open_db(path: Path, **kwargs: Any) -> TinyDB:
    return TinyDB(path, storage=AtomicJSONStorage, **kwargs)


class Store:
    """The three TinyDB files of a data directory and their batched writer."""

    def __init__(self, data_dir: Path, *, log_caps: dict[str, int] | None = None,
                 on_problem: Callable[[str], None] | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state = open_db(self.data_dir / "state.json", write_through=True,
                             keep_backup=True, on_problem=on_problem)
        self.queue_index = QueueIndex(self.data_dir / "queue-index", on_problem=on_problem)
        self._forget_old_queue_index()
        self.logs = open_db(self.data_dir / "logs.json", write_through=False, insert_only=True,
                            on_problem=on_problem)
        self.log_caps = {name: 2000 for name in LOG_TABLES} | (log_caps or {})
        self._pending_logs: dict[str, list[dict]] = {name: [] for name in LOG_TABLES}
        self._flush_lock = asyncio.Lock()
        self._not_before: dict[Path, float] = {}

    def _forget_old_queue_index(self) -> None:
        """The one-file index of earlier versions would only go stale: remove it."""
        try:
            os.unlink(self.data_dir / "queue.json")
        except FileNotFoundError:
            pass

    # -- logs ------------------------------------------------------------------

    def log(self, table: str, doc: dict) -> None:
        """Queue a log entry; it reaches TinyDB at the next flush."""
        self._pending_logs[table].append(doc)

    def recent(self, table: str, limit: int = 100) -> list[dict]:
        """Newest entries first, including those not yet flushed."""
        rows = self.logs.table(table).all() + self._pending_logs[table]
        return list(reversed(rows[-limit:]))

    def _apply_logs(self) -> None:
        for name, pending in self._pending_logs.items():
            if not pending:
                continue
            cap = self.log_caps[name]
            table = self.logs.table(name)
            table.insert_multiple(pending[-cap:])
            self._pending_logs[name] = []
            excess = len(table) - cap
            if excess > 0:
                ids = sorted(doc.doc_id for doc in table.all())[:excess]
                table.remove(doc_ids=ids)

    # -- flushing --------------------------------------------------------------

    def _dirty_storages(self) -> list[AtomicJSONStorage]:
        return [db.storage for db in (self.state, self.logs) if db.storage.dirty]

    async def flush(self) -> None:
        """Apply pending logs and write dirty files and the queue index, off the event loop."""
        async with self._flush_lock:
            self._apply_logs()
            loop = asyncio.get_running_loop()
            for storage in self._dirty_storages():
                now = time.monotonic()
                if now < self._not_before.get(storage.path, 0.0):
                    continue
                data = storage.snapshot()
                storage.dirty = False
                try:
                    await loop.run_in_executor(None, storage.persist, data)
                except OSError as exc:
                    storage.dirty = True
                    log.warning("could not write %s: %s", storage.path, exc)
                # The executor's json.dumps still holds the GIL, so the loop
                # waits for it: a file that took t waits 20 t before its next
                # write (<= 5 % of the time).
                self._not_before[storage.path] = now + 20 * (time.monotonic() - now)
            await self.queue_index.flush()

    def flush_sync(self) -> None:
        self._apply_logs()
        for storage in self._dirty_storages():
            storage.persist()
        self.queue_index.flush_sync()

    async def run_flusher(self, interval: float) -> None:
        """Group commit: write whatever changed every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:  # keep flushing whatever happens to one round
                log.exception("store flush failed")

    def close(self) -> None:
        self.flush_sync()
