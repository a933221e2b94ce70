"""One queued message on disk: the files, their format, and the order they change in.

A message arrives as **one** file, ``<id>.msg``: a header line, then the
body exactly as it will be sent::

    mailtui-spool 1 {"id": ..., "recipients": [...], ...}\\n
    <body bytes>

The header is the envelope as it was at arrival (``QueueItem.to_json``, one
line: JSON escapes every newline). The file is created under its final name
(O_EXCL), written in one go and fsync'd; the queue then fsyncs the directory
(coalesced with every other arrival by ``DirSyncer``) before the 250. No temp
file and rename: a file cut short by a crash is recognised by its length
(header + the envelope's ``size`` bytes of body) and, since no 250 was given
for it, removed at the next start.

``<id>.json`` appears only once there is state to keep - after an attempt
that did not finish the message - and is replaced atomically after that. When
it exists it is the truth; the header's envelope is only the state at arrival.

Spools of earlier versions hold ``<id>.eml`` (the body) and ``<id>.json``
(envelope and state): still read, delivered and removed the same way (their
state is saved to ``<id>.json`` too, so an old entry never becomes half new).

Finishing a message removes ``<id>.msg`` before ``<id>.json`` (and an old
entry's ``.json`` before its ``.eml``): a crash between the two leaves a
state file without a body, which the scan drops, never a header whose
arrival state would send to recipients already done. The queue does not wait
for the directory fsync that makes the unlinks durable (see ``queue.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .safeio import write_file

MAGIC = b"mailtui-spool 1 "
MSG, STATE, OLD_BODY = ".msg", ".json", ".eml"


class DamagedHeader(ValueError):
    """The first line of a ``.msg`` file is not a header this version can read."""


def encode(envelope: dict, body: bytes) -> bytes:
    # One copy of the body (microseconds for 100 KiB) buys one write and one fsync.
    return MAGIC + json.dumps(envelope).encode() + b"\n" + body


def split_header(line: bytes) -> dict:
    """The envelope of a header line (with or without its newline)."""
    if not line.startswith(MAGIC):
        raise DamagedHeader("no mailtui-spool header")
    try:
        data = json.loads(line[len(MAGIC):])
    except ValueError as exc:
        raise DamagedHeader(str(exc)) from exc
    if not isinstance(data, dict):
        raise DamagedHeader("the header is not an object")
    return data


def read_head(path: Path) -> dict | None:
    """The envelope of a ``.msg`` file; None if the file is cut short (header or body)."""
    with open(path, "rb") as f:
        line = f.readline()
        if not line.endswith(b"\n"):
            return None
        data = split_header(line)
        size = os.fstat(f.fileno()).st_size
    expected = data.get("size")
    if not isinstance(expected, int):
        raise DamagedHeader("the header has no size")
    if size > len(line) + expected:
        raise DamagedHeader(f"{size - len(line)} bytes of body, the header says {expected}")
    return data if size == len(line) + expected else None


def body_of(raw: bytes) -> bytes:
    """The body of a whole ``.msg`` file's bytes."""
    end = raw.find(b"\n")
    if end < 0 or not raw.startswith(MAGIC):
        raise DamagedHeader("no mailtui-spool header")
    return raw[end + 1:]


class SpoolFiles:
    """The files of the messages in one spool directory (blocking: call from a worker thread)."""

    def __init__(self, folder: Path):
        self.dir = Path(folder)

    def path(self, msg_id: str, ext: str) -> Path:
        return self.dir / f"{msg_id}{ext}"

    def create(self, msg_id: str, envelope: dict, body: bytes) -> None:
        """Write a new message's one file and fsync it (the caller fsyncs the directory)."""
        write_file(self.path(msg_id, MSG), encode(envelope, body))

    def read_envelope(self, msg_id: str) -> dict:
        """The message's envelope and state now: its state file when it has one, else its header."""
        try:
            data = json.loads(self.path(msg_id, STATE).read_bytes())
        except FileNotFoundError:
            head = read_head(self.path(msg_id, MSG))
            if head is None:
                raise DamagedHeader("the message is cut short") from None
            return head
        if not isinstance(data, dict):
            raise ValueError("the state file is not an object")
        return data

    def read_body(self, msg_id: str) -> bytes:
        try:
            return body_of(self.path(msg_id, MSG).read_bytes())
        except FileNotFoundError:
            return self.path(msg_id, OLD_BODY).read_bytes()   # a spool of an earlier version

    def remove(self, msg_id: str) -> None:
        """Unlink every file of ``msg_id``, in the order the module docstring gives."""
        for ext in (MSG, STATE, OLD_BODY):
            try:
                os.unlink(self.path(msg_id, ext))
            except FileNotFoundError:
                pass
