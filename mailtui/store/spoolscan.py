"""Reading the spool at start: every file classified, in batches a worker thread reads.

A spool of 500,000 messages is a million files; opening and parsing them
takes tens of seconds, far too long to hold the event loop or to keep the
listeners closed. :class:`SpoolScan` walks the directory in batches, each
read by a worker thread (``next_batch``), and only classifies: it never
changes a file. The queue decides on the loop what to do with each finding,
because only the loop knows which ids the running server has touched since
the scan began (those are its own, whatever the scan read). The files of a
message, in this version's format and in the older one, are described in
``spoolfile.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .spoolfile import MSG, OLD_BODY, STATE, DamagedHeader, read_head

BATCH = 512


@dataclass(frozen=True)
class Found:
    """One file of the spool and what it is.

    kind: ``entry`` (a message with its body; ``data`` is its parsed state),
    ``unreadable`` (a header or state that does not parse; ``error`` says
    why), ``partial`` (a ``.msg`` cut short by a crash before its 250),
    ``no-body`` (a state file whose message is gone: a finish cut short, or
    a lost body), ``orphan-body`` (an old-format body without an envelope:
    written before it, no 250 was given), ``temp`` (a temporary file of a
    write; ``data`` is its mtime).
    """

    kind: str
    msg_id: str
    name: str
    data: object = None
    error: str = ""


def id_of_temp(name: str) -> str:
    """``.<id>.json.<hex>.tmp`` -> ``<id>``."""
    return name[1:].split(".", 1)[0]


def classify(folder: Path, entry: os.DirEntry, parse: Callable[[dict], object]) -> Found | None:
    name = entry.name
    if name.startswith("."):
        try:
            return Found("temp", id_of_temp(name), name, entry.stat().st_mtime)
        except FileNotFoundError:   # the write it belonged to has finished
            return None
    stem, ext = os.path.splitext(name)
    if ext == MSG:
        return _message(folder, stem, name, parse)
    if ext == STATE:
        if os.path.exists(folder / f"{stem}{MSG}"):
            return None             # the state of a one-file message: read with it
        return _old_entry(folder, stem, name, parse)
    if ext == OLD_BODY and entry.is_file() and not os.path.exists(folder / f"{stem}{STATE}"):
        return Found("orphan-body", stem, name)
    return None


def _message(folder: Path, stem: str, name: str, parse: Callable[[dict], object]) -> Found | None:
    """A ``.msg`` file, with its ``.json`` state when it has one (see ``spoolfile.py``)."""
    try:
        head = read_head(folder / name)
    except FileNotFoundError:       # finished since the directory was listed
        return None
    except DamagedHeader as exc:
        return Found("unreadable", stem, name, error=str(exc))
    try:
        raw: bytes | None = (folder / f"{stem}{STATE}").read_bytes()
    except FileNotFoundError:       # not attempted yet: the header is its state
        raw = None
    if head is None:                # cut short before its 250, unless a state says it was given
        return Found("partial", stem, name) if raw is None else Found(
            "unreadable", stem, name, error="the message is cut short")
    try:
        return Found("entry", stem, name, parse(head if raw is None else json.loads(raw)))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Found("unreadable", stem, f"{stem}{STATE}" if raw is not None else name, error=str(exc))


def _old_entry(folder: Path, stem: str, name: str, parse: Callable[[dict], object]) -> Found | None:
    """``<id>.json`` and ``<id>.eml``, as versions before the one-file format wrote them."""
    try:
        raw = (folder / name).read_bytes()
    except FileNotFoundError:       # finished since the directory was listed
        return None
    try:
        data = parse(json.loads(raw))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Found("unreadable", stem, name, error=str(exc))
    if not os.path.exists(folder / f"{stem}{OLD_BODY}"):
        return Found("no-body", stem, name)
    return Found("entry", stem, name, data)


class SpoolScan:
    """One pass over a spool directory, batch by batch (each batch in any one thread)."""

    def __init__(self, folder: Path, parse: Callable[[dict], object], batch: int = BATCH):
        self.folder = Path(folder)
        self.batch = batch
        self.done = False
        self.files = 0
        self._parse = parse
        self._lock = threading.Lock()   # closing while a thread reads would free the DIR under it
        self._it: Iterator[os.DirEntry] | None = os.scandir(self.folder)

    def next_batch(self) -> list[Found]:
        """Read and classify up to ``batch`` directory entries (blocking: run it in a thread)."""
        with self._lock:
            if self._it is None:
                return []
            entries = list(itertools.islice(self._it, self.batch))
            if len(entries) < self.batch:
                self._close()
        self.files += len(entries)
        found = (classify(self.folder, entry, self._parse) for entry in entries)
        return [f for f in found if f is not None]

    def _close(self) -> None:
        if self._it is not None:
            self._it.close()  # type: ignore[attr-defined]
            self._it = None
        self.done = True

    def close(self) -> None:
        with self._lock:
            self._close()
