"""One session's view of its selected mailbox: sequence numbers, \\Recent, pending updates.

RFC 3501 lets message numbers change only when the session is told (an
EXPUNGE response), so each session keeps its own list of UIDs, brought up to
date with the shared folder at the points the RFC allows (§7.4.1, §5.5): no
EXPUNGE while answering FETCH, STORE or SEARCH (the UID forms may), and
nothing when no command is in progress (except in IDLE). What another session
changed reaches this one as EXISTS / EXPUNGE / FETCH (FLAGS) responses; the
folder's change log says what changed since :attr:`version`.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from typing import Protocol

from ...store.folder import Folder
from .sequence import SequenceSet


class Out(Protocol):
    def write(self, data: bytes) -> None: ...


class BadSequence(Exception):
    """A message number beyond the mailbox (RFC 3501: BAD)."""


def flag_bytes(flags: tuple[str, ...], recent: bool) -> bytes:
    names = flags + ("\\Recent",) if recent else flags
    return " ".join(names).encode("utf-8")


class Selection:
    def __init__(self, folder: Folder, *, read_only: bool, origin: object):
        self.folder = folder
        self.read_only = read_only
        self.origin = origin
        self.uids = array("I", folder.uids)
        self.version = folder.version
        self.pending_expunge: set[int] = set()
        self.recent: set[int] = set()
        self._claim(self.uids)

    def _claim(self, uids) -> None:
        """\\Recent for messages no session has been told of yet (RFC 3501 §2.3.2)."""
        mark = self.folder.recent_mark
        fresh = [uid for uid in uids[bisect.bisect_right(uids, mark):]]
        if self.read_only:                # EXAMINE shows them as recent but leaves them to others
            self.recent.update(fresh)
            return
        self.recent.update(fresh)
        if fresh:
            self.folder.recent_mark = max(mark, fresh[-1])

    # -- numbers -------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def spans(self, sequence: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """Half-open ``[low, high)`` index ranges of the view a set names, in order.

        BadSequence for message numbers beyond EXISTS (RFC 3501: BAD); UIDs
        that are not there are simply not named.
        """
        uids = self.uids
        if uid:
            if not uids:
                return []
            spans = [(bisect.bisect_left(uids, low), bisect.bisect_right(uids, high))
                     for low, high in sequence.ranges(uids[-1])]
            return [(low, high) for low, high in spans if low < high]
        ranges = sequence.ranges(len(uids))
        if not uids or ranges[-1][1] > len(uids):
            raise BadSequence("Invalid message sequence number")
        return [(low - 1, high) for low, high in ranges]

    def resolve(self, sequence: SequenceSet, uid: bool) -> Iterator[tuple[int, int]]:
        """(message number, UID) pairs a set names, in order; see :meth:`spans`."""
        uids = self.uids
        return ((i + 1, uids[i]) for low, high in self.spans(sequence, uid) for i in range(low, high))

    def flags(self, uid: int) -> bytes | None:
        """The FLAGS value for a message (with \\Recent), or None if it is gone from the folder."""
        i = self.folder.index_of(uid)
        if i is None:
            return None
        return flag_bytes(self.folder.flags_at(i), uid in self.recent)

    # -- updates ---------------------------------------------------------------
    def sync(self, out: Out, *, expunges: bool) -> None:
        """Tell the client what changed in the folder since the last sync."""
        folder = self.folder
        changes = folder.changes_since(self.version)
        last_uid = self.uids[-1] if self.uids else 0
        if changes is None:                 # the log was trimmed: compare everything
            present = set(folder.uids)
            self.pending_expunge.update(u for u in self.uids if u not in present)
            flagged = set(self.uids)
        else:
            flagged = set()
            for change in changes:
                if change.kind == "expunge":
                    if change.uid <= last_uid:
                        self.pending_expunge.add(change.uid)
                elif change.origin != self.origin and change.uid <= last_uid:
                    flagged.add(change.uid)
        self.version = folder.version
        if expunges and self.pending_expunge:
            self._send_expunges(out)
        self._send_new(out, last_uid)
        for uid in sorted(flagged - self.pending_expunge):
            seq, flags = self.seq_of(uid), self.flags(uid)
            if seq is not None and flags is not None:
                out.write(b"* %d FETCH (UID %d FLAGS (%s))\r\n" % (seq, uid, flags))

    def _send_expunges(self, out: Out) -> None:
        numbers = (self.seq_of(uid) for uid in self.pending_expunge)
        for seq in sorted((n for n in numbers if n is not None), reverse=True):
            out.write(b"* %d EXPUNGE\r\n" % seq)       # highest first: lower numbers stay valid
        gone = self.pending_expunge
        self.uids = array("I", (uid for uid in self.uids if uid not in gone))
        self.recent -= gone
        self.pending_expunge = set()

    def _send_new(self, out: Out, last_uid: int) -> None:
        fresh = self.folder.uids[bisect.bisect_right(self.folder.uids, last_uid):]
        if not fresh:
            return
        recent_before = len(self.recent)
        self.uids.extend(fresh)
        self._claim(fresh)
        out.write(b"* %d EXISTS\r\n" % len(self.uids))
        if len(self.recent) != recent_before:
            out.write(b"* %d RECENT\r\n" % len(self.recent))

    def forget_expunged(self) -> None:
        """CLOSE: expunged messages leave the view without EXPUNGE responses."""
        self.pending_expunge.clear()
