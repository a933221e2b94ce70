"""Reading the spool at start: every file classified, in batches a worker thread reads.

A spool of 500,000 messages is a million files; opening and parsing them
takes tens of seconds, far too long to hold the event loop or to keep the
listeners closed. :class:`SpoolScan` walks the directory in batches, each
read by a worker thread (``next_batch``), and only classifies: it never
changes a file. The queue decides on the loop what to do with each finding,
because only the loop knows which ids the running server has touched since
the scan began (those are its own, whatever the scan read).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

BATCH = 512


@dataclass(frozen=True)
class Found:
    """One file of the spool and what it is.

    kind: ``entry`` (an envelope with its body; ``data`` is its JSON),
    ``unreadable`` (an envelope that does not parse; ``error`` says why),
    ``no-body`` (an envelope whose body is gone), ``orphan-body`` (a body
    without an envelope: written before it, no 250 was given), ``temp`` (a
    temporary file of a write; ``data`` is its mtime).
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
    if ext == ".json":
        try:
            raw = (folder / name).read_bytes()
        except FileNotFoundError:   # finished since the directory was listed
            return None
        try:
            data = parse(json.loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return Found("unreadable", stem, name, error=str(exc))
        if not os.path.exists(folder / f"{stem}.eml"):
            return Found("no-body", stem, name)
        return Found("entry", stem, name, data)
    if ext == ".eml" and entry.is_file() and not os.path.exists(folder / f"{stem}.json"):
        return Found("orphan-body", stem, name)
    return None


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
