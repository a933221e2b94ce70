"""The per-folder UID list: which UID each message file has, across restarts.

One file per Maildir folder, ``mailtui-uidlist``, in the spirit of Dovecot's
``dovecot-uidlist``::

    mailtui-uidlist 1 V1764512345 N42
    1 S3120 T1764512000.5 :1764512000.M500000P7Q1.host,S=3120
    2 :1764512001.M1P7Q2.host,S=880

The header holds UIDVALIDITY (``V``) and the next UID to give (``N``). Each
line is a UID, optional fields (``S`` size, ``T`` internal date as Unix
time; absent when the file name already says them) and, after ``:``, the
message's base name (the part before ``:2,``), to the end of the line.

Between rewrites the file only grows: new UIDs are *appended* and fsync'd
before any client hears of them, so a 50,000-message folder costs one short
write per batch of new mail, not a rewrite of 3 MB. A kill -9 can leave a
torn last line; :func:`parse` ignores it and reports the file unclean, and
the next write replaces the whole file atomically (``safeio.atomic_write``).
Lines of expunged messages stay until that rewrite; the next UID is never
below ``N`` nor below the highest UID listed, so no UID is ever given twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .safeio import atomic_write

FILE_NAME = "mailtui-uidlist"
_HEADER = re.compile(rb"mailtui-uidlist 1 V([0-9]{1,10}) N([0-9]{1,10})")
_LINE = re.compile(rb"([0-9]{1,10})((?: [ST][0-9.]{1,20})*) :(.+)")


@dataclass(slots=True)
class Entry:
    uid: int
    name: str
    size: int | None = None       # None: take it from the file name or a stat
    when: float | None = None     # internal date, Unix time


@dataclass(slots=True)
class Loaded:
    uidvalidity: int
    uid_next: int
    entries: list[Entry]
    clean: bool                   # False: torn or unreadable lines; rewrite before appending


def parse(data: bytes) -> Loaded | None:
    """Read a UID list; None if its header is unusable (the folder gets a new UIDVALIDITY)."""
    lines = data.split(b"\n")
    header = _HEADER.fullmatch(lines[0])
    if header is None or len(lines) == 1:      # the header is only ever written whole (atomically)
        return None
    validity, uid_next = int(header[1]), int(header[2])
    clean = data.endswith(b"\n")
    body = lines[1:-1]                         # the last piece is b"" or a torn line: dropped
    entries: list[Entry] = []
    last = 0
    for raw in body:
        found = _LINE.fullmatch(raw)
        if found is None:
            clean = False
            continue
        uid = int(found[1])
        if uid <= last:                            # UIDs only grow; anything else is damage
            clean = False
            continue
        last = uid
        try:
            name = found[3].decode("utf-8")
        except UnicodeDecodeError:
            name = found[3].decode("utf-8", "surrogateescape")
        entry = Entry(uid, name)
        for item in found[2].split():
            try:
                if item[:1] == b"S":
                    entry.size = int(item[1:])
                else:
                    entry.when = float(item[1:])
            except ValueError:
                clean = False
        entries.append(entry)
    if validity == 0:
        return None
    return Loaded(validity, max(uid_next, last + 1), entries, clean)


def render_line(entry: Entry) -> bytes:
    fields = ""
    if entry.size is not None:
        fields += f" S{entry.size}"
    if entry.when is not None:
        fields += f" T{entry.when:.6f}".rstrip("0").rstrip(".")
    return f"{entry.uid}{fields} :{entry.name}\n".encode("utf-8", "surrogateescape")


def render(uidvalidity: int, uid_next: int, entries: list[Entry]) -> bytes:
    head = f"mailtui-uidlist 1 V{uidvalidity} N{uid_next}\n".encode("ascii")
    return head + b"".join(render_line(entry) for entry in entries)


class UidListFile:
    """Reading, appending to and rewriting one folder's UID list (blocking: run in an executor)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / FILE_NAME
        self.needs_rewrite = True      # until a clean file is known to be there

    def load(self) -> Loaded | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        loaded = parse(data)
        self.needs_rewrite = loaded is None or not loaded.clean
        return loaded

    def append(self, entries: list[Entry]) -> None:
        """Add lines durably (write + fsync) before their UIDs are shown to anyone."""
        if not entries:
            return
        data = b"".join(render_line(entry) for entry in entries)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, uidvalidity: int, uid_next: int, entries: list[Entry]) -> None:
        """Replace the whole file atomically (first use, after damage, to drop expunged lines)."""
        atomic_write(self.path, render(uidvalidity, uid_next, entries))
        self.needs_rewrite = False
