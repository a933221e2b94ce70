"""Commands of the selected state (RFC 3501 §6.4): FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE ...

Messages are read in batches, one executor call per batch, and only as far
as the request needs: ``UID FETCH 1:* (UID FLAGS)`` on 50,000 messages never
opens a file and formats each line directly; ENVELOPE and header fields read
the first 64 KiB; BODY[] and BODYSTRUCTURE read the whole file. Output is
drained after each batch, so a huge FETCH never sits in memory.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from ...store.folder import FolderGone
from ...store.mailfiles import HEADER_READ
from . import commands as c
from .dates import format_date_time
from .errors import ParseError
from .fetchitems import fetch_items
from .mailboxcmds import Refused, folder_name
from .message import MessageView
from .response import Atom, Code, fetch as fetch_response
from .search import FULL, HEADER, NOTHING, Candidate, matches, needs
from .selection import BadSequence, Selection, flag_bytes
from .sequence import SequenceSet
from .session import ImapSession, Out, Outcome

BATCH = 64                   # messages read per executor call ...
BATCH_BYTES = 8 * 1024 * 1024    # ... and at most this much of them (one big message alone may exceed it)
LINES_PER_DRAIN = 512        # cheap FETCH lines written between drains
_FAST = frozenset({"UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE"})


class Meta(NamedTuple):
    uid: int
    flags: tuple[str, ...]
    internal_date: dt.datetime
    size: int


def _spans(session: ImapSession, cmd: c.Fetch) -> list[tuple[int, int]]:
    try:
        return session.selection.spans(cmd.sequence, cmd.uid)
    except BadSequence as exc:
        raise ParseError(str(exc), cmd.tag) from None


def _targets(session: ImapSession, cmd: c.Fetch | c.Store | c.Copy) -> list[tuple[int, int]]:
    try:
        return list(session.selection.resolve(cmd.sequence, cmd.uid))
    except BadSequence as exc:
        raise ParseError(str(exc), cmd.tag) from None


def _date(when: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(when, dt.UTC)


def _view(data: bytes, header_only: bool) -> MessageView:
    if header_only:
        return MessageView(_no_body, load_header=lambda: data)
    return MessageView(data)


def _no_body() -> bytes:
    raise RuntimeError("only the header was read")


# -- FETCH ----------------------------------------------------------------------------
async def fetch(session: ImapSession, cmd: c.Fetch, out: Out) -> Outcome:
    selection = session.selection
    attrs = cmd.attributes
    sets_seen = not selection.read_only and any(a.sets_seen for a in attrs)
    if [a.name for a in attrs] == ["UID", "FLAGS"] and selection.uids == selection.folder.uids:
        missing = await _fetch_uid_flags(selection, _spans(session, cmd), out)   # what every client sends
    elif all(a.section is None and a.name in _FAST for a in attrs) and not sets_seen:
        missing = await _fetch_fast(selection, _targets(session, cmd), attrs, out)
    else:
        missing = await _fetch_full(session, _targets(session, cmd), attrs, sets_seen, out)
    if missing and not cmd.uid:
        return session.no(cmd, out, "Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return session.ok(cmd, out, "FETCH completed")


async def _fetch_uid_flags(selection: Selection, spans: list[tuple[int, int]], out: Out) -> bool:
    """``(UID FLAGS)`` while the view is the folder: one formatting per line, nothing else.

    50,000 lines in ~20 ms: the FLAGS bytes are made once per distinct
    Maildir info string, and message numbers are positions.
    """
    folder = selection.folder
    uids, infos, recent = folder.uids, folder.infos, selection.recent
    distinct = set(infos)
    plain = {info: flag_bytes(folder.flags_of_info(info), False) for info in distinct}
    marked = {info: flag_bytes(folder.flags_of_info(info), True) for info in distinct} if recent else plain
    line = b"* %d FETCH (UID %d FLAGS (%s))\r\n"
    for low, high in spans:
        for start in range(low, high, FAST_SLICE):
            end = min(high, start + FAST_SLICE)
            if recent:
                rows = [line % (n, uid, (marked if uid in recent else plain)[info])
                        for n, uid, info in zip(range(start + 1, end + 1), uids[start:end], infos[start:end])]
            else:
                rows = [line % (n, uid, plain[info])
                        for n, uid, info in zip(range(start + 1, end + 1), uids[start:end], infos[start:end])]
            out.write(b"".join(rows))
            await out.drain()
    return False


async def _fetch_fast(selection: Selection, targets, attrs, out: Out) -> bool:
    """FETCH of index data only (UID, FLAGS, RFC822.SIZE, INTERNALDATE): no file is opened.

    Lines are formatted from one template per request, in slices of
    ``FAST_SLICE`` messages: 50,000 ``(UID FLAGS)`` lines take tens of ms.
    """
    folder = selection.folder
    names = [a.name for a in attrs]
    template = b"* %d FETCH (" + b" ".join(_FAST_PART[name] for name in names) + b")\r\n"
    indexes = _folder_indexes(selection, targets)
    flags = _FlagBytes(folder, selection.recent)
    sizes, dates = folder.sizes, folder.dates
    getters = {"UID": lambda seq, uid, i: uid, "FLAGS": flags.of,
               "RFC822.SIZE": lambda seq, uid, i: sizes[i],
               "INTERNALDATE": lambda seq, uid, i: format_date_time(_date(dates[i])).encode()}
    missing = any(i is None for i in indexes)
    rows = [(seq, uid, i) for (seq, uid), i in zip(targets, indexes) if i is not None]
    parts = [getters[name] for name in names]
    make = lambda seq, uid, i: template % ((seq,) + tuple(g(seq, uid, i) for g in parts))  # noqa: E731
    for start in range(0, len(rows), FAST_SLICE):
        out.write(b"".join([make(*row) for row in rows[start:start + FAST_SLICE]]))
        await out.drain()
    return missing


_FAST_PART = {"UID": b"UID %d", "FLAGS": b"FLAGS (%s)", "RFC822.SIZE": b"RFC822.SIZE %d",
              "INTERNALDATE": b'INTERNALDATE "%s"'}
FAST_SLICE = 4096


class _FlagBytes:
    """FLAGS values as bytes, cached per Maildir info string (and \\Recent)."""

    def __init__(self, folder, recent: set[int]):
        self.infos = folder.infos
        self.folder = folder
        self.recent = recent
        self.cache: dict[str, bytes] = {}
        self.cache_recent: dict[str, bytes] = {}

    def of(self, seq: int, uid: int, i: int) -> bytes:
        info = self.infos[i]
        recent = uid in self.recent
        cache = self.cache_recent if recent else self.cache
        value = cache.get(info)
        if value is None:
            value = cache[info] = flag_bytes(self.folder.flags_at(i), recent)
        return value


def _folder_indexes(selection: Selection, targets: list[tuple[int, int]]) -> list[int | None]:
    """Where each target is in the folder's arrays (None: expunged meanwhile)."""
    folder = selection.folder
    if selection.uids == folder.uids:          # the usual case: the view is the folder
        return [seq - 1 for seq, _ in targets]
    index_of = folder.index_of
    return [index_of(uid) for _, uid in targets]


async def _fetch_full(session: ImapSession, targets, attrs, sets_seen: bool, out: Out) -> bool:
    selection = session.selection
    folder = selection.folder
    needs_message = any(a.needs_message for a in attrs)
    header_only = not any(a.needs_body for a in attrs)
    wants_flags = any(a.name == "FLAGS" for a in attrs)
    missing = False
    for chunk in _batches(folder, targets, header_only or not needs_message):
        present = [uid for _, uid in chunk if folder.index_of(uid) is not None]
        seen_now: set[int] = set()
        if sets_seen:
            unseen = [uid for uid in present if "\\Seen" not in folder.flags_at(folder.index_of(uid))]
            if unseen:
                seen_now = set(await folder.store(unseen, "add", ["\\Seen"], origin=session.id))
        datas = await folder.read_many(present, header_only) if needs_message else {}
        for seq, uid in chunk:
            i = folder.index_of(uid)
            data = datas.get(uid) if needs_message else b""
            if i is None or data is None:
                missing = True
                continue
            meta = Meta(uid, folder.flags_at(i) + (("\\Recent",) if uid in selection.recent else ()),
                        _date(folder.dates[i]), folder.sizes[i])
            items = fetch_items(attrs, meta, lambda: _view(data, header_only))
            if uid in seen_now and not wants_flags:
                items.append(("FLAGS", [Atom(f) for f in meta.flags]))
            out.write(fetch_response(seq, items))
        await out.drain()
    return missing


def _batches(folder, pairs: list[tuple[int, int]], small: bool):
    """Slices of (seq, UID) pairs to read at once: BATCH messages, or BATCH_BYTES of them."""
    batch: list[tuple[int, int]] = []
    size = 0
    for seq, uid in pairs:
        i = folder.index_of(uid)
        size += HEADER_READ if small or i is None else folder.sizes[i]
        batch.append((seq, uid))
        if len(batch) >= BATCH or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# -- STORE -----------------------------------------------------------------------------
async def store(session: ImapSession, cmd: c.Store, out: Out) -> Outcome:
    selection = session.selection
    if selection.read_only:
        return session.no(cmd, out, "Mailbox is read-only", "READ-ONLY")
    targets = _targets(session, cmd)
    await selection.folder.store([uid for _, uid in targets], cmd.mode, cmd.flags, origin=session.id)
    missing = False
    if not cmd.silent:
        for seq, uid in targets:
            flags = selection.flags(uid)
            if flags is None:
                missing = True
            elif cmd.uid:
                out.write(b"* %d FETCH (UID %d FLAGS (%s))\r\n" % (seq, uid, flags))
            else:
                out.write(b"* %d FETCH (FLAGS (%s))\r\n" % (seq, flags))
    if missing and not cmd.uid:
        return session.no(cmd, out, "Some of the messages no longer exist", "EXPUNGEISSUED")
    return session.ok(cmd, out, "STORE completed")


# -- SEARCH ----------------------------------------------------------------------------------
async def search(session: ImapSession, cmd: c.Search, out: Out) -> Outcome:
    returns = cmd.program.return_options
    if returns is not None and "SAVE" in returns:
        raise ParseError("SEARCH RETURN (SAVE) is not supported", cmd.tag)
    selection = session.selection
    folder = selection.folder
    level = needs(cmd.program.key)
    view = [(seq, uid) for seq, uid in enumerate(selection.uids, 1) if folder.index_of(uid) is not None]
    max_seq, max_uid = selection.exists, (selection.uids[-1] if selection.uids else 0)
    found: list[int] = []
    batches = _batches(folder, view, level != FULL) if level != NOTHING else [view]
    for chunk in batches:
        datas = await folder.read_many([uid for _, uid in chunk], level == HEADER) if level != NOTHING else {}
        for seq, uid in chunk:
            i = folder.index_of(uid)
            data = datas.get(uid, b"")
            if i is None or data is None:
                continue
            flags = folder.flags_at(i) + (("\\Recent",) if uid in selection.recent else ())
            candidate = Candidate(seq, uid, flags, _date(folder.dates[i]), folder.sizes[i],
                                  lambda d=data: _view(d, level == HEADER), max_seq, max_uid)
            if matches(cmd.program.key, candidate):
                found.append(uid if cmd.uid else seq)
        if level != NOTHING:
            await out.drain()
    out.write(_esearch(cmd, found, returns) if returns is not None else
              b"* SEARCH" + b"".join(b" %d" % n for n in found) + b"\r\n")
    return session.ok(cmd, out, "SEARCH completed")


def _esearch(cmd: c.Search, found: list[int], returns: tuple[str, ...]) -> bytes:
    """``* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 3 ALL 2,5,9`` (RFC 4731); ``RETURN ()`` means ALL."""
    options = returns or ("ALL",)
    parts = [b'* ESEARCH (TAG "' + cmd.tag.encode() + b'")'] + ([b"UID"] if cmd.uid else [])
    values = {"MIN": b"MIN %d" % min(found) if found else None, "MAX": b"MAX %d" % max(found) if found else None,
              "COUNT": b"COUNT %d" % len(found), "ALL": b"ALL " + _set(sorted(found)).encode() if found else None}
    parts += [values[name] for name in ("MIN", "MAX", "ALL", "COUNT")     # Dovecot's order
              if name in options and values[name] is not None]
    return b" ".join(parts) + b"\r\n"


# -- COPY / MOVE --------------------------------------------------------------------------------
async def copy(session: ImapSession, cmd: c.Copy, out: Out) -> Outcome:
    selection = session.selection
    move = isinstance(cmd, c.Move)
    try:
        name = folder_name(cmd.mailbox)
    except Refused as exc:
        return session.no(cmd, out, exc.text, exc.code)
    if move and selection.read_only:
        return session.no(cmd, out, "Mailbox is read-only", "READ-ONLY")
    uids = [uid for _, uid in _targets(session, cmd)]
    store = session.host.store
    try:
        dest = await store.open(session.key, name)
    except FolderGone:
        return session.no(cmd, out, "Mailbox does not exist", "TRYCREATE")
    try:
        if dest is selection.folder:
            if move:
                return session.no(cmd, out, "Source and destination are the same mailbox", "CANNOT")
            pairs = await _copy_within(selection, uids)
        else:
            pairs = await selection.folder.copy_to(dest, uids, move=move, origin=session.id)
        validity = dest.uidvalidity
    finally:
        store.release(dest, session.key)
    code = None
    if pairs:
        code = Code.of("COPYUID", validity, Atom(_set([a for a, _ in pairs])), Atom(_set([b for _, b in pairs])))
    if move:
        if code is not None:
            out.write(b"* OK " + code.encode() + b" Moved\r\n")
        return session.ok(cmd, out, "MOVE completed")
    return session.ok(cmd, out, "COPY completed", code)


async def _copy_within(selection: Selection, uids: list[int]) -> list[tuple[int, int]]:
    folder = selection.folder
    datas = await folder.read_many(uids, False)
    items, sources = [], []
    for uid in uids:
        i = folder.index_of(uid)
        if i is not None and datas.get(uid) is not None:
            items.append((datas[uid], folder.flags_at(i), folder.dates[i]))
            sources.append(uid)
    return list(zip(sources, await folder.add(items)))


def _set(numbers: list[int]) -> str:
    """``1:3,7``: a compact sequence set of sorted-or-not numbers, order kept."""
    parts: list[list[int]] = []
    for n in numbers:
        if parts and n == parts[-1][1] + 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in parts)


# -- EXPUNGE / CLOSE / UNSELECT / CHECK ---------------------------------------------------------------
async def expunge(session: ImapSession, cmd: c.Expunge, out: Out) -> Outcome:
    selection = session.selection
    if selection.read_only:
        return session.no(cmd, out, "Mailbox is read-only", "READ-ONLY")
    await selection.folder.expunge(_deleted(selection, cmd.uids), origin=session.id)
    return session.ok(cmd, out, "EXPUNGE completed")


def _deleted(selection: Selection, only: SequenceSet | None) -> list[int]:
    folder = selection.folder
    ranges = only.ranges(selection.uids[-1]) if only is not None and selection.uids else None
    chosen = []
    for uid in selection.uids:
        i = folder.index_of(uid)
        if i is None or "T" not in folder.infos[i]:
            continue
        if ranges is None or any(low <= uid <= high for low, high in ranges):
            chosen.append(uid)
    return chosen


async def close(session: ImapSession, cmd: c.Close | c.Unselect, out: Out) -> Outcome:
    selection = session.selection
    if isinstance(cmd, c.Close) and not selection.read_only:
        await selection.folder.expunge(_deleted(selection, None), origin=session.id)
    session.unselect()          # no EXPUNGE responses for CLOSE (§6.4.2)
    return session.ok(cmd, out, f"{'CLOSE' if isinstance(cmd, c.Close) else 'UNSELECT'} completed")


async def check(session: ImapSession, cmd: c.Check, out: Out) -> Outcome:
    await session.look()
    return session.ok(cmd, out, "CHECK completed")


