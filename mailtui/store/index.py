"""The queue index: the spool mirrored into TinyDB files, for readers outside the process.

The spool is the truth (see ``queue.py``); this index is a view of it that
tools can read without parsing thousands of envelopes. It is split into
``SHARDS`` TinyDB files by a hash of the queue id (``queue-index/00.json`` …
``ff.json``, each ``{"queue": {doc_id: row}}``; an empty shard has no
file), and only shards with changed entries are rewritten, so the cost of a
write follows the changes, not the size of the queue:

* on the event loop: one row per changed entry, made in chunks of CHUNK
  rows with a yield to the loop between them (a flush of every entry of a
  500,000-message queue never holds the loop for more than one chunk);
* in the executor: each dirty shard is read, patched and replaced atomically.
  A shard stays small (~2,000 rows at 500,000 entries) because a thread does
  not free the loop while it is inside one C call: ``json.loads`` of one
  shard holds the GIL for a few milliseconds, of a whole-queue file for
  seconds.

Each shard's first write of a run starts from nothing, so rows left over from
an earlier run (a kill -9 between a delivery and the next index write) never
survive; a shard found damaged in the middle of a run is rebuilt from the
queue. Index files are replaced without fsync: after a crash they are
rewritten from the spool anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .safeio import atomic_write

log = logging.getLogger(__name__)

SHARDS = 256
TABLE = "queue"
CHUNK = 1024               # rows made on the loop between two yields (~4 ms)
THROTTLE = 20              # a round that took t waits THROTTLE * t before the next ...
MAX_PAUSE = 10.0           # ... but no longer than this (after a rebuild at start, changes still show soon)
SYNC_REBUILD_MAX = 100_000  # messages up to which a rebuild still due at close is done then (~5 s)
ROUND_ROWS = 20_000        # rows read from the spool in one round (~1 s of a worker); the rest wait


def shard_of(msg_id: str) -> int:
    return zlib.crc32(msg_id.encode()) % SHARDS


def shard_name(shard: int) -> str:
    return f"{shard:02x}.json"


Row = dict
# The row of a queue id: None once it is gone; a float (its due time) if the row is to be read
# from the spool, in the worker (the queue keeps no more of a waiting message: see waiting.py).
RowOf = Callable[[str], "Row | float | None"]
RowFromSpool = Callable[[str, float], "Row | None"]
AllIds = Callable[[], Iterable[str]]
Patch = dict[str, "bytes | float | None"]

# One row per line, so a shard can be patched as bytes: neither the loop nor
# the worker parses a row it does not change, and rows held as bytes are
# nothing the cyclic GC has to walk.
HEAD = b'{"' + TABLE.encode() + b'":{\n'
TAIL = b"\n}}\n"
ROW_START = b'{"id":"'    # QueueItem.summary() puts the id first


class ShardDamaged(Exception):
    pass


def encode_row(row: Row) -> bytes:
    data = json.dumps(row, separators=(",", ":")).encode()
    if not data.startswith(ROW_START):
        raise ValueError("an index row must begin with its id")
    return data


def split_shard(raw: bytes) -> dict[str, bytes]:
    """The rows of a shard file as JSON bytes by queue id, checked for shape, not parsed."""
    if not raw.strip():
        return {}
    if not (raw.startswith(HEAD) and raw.endswith(TAIL)):
        raise ShardDamaged("not a queue index shard")
    rows: dict[str, bytes] = {}
    body = raw[len(HEAD):-len(TAIL)]
    for line in body.split(b"\n") if body else ():
        row = line.removesuffix(b",").partition(b":")[2]
        end = row.find(b'"', len(ROW_START))
        if not (row.startswith(ROW_START) and row.endswith(b"}") and end > 0):
            raise ShardDamaged("a row is cut or garbled")
        rows[row[len(ROW_START):end].decode()] = row
    return rows


def read_shard(path: Path) -> dict[str, Row]:
    """The rows of one shard file by queue id, parsed ({} if it does not exist)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(raw) if raw.strip() else {}
        table = doc.get(TABLE, {}) if isinstance(doc, dict) else None
        if not isinstance(table, dict):
            raise TypeError("not a TinyDB document")
        return {row["id"]: row for row in table.values()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ShardDamaged(f"{path.name} is unreadable ({exc})") from None


def write_shard(path: Path, rows: dict[str, bytes]) -> None:
    """Replace a shard atomically; a shard without rows is no file at all."""
    if not rows:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    body = b",\n".join(b'"%d":%s' % (n, row) for n, row in enumerate(rows.values(), 1))
    atomic_write(path, HEAD + body + TAIL, sync_dir=False, sync_file=False)


def patch_shard(path: Path, patch: Patch, fresh: bool, from_spool: RowFromSpool | None = None) -> bool:
    """Apply ``patch`` (None deletes; a float is a row ``from_spool`` reads) to a shard; False if the
    old file was damaged.

    A damaged file is replaced by the patch alone; the caller then rebuilds
    the shard from the queue.
    """
    intact = True
    rows: dict[str, bytes] = {}
    if not fresh:
        try:
            rows = split_shard(path.read_bytes())
        except FileNotFoundError:
            pass
        except ShardDamaged:
            intact = False
    for msg_id, row in patch.items():
        if isinstance(row, float):
            made = from_spool(msg_id, row) if from_spool is not None else None
            row = None if made is None else encode_row(made)
        if row is None:
            rows.pop(msg_id, None)
        else:
            rows[msg_id] = row
    write_shard(path, rows)
    return intact


def read_index(folder: Path) -> list[Row]:
    """Every row of an index folder, oldest arrival first (for tools and tests)."""
    rows: list[Row] = []
    for shard in range(SHARDS):
        try:
            rows.extend(read_shard(folder / shard_name(shard)).values())
        except ShardDamaged:
            continue
    return sorted(rows, key=lambda r: (r.get("arrival", 0), r["id"]))


class QueueIndex:
    """Dirty tracking and batched, sharded writes of the queue index."""

    def __init__(self, folder: Path, *, on_problem: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._on_problem = on_problem or (lambda text: log.warning("%s", text))
        self._row_of: RowOf = lambda msg_id: None
        self._from_spool: RowFromSpool | None = None
        self._all_ids: AllIds = tuple
        self._dirty: dict[int, set[str]] = {}
        self._rebuild: set[int] = set(range(SHARDS))   # every shard is written once per run
        self._written: set[int] = set()
        self._not_before = 0.0
        self._flushing = False
        # The ids of shards being rebuilt, by shard, kept from round to round (a rebuild takes
        # many); ids added since are in ``_dirty``, removed ones make a row of None.
        self._buckets: dict[int, list[str]] = {}
        self._remove_temp_files()

    def _remove_temp_files(self) -> None:
        for entry in os.scandir(self.folder):
            if entry.name.startswith("."):  # a write cut off by a crash
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def bind(self, row_of: RowOf, all_ids: AllIds, from_spool: RowFromSpool | None = None) -> None:
        """Where rows come from: the queue (and, for waiting messages, their envelopes)."""
        self._row_of = row_of
        self._all_ids = all_ids
        self._from_spool = from_spool

    def changed(self, msg_id: str) -> None:
        """``msg_id`` was added, changed or removed; O(1), on the loop."""
        self._dirty.setdefault(shard_of(msg_id), set()).add(msg_id)

    def rebuild(self) -> None:
        """Write every shard afresh from the queue at the next flush (after a spool scan, whose
        finds are not marked one by one: that would hold a set entry per message until then)."""
        self._rebuild = set(range(SHARDS))
        self._buckets.clear()

    @property
    def dirty(self) -> bool:
        """Changes are waiting for the index, or being written now."""
        return bool(self._dirty or self._rebuild or self._flushing)

    def _take(self) -> tuple[dict[int, set[str]], set[int]]:
        """The changes to write now, and the shards to write from nothing."""
        dirty, self._dirty = self._dirty, {}
        rebuild, self._rebuild = self._rebuild, set()
        for shard in rebuild:
            dirty.setdefault(shard, set())
            self._written.discard(shard)
        return dirty, rebuild

    def _patches(self, work: dict[int, set[str]], rebuild: set[int]) -> Iterator[tuple[int, Patch] | None]:
        """The patches to write, one shard at a time, so only one shard's rows are ever held (a
        rebuild at 500,000 messages would otherwise hold them all); None is a pause for the loop,
        after every CHUNK of work."""
        buckets = self._buckets
        missing = rebuild - buckets.keys()
        if missing:
            ids = list(self._all_ids())  # a copy: the queue changes while the caller yields
            made_now: dict[int, list[str]] = {shard: [] for shard in missing}
            for start in range(0, len(ids), CHUNK):
                for msg_id in ids[start:start + CHUNK]:
                    bucket = made_now.get(shard_of(msg_id))
                    if bucket is not None:
                        bucket.append(msg_id)
                yield None
            del ids
            buckets.update(made_now)     # only whole: a pass cut off (a cancelled flush) is made again
        made = 0
        for shard, dirty in work.items():
            patch: Patch = {}
            for msg_id in dirty.union(buckets.pop(shard, ())):
                row = self._row_of(msg_id)
                patch[msg_id] = row if row is None or isinstance(row, float) else encode_row(row)
                made += 1
                if made % CHUNK == 0:
                    yield None
            yield shard, patch

    async def flush(self) -> None:
        """Write the dirty shards: rows made on the loop in chunks, files in the executor.

        A round stops after ROUND_ROWS rows read from the spool: a rebuild of 500,000 of them
        takes tens of seconds of a worker thread, which competes with the loop for the GIL, so
        it is spread over rounds at the throttle's pace (about 1/THROTTLE of the time).
        """
        if self._flushing or not self.dirty or time.monotonic() < self._not_before:
            return
        loop = asyncio.get_running_loop()
        work, rebuild = self._take()
        written: set[int] = set()
        writing, spooled = 0.0, 0
        self._flushing = True
        try:
            for made in self._patches(work, rebuild):
                if made is None:
                    await asyncio.sleep(0)
                    continue
                shard, patch = made
                path, fresh = self.folder / shard_name(shard), shard not in self._written
                started = time.monotonic()
                try:
                    intact = await loop.run_in_executor(None, patch_shard, path, patch, fresh, self._from_spool)
                except OSError as exc:
                    log.warning("could not write queue index %s: %s", shard_name(shard), exc)
                    continue
                finally:
                    writing += time.monotonic() - started
                written.add(shard)
                self._mark_written(shard, intact)
                spooled += sum(1 for row in patch.values() if type(row) is float)
                if spooled >= ROUND_ROWS:     # (before the next shard's rows are made)
                    break
            self._not_before = time.monotonic() + min(MAX_PAUSE, THROTTLE * writing)
        finally:
            self._flushing = False
            self._give_back(work, written)

    def flush_sync(self) -> None:
        """Write every change now, in the caller's thread (at close).

        Shards still to be rebuilt for a big queue are left as they are: with rows read from the
        spool that could hold a stopping server for a minute, and the next start rebuilds them.
        """
        work, rebuild = self._take()
        if rebuild and len(list(self._all_ids())) > SYNC_REBUILD_MAX:
            for shard in rebuild:
                work.pop(shard, None)
            rebuild = set()
        written: set[int] = set()
        for made in self._patches(work, rebuild):
            if made is None:
                continue
            shard, patch = made
            try:
                intact = patch_shard(self.folder / shard_name(shard), patch, shard not in self._written,
                                     self._from_spool)
            except OSError as exc:
                log.warning("could not write queue index %s: %s", shard_name(shard), exc)
                continue
            written.add(shard)
            self._mark_written(shard, intact)
        self._give_back(work, written)

    def _give_back(self, work: dict[int, set[str]], written: set[int]) -> None:
        """What was taken but not written goes back: its ids, or the whole shard if it was to start afresh."""
        for shard, ids in work.items():
            if shard in written:
                continue
            if shard in self._written:
                self._dirty.setdefault(shard, set()).update(ids)
            else:
                self._rebuild.add(shard)

    def _mark_written(self, shard: int, intact: bool) -> None:
        self._written.add(shard)
        if not intact:
            self._on_problem(f"queue index {shard_name(shard)} was unreadable; rebuilding it from the queue")
            self._rebuild.add(shard)
