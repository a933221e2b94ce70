"""Reading a Maildir folder from disk and reconciling it with its UID list.

Blocking code, run in an executor by :class:`folder.Folder` while it holds
the folder's lock; nothing here touches the in-memory index, it returns a
:class:`Delta` the folder applies on the event loop.

Every message a look finds in ``new/`` gets its UID and moves to ``cur/``
(as ``name:2,``), as Dovecot does: ``new/`` stays small, so the look that
follows each delivery lists a handful of names, not the whole mailbox. The
UID list is written (and fsync'd) before the delta is returned, so no UID
reaches a client before it is durable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .maildir import name_facts
from .mailflags import split_name
from .uidlist import Entry, Loaded, UidListFile

log = logging.getLogger(__name__)
REWRITE_GARBAGE = 1000       # expunged lines tolerated in a UID list before it is rewritten


@dataclass(slots=True)
class Msg:
    uid: int
    base: str
    info: str
    size: int
    when: float


@dataclass
class Delta:
    """What a look found: the folder applies it to its index."""

    uidvalidity: int
    uid_next: int
    cur_mtime: int
    added: list[Msg] = field(default_factory=list)        # in UID order
    expunged: list[int] = field(default_factory=list)     # UIDs whose files are gone
    flags: list[tuple[int, str]] = field(default_factory=list)   # (UID, new info) changed outside
    garbage: int = 0                                      # UID list lines of expunged messages
    first_new_uid: int = 0                                # a full load: the first UID it gave


def cur_mtime(folder: Path) -> int:
    return os.stat(folder / "cur").st_mtime_ns


def _scan(directory: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(directory) if not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def _facts(path: str, base: str, entry: Entry | None = None) -> tuple[float, int] | None:
    """(internal date, size): the UID list's fields, else the name's, else a stat."""
    when = entry.when if entry else None
    size = entry.size if entry else None
    if when is None or size is None:
        named = name_facts(base)
        if named is not None:
            when = named[0] if when is None else when
            size = named[1] if size is None else size
        else:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            when = st.st_mtime if when is None else when
            size = st.st_size if size is None else size
    return when, size


def entry_of(msg: Msg) -> Entry:
    """The UID list line for a message: fields only where the name does not tell them."""
    named = name_facts(msg.base)
    if named is None:
        return Entry(msg.uid, msg.base, msg.size, msg.when)
    return Entry(msg.uid, msg.base, None, None if abs(named[0] - msg.when) < 1e-3 else msg.when)


def _list_cur(folder: Path) -> dict[str, str]:
    """base → info of every file in ``cur/``; files without ``:2,`` are renamed to have it."""
    found: dict[str, str] = {}
    for name in _scan(folder / "cur"):
        base, info = split_name(name)
        if ":2," not in name:
            try:
                os.rename(folder / "cur" / name, folder / "cur" / f"{base}:2,{info}")
            except OSError:
                continue
        found[base] = info
    return found


def _take_new(folder: Path, known: Callable[[str], bool]) -> list[Msg]:
    """Messages in ``new/``: facts read, then moved to ``cur/``; UIDs not yet given."""
    fresh: list[Msg] = []
    for name in _scan(folder / "new"):
        base = split_name(name)[0]
        if known(base):
            continue
        source = str(folder / "new" / name)
        facts = _facts(source, base)
        if facts is None:
            continue
        try:
            os.rename(source, folder / "cur" / f"{base}:2,")
        except FileNotFoundError:          # taken meanwhile (a POP3 DELE)
            continue
        fresh.append(Msg(0, base, "", facts[1], facts[0]))
    return fresh


def _number(fresh: list[Msg], uid_next: int) -> int:
    fresh.sort(key=lambda m: (m.when, m.base))
    for msg in fresh:
        msg.uid = uid_next
        uid_next += 1
    return uid_next


def full_load(folder: Path, uidlist: UidListFile, new_validity: Callable[[], int]) -> Delta:
    """Read a folder from scratch: every message, with the UIDs the list gives or new ones."""
    loaded: Loaded | None = uidlist.load()
    if loaded is None:
        loaded = Loaded(new_validity(), 1, [], False)
        uidlist.needs_rewrite = True
    cur = _list_cur(folder)
    by_name = {e.name: e for e in loaded.entries}
    kept: list[Msg] = []
    fresh: list[Msg] = []
    for base, info in cur.items():
        entry = by_name.get(base)
        facts = _facts(f"{folder}/cur/{base}:2,{info}", base, entry)
        if facts is None:
            continue
        target = kept if entry is not None else fresh
        target.append(Msg(entry.uid if entry else 0, base, info, facts[1], facts[0]))
    fresh += _take_new(folder, lambda base: base in cur)
    kept.sort(key=lambda m: m.uid)
    uid_next = _number(fresh, loaded.uid_next)
    delta = Delta(loaded.uidvalidity, uid_next, 0, kept + fresh,
                  garbage=len(loaded.entries) - len(kept), first_new_uid=loaded.uid_next)
    persist(uidlist, delta, fresh, everything=delta.added)
    delta.cur_mtime = cur_mtime(folder)
    return delta


def look(folder: Path, uidlist: UidListFile, *, uidvalidity: int, uid_next: int, known_mtime: int,
         index: Callable[[], dict[str, tuple[int, str]]], everything: Callable[[], list[Msg]],
         garbage: int) -> Delta:
    """An incremental look: new mail in ``new/``; a rescan of ``cur/`` only if its mtime moved.

    ``cur/``'s mtime is compared before this look moves anything into it;
    afterwards the new mtime is recorded as known. A change someone else
    makes to ``cur/`` in that instant is seen at the next change.

    ``index`` gives base → (UID, info) of the folder's index and ``everything``
    its messages (for a rewrite); both are only called when needed.
    """
    delta = Delta(uidvalidity, uid_next, known_mtime, garbage=garbage)
    fresh: list[Msg] = []
    if cur_mtime(folder) != known_mtime:      # before our own moves below, which change it too
        known = index()
        cur = _list_cur(folder)
        for base, (uid, info) in known.items():
            now = cur.get(base)
            if now is None:
                delta.expunged.append(uid)
            elif now != info:
                delta.flags.append((uid, now))
        for base, info in cur.items():
            if base not in known:
                facts = _facts(f"{folder}/cur/{base}:2,{info}", base)
                if facts is not None:
                    fresh.append(Msg(0, base, info, facts[1], facts[0]))
        delta.expunged.sort()
        delta.garbage += len(delta.expunged)
    fresh += _take_new(folder, lambda base: False)
    delta.uid_next = _number(fresh, uid_next)
    delta.added = fresh
    if fresh or delta.garbage > REWRITE_GARBAGE:
        gone = set(delta.expunged)
        persist(uidlist, delta, fresh,
                 everything=lambda: [m for m in everything() if m.uid not in gone] + fresh)
    delta.cur_mtime = cur_mtime(folder)
    return delta


def persist(uidlist: UidListFile, delta: Delta, fresh: list[Msg], everything) -> None:
    """Append the new UIDs, or rewrite the list when it is new, damaged or mostly garbage."""
    if uidlist.needs_rewrite or delta.garbage > REWRITE_GARBAGE:
        messages = everything() if callable(everything) else everything
        uidlist.rewrite(delta.uidvalidity, delta.uid_next, [entry_of(m) for m in messages])
        delta.garbage = 0
    elif fresh:
        uidlist.append([entry_of(m) for m in fresh])
