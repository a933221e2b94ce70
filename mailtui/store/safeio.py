"""Durable file writes: temp file, fsync, rename, directory fsync.

A reader (or a restart after kill -9) sees either the old file or the new
one, never half of either. Directory fsyncs of many concurrent writers are
coalesced so that a burst of messages costs one directory sync, not one each.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: str | os.PathLike, data: bytes, *, mode: int = 0o600, sync: bool = True) -> None:
    """Create ``path`` with ``data`` and fsync it (no rename, no directory sync)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, *, mode: int = 0o600, sync_dir: bool = True,
                 sync_file: bool = True, backup: str | os.PathLike | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    With ``backup``, the previous version is kept there (by hard link, so the
    main file is never missing). Without ``sync_file`` and ``sync_dir`` a
    reader still sees the old file or the new one, but a power cut may leave
    either, or an empty file: for files that are rebuilt after a crash anyway.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_file(tmp, data, mode=mode, sync=sync_file)
    try:
        if backup is not None and path.exists():
            link = path.with_name(f".{path.name}.{secrets.token_hex(4)}.bak")
            os.link(path, link)
            os.replace(link, backup)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)


def create_new(path: str | os.PathLike, data: bytes, *, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` atomically and durably unless it exists.

    Returns False (and leaves the existing file alone) when another writer
    got there first: the file appears whole (a hard link of a synced temp
    file) and exactly once, even between processes.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_file(tmp, data, mode=mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def _retrieved(task: asyncio.Task) -> None:
    """Mark a sync's failure seen: it reaches whoever awaits the sync, and with no one
    waiting, the next sync of that directory fails the same way for someone who does."""
    if not task.cancelled():
        task.exception()


class DirSyncer:
    """Coalesce directory fsyncs issued by many coroutines.

    ``await sync(dir)`` returns once a directory fsync that *started after the
    call* has completed, so every rename made before the call is durable.
    Callers that arrive while a sync runs share the one queued behind it.
    Syncs run as tasks of their own, so a cancelled caller strands no one.
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task] = {}
        self._pending: dict[str, asyncio.Task] = {}

    async def sync(self, directory: str | os.PathLike) -> None:
        await asyncio.shield(self.soon(directory))

    def soon(self, directory: str | os.PathLike) -> asyncio.Task:
        """Ask for the same sync without waiting for it: for changes nobody waits on."""
        key = os.fspath(directory)
        task = self._pending.get(key)
        if task is None:
            running = self._running.get(key)
            task = asyncio.ensure_future(self._sync_after(key, running))
            task.add_done_callback(_retrieved)
            if running is None:
                self._running[key] = task
            else:
                self._pending[key] = task
        return task

    async def _sync_after(self, key: str, previous: asyncio.Task | None) -> None:
        if previous is not None:
            try:
                await previous
            except Exception:
                pass
            me = self._pending.pop(key)
            self._running[key] = me
        try:
            await asyncio.get_running_loop().run_in_executor(None, fsync_dir, key)
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]
