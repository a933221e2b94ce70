"""The blocking file work of :class:`folder.Folder`, run in an executor.

Messages are immutable once written, so a copy can be a hard link and a
read never sees half a file; flag changes and moves are renames. Nothing
here fsyncs a directory: the folder does that once per batch, through its
:class:`safeio.DirSyncer`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .folderscan import Msg
from .maildir import name_facts, unique_name
from .safeio import write_file

HEADER_READ = 64 * 1024      # octets read for a header-only question (ENVELOPE, HEADER.FIELDS)


INLINE_LIMIT = 256 * 1024    # octets a batch may read on the event loop from the page cache
_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def read_cached(path: str, size: int) -> bytes | None:
    """The file's ``size`` octets if they are all in the page cache, else None; never waits for a disk.

    ``preadv(RWF_NOWAIT)`` (Linux) refuses with EAGAIN instead of reading
    from the device, so this is safe to call on the event loop: a cached
    4 KiB message costs ~2 µs here against ~100 µs for a trip through the
    executor, which is what every pipelined ``UID FETCH n BODY.PEEK[]``
    (mbsync) would otherwise pay.
    """
    if _NOWAIT is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buffer = bytearray(size + 1)                  # one more: the file must end where we think
        got = os.preadv(fd, [buffer], 0, _NOWAIT)
    except OSError:                                   # EAGAIN: not cached; EOPNOTSUPP: no NOWAIT here
        return None
    finally:
        os.close(fd)
    return bytes(buffer[:size]) if got == size else None


def read_file(path: str, header_only: bool) -> bytes:
    with open(path, "rb") as fh:
        if not header_only:
            return fh.read()
        head = fh.read(HEADER_READ)
        if len(head) < HEADER_READ or b"\r\n\r\n" in head or b"\n\n" in head:
            return head
        return head + fh.read()             # a header longer than HEADER_READ: read it all


def read_files(paths: list[tuple[int, str]], header_only: bool) -> dict[int, bytes | None]:
    out: dict[int, bytes | None] = {}
    for uid, path in paths:
        try:
            out[uid] = read_file(path, header_only)
        except FileNotFoundError:
            out[uid] = None
    return out


def rename_all(renames: list[tuple[int, str, str, str]]) -> list[tuple[int, str]]:
    done = []
    for uid, old, new, info in renames:
        try:
            os.rename(old, new)
        except FileNotFoundError:
            continue
        done.append((uid, info))
    return done


def unlink_all(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def write_all(folder: Path, plans: list[tuple[bytes, str, float | None]]) -> list[Msg]:
    """Write new files (tmp/, fsync, rename into cur/); the caller fsyncs ``cur/``."""
    placed: list[Msg] = []
    for data, info, when in plans:
        base = _write_new(folder, data, info, when)
        placed.append(Msg(0, base, info, len(data), when if when is not None else name_facts(base)[0]))
    return placed


def _write_new(folder: Path, data: bytes, info: str, when: float | None) -> str:
    base = unique_name(len(data))
    tmp = f"{folder}/tmp/{base}"
    write_file(tmp, data)
    if when is not None:
        os.utime(tmp, (when, when))
    os.rename(tmp, f"{folder}/cur/{base}:2,{info}")
    return base


def place_all(dest: Path, plans: list[tuple[int, str, str, float, int]], move: bool) -> list[tuple[int, Msg]]:
    """Hard-link (COPY) or rename (MOVE) files into ``dest/cur``; a copy falls back to writing.

    A message file never changes after it is written, so a hard link is a
    complete, atomic copy; each gets a new base name, unique in ``dest``.
    """
    placed = []
    for uid, path, info, when, size in plans:
        base = unique_name(size)
        target = f"{dest}/cur/{base}:2,{info}"
        try:
            if move:
                os.rename(path, target)
            else:
                _link_or_copy(path, target, dest, base)
        except FileNotFoundError:
            continue
        placed.append((uid, Msg(0, base, info, size, when)))
    return placed


def _link_or_copy(path: str, target: str, dest: Path, base: str) -> None:
    try:
        os.link(path, target)
    except FileNotFoundError:
        raise
    except OSError:                     # another file system, or links not allowed
        with open(path, "rb") as fh:
            data = fh.read()
        tmp = f"{dest}/tmp/{base}"
        write_file(tmp, data)
        os.rename(tmp, target)
