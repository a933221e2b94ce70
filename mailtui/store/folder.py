"""One Maildir folder with durable UIDs, shared by every session that opens it.

The in-memory index is compact parallel arrays in UID order (about 130 bytes
a message: a 50,000-message INBOX is ~7 MB), shared by all sessions and
revalidated cheaply on each *look* (SELECT, NOOP, IDLE wake, POP3 login): a
listing of the small ``new/`` and one ``stat`` of ``cur/``, whose mtime only
moves when something other than this folder changed it.

Every change goes through the folder under its asyncio lock, with the disk
work in the executor; the index is only mutated on the event loop, so
sessions read it without locking. Each change bumps :attr:`version` and is
logged (``(version, kind, uid, origin)``), so a session can tell what
happened since it last looked; watchers (sessions in IDLE) are called after
every change.

Durability: new messages are written tmp → fsync → rename → directory fsync
and their UIDs appended (fsync'd) to the UID list before the caller hears of
them; expunges are unlinks followed by a directory fsync; flag changes are
renames followed by a directory fsync.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from . import folderscan, mailfiles
from .folderscan import Delta, Msg
from .mailflags import Keywords, flags_of, info_of
from .safeio import DirSyncer
from .uidlist import UidListFile

log = logging.getLogger(__name__)
POKE_DELAY = 0.1             # seconds a delivery poke waits for more mail before looking
LOG_SIZE = 20_000            # changes remembered for sessions that have not looked yet
T = TypeVar("T")


class FolderGone(Exception):
    """The folder's directory does not exist (deleted, or never created)."""


class Change(NamedTuple):
    version: int
    kind: str                # "flags" or "expunge"
    uid: int
    origin: object           # who made it (a session id), None for changes found on disk


class Message(NamedTuple):
    """One message as POP3 (and tests) see it: ``Folder.snapshot()``."""

    uid: int
    name: str                # Maildir base name, unique in the folder
    size: int
    flags: tuple[str, ...]
    path: str


class Folder:
    def __init__(self, path: Path, name: str, *, syncer: DirSyncer, new_validity: Callable[[], int]):
        self.path = Path(path)
        self.name = name
        self.lock = asyncio.Lock()
        self.loaded = False
        self.gone = False             # deleted or renamed away: the next look raises FolderGone
        self.users = 0                # sessions that have it open (kept by MailStore)
        self.uidvalidity = 0
        self.uid_next = 1
        self.recent_mark = 0          # UIDs up to here have been shown as \Recent to some session
        self.version = 0
        self.uids = array("I")
        self.names: list[str] = []
        self.infos: list[str] = []
        self.sizes = array("q")
        self.dates = array("d")
        self.keywords = Keywords(self.path)
        self.changes: deque[Change] = deque(maxlen=LOG_SIZE)
        self._log_floor = 0           # sessions that last looked before this version resynchronise fully
        self._syncer = syncer
        self._new_validity = new_validity
        self._uidlist = UidListFile(self.path)
        self._cur_mtime = 0
        self._garbage = 0
        self._flag_cache: dict[str, tuple[str, ...]] = {}
        self._watchers: dict[object, Callable[[], None]] = {}
        self._poke_task: asyncio.Task | None = None
        self._poke_again = False

    # -- reading the index (no lock, no I/O) ------------------------------------
    def __len__(self) -> int:
        return len(self.uids)

    def index_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def flags_at(self, i: int) -> tuple[str, ...]:
        return self.flags_of_info(self.infos[i])

    def flags_of_info(self, info: str) -> tuple[str, ...]:
        """IMAP flags of a Maildir info string (cached: a folder has few distinct ones)."""
        flags = self._flag_cache.get(info)
        if flags is None:
            flags = self._flag_cache[info] = flags_of(info, self.keywords)
        return flags

    def file_at(self, i: int) -> str:
        return f"{self.path}/cur/{self.names[i]}:2,{self.infos[i]}"

    def changes_since(self, version: int) -> list[Change] | None:
        """Changes after ``version``, or None if the log no longer reaches back that far.

        New messages are not in the log (they are the UIDs above the last one
        a session knows), so the log is empty while mail only arrives.
        """
        if version >= self.version:
            return []
        if version < self._log_floor:
            return None
        found = []
        for change in reversed(self.changes):
            if change.version <= version:
                break
            found.append(change)
        found.reverse()
        return found

    def snapshot(self) -> list[Message]:
        """Every message in UID order (POP3's view of a maildrop)."""
        return [Message(self.uids[i], self.names[i], self.sizes[i], self.flags_at(i), self.file_at(i))
                for i in range(len(self.uids))]

    def unseen(self) -> int:
        return sum(1 for info in self.infos if "S" not in info)

    def first_unseen(self) -> int | None:
        """1-based position of the first message without \\Seen."""
        return next((i + 1 for i, info in enumerate(self.infos) if "S" not in info), None)

    async def read(self, uid: int, header_only: bool = False) -> bytes:
        """A message's bytes (or its first 64 KiB for a header read), off the loop."""
        return await self._on_file(uid, mailfiles.read_file, header_only)

    async def open_file(self, uid: int) -> BinaryIO:
        """A message's file, open for reading (POP3's RETR): readable whatever renames or unlinks follow."""
        return await self._on_file(uid, open, "rb")

    async def _on_file(self, uid: int, action: Callable[..., T], *args) -> T:
        """``action(path, *args)`` in the executor; FileNotFoundError once the message is gone.

        A concurrent flag change may rename the file between our look-up and
        the open: then we look it up again.
        """
        loop = asyncio.get_running_loop()
        for _ in range(3):
            i = self.index_of(uid)
            if i is None:
                break
            try:
                return await loop.run_in_executor(None, action, self.file_at(i), *args)
            except FileNotFoundError:
                await asyncio.sleep(0)
        raise FileNotFoundError(f"message {uid} is gone")

    async def read_many(self, uids: Sequence[int], header_only: bool = False) -> dict[int, bytes | None]:
        """Several messages: from the page cache directly, the rest in one executor call.

        None for messages that are gone.
        """
        loop = asyncio.get_running_loop()
        found: dict[int, bytes | None] = {}
        paths = []
        budget = mailfiles.INLINE_LIMIT
        for uid in uids:
            i = self.index_of(uid)
            if i is None:
                continue
            path, size = self.file_at(i), self.sizes[i]
            data = mailfiles.read_cached(path, size) if not header_only and size <= budget else None
            if data is None:
                paths.append((uid, path))
            else:
                found[uid] = data
                budget -= size
        if paths:
            found.update(await loop.run_in_executor(None, mailfiles.read_files, paths, header_only))
        for uid, data in list(found.items()):
            if data is None and self.index_of(uid) is not None:     # renamed meanwhile: once more
                try:
                    found[uid] = await self.read(uid, header_only)
                except FileNotFoundError:
                    pass
        return found

    # -- watchers -----------------------------------------------------------------
    def watch(self, key: object, callback: Callable[[], None]) -> None:
        self._watchers[key] = callback

    def unwatch(self, key: object) -> None:
        self._watchers.pop(key, None)

    @property
    def watched(self) -> bool:
        return bool(self._watchers)

    def _notify(self) -> None:
        for callback in list(self._watchers.values()):
            try:
                callback()
            except Exception:  # a watcher must not break the folder
                log.exception("folder watcher failed")

    def poke(self) -> None:
        """New mail may be in ``new/`` (the intake said so): look soon, once, if anyone watches."""
        if not self._watchers:
            return
        if self._poke_task is not None and not self._poke_task.done():
            self._poke_again = True
            return
        self._poke_task = asyncio.ensure_future(self._poked())

    def stop(self) -> None:
        """Cancel a pending delivery look (shutdown)."""
        if self._poke_task is not None and not self._poke_task.done():
            self._poke_task.cancel()

    async def _poked(self) -> None:
        while True:
            await asyncio.sleep(POKE_DELAY)     # a burst of deliveries becomes one look
            self._poke_again = False
            try:
                await self.refresh()
            except (OSError, FolderGone):
                log.exception("cannot look at folder %s", self.path)
            if not self._poke_again:
                return

    # -- looking at the disk ---------------------------------------------------------
    async def refresh(self) -> None:
        """Load the folder, or take in what changed on disk since the last look."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            if self.gone:
                raise FolderGone(self.name)
            if not self.loaded:
                delta = await loop.run_in_executor(None, self._load)
                self._apply(delta, full=True)
                self.recent_mark = delta.first_new_uid - 1
                self.loaded = True
                return
            delta = await loop.run_in_executor(None, self._look)
            self._apply(delta)

    def _load(self) -> Delta:
        if not (self.path / "cur").is_dir():
            raise FolderGone(self.name)
        self.keywords.load()
        return folderscan.full_load(self.path, self._uidlist, self._new_validity)

    def _look(self) -> Delta:
        if not (self.path / "cur").is_dir():
            raise FolderGone(self.name)
        return folderscan.look(
            self.path, self._uidlist, uidvalidity=self.uidvalidity, uid_next=self.uid_next,
            known_mtime=self._cur_mtime, garbage=self._garbage,
            index=lambda: {n: (u, i) for n, u, i in zip(self.names, self.uids, self.infos)},
            everything=self._messages)

    def _messages(self) -> list[Msg]:
        return [Msg(self.uids[i], self.names[i], self.infos[i], self.sizes[i], self.dates[i])
                for i in range(len(self.uids))]

    def _apply(self, delta: Delta, full: bool = False, origin: object = None) -> None:
        """Apply a delta to the index on the loop; log it and wake the watchers."""
        self.uidvalidity, self.uid_next = delta.uidvalidity, delta.uid_next
        self._cur_mtime, self._garbage = delta.cur_mtime, delta.garbage
        changed = False
        if full:
            self._reset(delta.added)
            return
        if delta.flags:
            for uid, info in delta.flags:
                i = self.index_of(uid)
                if i is not None:
                    self.infos[i] = info
                    self._log("flags", uid, origin)
            changed = True
        if delta.expunged:
            self._remove(delta.expunged, origin)
            changed = True
        if delta.added:
            for m in delta.added:
                self.uids.append(m.uid)
                self.names.append(m.base)
                self.infos.append(m.info)
                self.sizes.append(m.size)
                self.dates.append(m.when)
            self.version += 1
            changed = True
        if changed:
            self._notify()

    def _reset(self, messages: list[Msg]) -> None:
        self._log_floor = self.version + 1
        self.uids = array("I", (m.uid for m in messages))
        self.names = [m.base for m in messages]
        self.infos = [m.info for m in messages]
        self.sizes = array("q", (m.size for m in messages))
        self.dates = array("d", (m.when for m in messages))
        self.version += 1

    def _log(self, kind: str, uid: int, origin: object) -> None:
        self.version += 1
        if len(self.changes) == self.changes.maxlen:
            self._log_floor = self.changes[0].version      # about to fall out of the log
        self.changes.append(Change(self.version, kind, uid, origin))

    def _remove(self, uids: Iterable[int], origin: object) -> None:
        gone = set(uids)
        keep = [i for i, uid in enumerate(self.uids) if uid not in gone]
        for uid in sorted(gone):
            self._log("expunge", uid, origin)
        self.uids = array("I", (self.uids[i] for i in keep))
        self.names = [self.names[i] for i in keep]
        self.infos = [self.infos[i] for i in keep]
        self.sizes = array("q", (self.sizes[i] for i in keep))
        self.dates = array("d", (self.dates[i] for i in keep))

    # -- changing the folder -------------------------------------------------------------
    async def store(self, uids: Sequence[int], mode: str, flags: Sequence[str],
                    origin: object = None) -> list[int]:
        """Set (``replace``), add or remove flags; returns the UIDs whose flags changed."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            if mode != "remove":
                await self._need_keywords(flags, loop)
            renames: list[tuple[int, str, str, str]] = []
            for uid in uids:
                i = self.index_of(uid)
                if i is None:
                    continue
                old = self.infos[i]
                new = _new_info(old, mode, flags, self.flags_at(i), self.keywords)
                if new != old:
                    renames.append((uid, self.file_at(i), f"{self.path}/cur/{self.names[i]}:2,{new}", new))
            if not renames:
                return []
            done = await loop.run_in_executor(None, mailfiles.rename_all, renames)
            await self._syncer.sync(self.path / "cur")
            self._cur_mtime = await loop.run_in_executor(None, folderscan.cur_mtime, self.path)
            for uid, info in done:
                i = self.index_of(uid)
                if i is not None:
                    self.infos[i] = info
                    self._log("flags", uid, origin)
            if done:
                self._notify()
            return [uid for uid, _ in done]

    async def expunge(self, uids: Sequence[int], origin: object = None) -> list[int]:
        """Delete messages for good; returns the UIDs removed."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            targets = [(uid, self.file_at(i)) for uid in uids if (i := self.index_of(uid)) is not None]
            if not targets:
                return []
            await loop.run_in_executor(None, mailfiles.unlink_all, [path for _, path in targets])
            await self._syncer.sync(self.path / "cur")
            self._cur_mtime = await loop.run_in_executor(None, folderscan.cur_mtime, self.path)
            removed = [uid for uid, _ in targets]
            self._remove(removed, origin)
            self._garbage += len(removed)
            self._notify()
            return removed

    async def append(self, data: bytes, flags: Sequence[str] = (), when: float | None = None) -> int:
        """Store a new message durably; returns its UID (APPEND)."""
        return (await self.add([(data, tuple(flags), when)]))[0]

    async def add(self, items: Sequence[tuple[bytes, tuple[str, ...], float | None]]) -> list[int]:
        """Store messages durably: each ``(data, flags, internal date)``."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            if not self.loaded:
                raise FolderGone(self.name)
            await self._need_keywords([f for _, flags, _ in items for f in flags], loop)
            plans = [(data, info_of(flags, self.keywords), when) for data, flags, when in items]
            added = await loop.run_in_executor(None, mailfiles.write_all, self.path, plans)
            return await self._take(added, loop)

    async def _need_keywords(self, flags: Iterable[str], loop) -> None:
        keywords = [f for f in flags if not f.startswith("\\")]
        if keywords and await loop.run_in_executor(None, self.keywords.need, keywords):
            self._flag_cache.clear()

    async def _take(self, added: list[Msg], loop) -> list[int]:
        """Give UIDs to files just placed in ``cur/``, durably, and index them (lock held)."""
        await self._syncer.sync(self.path / "cur")
        for m in added:
            m.uid = self.uid_next
            self.uid_next += 1
        delta = Delta(self.uidvalidity, self.uid_next, 0, added=added, garbage=self._garbage)
        await loop.run_in_executor(None, folderscan.persist, self._uidlist, delta, added,
                                   lambda: self._messages() + added)
        delta.cur_mtime = await loop.run_in_executor(None, folderscan.cur_mtime, self.path)
        self._apply(delta)
        return [m.uid for m in added]

    async def copy_to(self, dest: Folder, uids: Sequence[int], *, move: bool = False,
                      origin: object = None) -> list[tuple[int, int]]:
        """COPY (hard links) or MOVE (renames) into ``dest``; returns (old UID, new UID) pairs."""
        loop = asyncio.get_running_loop()
        if dest is self:
            raise ValueError("source and destination are the same folder")
        first, second = sorted((self, dest), key=lambda f: str(f.path))
        async with first.lock, second.lock:
            if not dest.loaded:
                raise FolderGone(dest.name)
            plans = [(uid, self.file_at(i), self.infos[i], self.dates[i], self.sizes[i])
                     for uid in uids if (i := self.index_of(uid)) is not None]
            placed = await loop.run_in_executor(None, mailfiles.place_all, dest.path, plans, move)
            new_uids = await dest._take([m for _, m in placed], loop)
            if move and placed:
                await self._syncer.sync(self.path / "cur")
                self._cur_mtime = await loop.run_in_executor(None, folderscan.cur_mtime, self.path)
                self._remove([uid for uid, _ in placed], origin)
                self._garbage += len(placed)
                self._notify()
            return list(zip((uid for uid, _ in placed), new_uids))


def _new_info(old: str, mode: str, flags: Sequence[str], current: tuple[str, ...], keywords: Keywords) -> str:
    lowered = {f.lower() for f in flags}
    if mode == "replace":
        wanted = list(flags)
    elif mode == "add":
        wanted = list(current) + list(flags)
    else:
        wanted = [f for f in current if f.lower() not in lowered]
    return info_of(wanted, keywords, keep=old)
