"""Commands of the authenticated state (RFC 3501 §6.3): mailboxes, LIST, STATUS, APPEND.

Each handler takes the session, the parsed command and the output, writes
untagged data and completes through ``session.ok`` / ``session.no``. Every
mailbox name goes through :func:`folder_name` first, so nothing can name a
path outside the user's own Maildir or another namespace.
"""

from __future__ import annotations

import bisect

from ...store.folder import FolderGone
from ...store.mailboxes import DELIMITER, FolderError, check_name
from . import commands as c
from . import mutf7
from .listing import list_entries
from .response import Code, encode, mailbox_name
from .selection import Selection
from .session import ImapSession, Out, Outcome, State

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class Refused(Exception):
    """A mailbox name we will not touch; ``code`` for the NO response."""

    def __init__(self, text: str, code: str | None = "CANNOT"):
        super().__init__(text)
        self.text, self.code = text, code


def folder_name(name: str) -> str:
    """The store's name for a wire name: valid modified UTF-7, no path tricks, no namespaces."""
    try:
        mutf7.decode(name)
    except ValueError:
        raise Refused("Mailbox name is not valid modified UTF-7") from None
    try:
        return check_name(name.rstrip(DELIMITER) if name.endswith(DELIMITER) and len(name) > 1 else name)
    except FolderError as exc:
        raise Refused(str(exc), exc.code or "CANNOT") from None


async def guarded(session: ImapSession, cmd: c.Command, out: Out, work) -> Outcome:
    """Run ``work()``; refused names and folder errors become tagged NO responses."""
    try:
        return await work()
    except Refused as exc:
        return session.no(cmd, out, exc.text, exc.code)
    except FolderError as exc:
        return session.no(cmd, out, str(exc), exc.code or None)
    except FolderGone:
        return session.no(cmd, out, "Mailbox does not exist", "NONEXISTENT")


# -- SELECT / EXAMINE -------------------------------------------------------------
async def select(session: ImapSession, cmd: c.Select, out: Out) -> Outcome:
    session.unselect()         # a failed SELECT leaves no mailbox selected (§6.3.1)

    async def work() -> Outcome:
        name = folder_name(cmd.mailbox)
        store = session.host.store
        folder = await store.open(session.key, name)
        read_only = isinstance(cmd, c.Examine)
        session.selection = Selection(folder, read_only=read_only, origin=session.id)
        session.state = State.SELECTED
        folder.watch(session, session.wake)
        session.host.changed(session)
        _announce(session, out)
        return session.ok(cmd, out, f"{'EXAMINE' if read_only else 'SELECT'} completed",
                          "READ-ONLY" if read_only else "READ-WRITE")
    return await guarded(session, cmd, out, work)


def _announce(session: ImapSession, out: Out) -> None:
    selection = session.selection
    folder = selection.folder
    keywords = tuple(folder.keywords.names)
    flags = " ".join(SYSTEM_FLAGS + keywords)
    out.write(f"* FLAGS ({flags})\r\n".encode("utf-8"))
    permanent = "" if selection.read_only else flags + (" \\*" if len(keywords) < 26 else "")
    out.write(f"* OK [PERMANENTFLAGS ({permanent})] Flags permitted\r\n".encode("utf-8"))
    out.write(b"* %d EXISTS\r\n* %d RECENT\r\n" % (selection.exists, len(selection.recent)))
    unseen = folder.first_unseen()
    if unseen is not None:
        out.write(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
    out.write(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % folder.uidvalidity)
    out.write(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % folder.uid_next)


# -- CREATE / DELETE / RENAME / (UN)SUBSCRIBE ------------------------------------------
async def create(session: ImapSession, cmd: c.Create, out: Out) -> Outcome:
    async def work() -> Outcome:
        name = folder_name(cmd.mailbox)
        store = session.host.store
        await store.run(store.user(session.key).create, name)
        return session.ok(cmd, out, "CREATE completed")
    return await guarded(session, cmd, out, work)


async def delete(session: ImapSession, cmd: c.Delete, out: Out) -> Outcome:
    async def work() -> Outcome:
        name = folder_name(cmd.mailbox)
        store = session.host.store
        if session.selection is not None and session.selection.folder.name == name:
            session.unselect()
        await store.run(store.user(session.key).delete, name)
        store.forget(session.key, name)
        return session.ok(cmd, out, "DELETE completed")
    return await guarded(session, cmd, out, work)


async def rename(session: ImapSession, cmd: c.Rename, out: Out) -> Outcome:
    async def work() -> Outcome:
        old, new = folder_name(cmd.mailbox), folder_name(cmd.new_name)
        store = session.host.store
        if old == "INBOX":
            await _rename_inbox(session, new)
            return session.ok(cmd, out, "RENAME completed")
        if store.in_use(session.key, old):
            return session.no(cmd, out, "Mailbox is in use; close it first", "INUSE")
        await store.run(store.user(session.key).rename, old, new)
        store.forget(session.key, old)
        return session.ok(cmd, out, "RENAME completed")
    return await guarded(session, cmd, out, work)


async def _rename_inbox(session: ImapSession, new: str) -> None:
    """RENAME INBOX: its messages move to a new folder and INBOX stays, empty (RFC 3501 §6.3.5)."""
    store = session.host.store
    await store.run(store.user(session.key).create, new)
    inbox = await store.open(session.key, "INBOX")
    try:
        dest = await store.open(session.key, new)
        try:
            await inbox.copy_to(dest, list(inbox.uids), move=True, origin=session.id)
        finally:
            store.release(dest, session.key)
    finally:
        store.release(inbox, session.key)


async def subscribe(session: ImapSession, cmd: c.Subscribe | c.Unsubscribe, out: Out) -> Outcome:
    async def work() -> Outcome:
        name = folder_name(cmd.mailbox)
        store = session.host.store
        on = isinstance(cmd, c.Subscribe)
        user = store.user(session.key)
        if on and not await store.run(user.exists, name):
            return session.no(cmd, out, "Mailbox does not exist", "NONEXISTENT")   # as Dovecot
        await store.run(user.subscribe, [name], on)
        return session.ok(cmd, out, f"{'SUBSCRIBE' if on else 'UNSUBSCRIBE'} completed")
    return await guarded(session, cmd, out, work)


# -- LIST / LSUB / NAMESPACE ----------------------------------------------------------
async def list_cmd(session: ImapSession, cmd: c.List | c.Lsub, out: Out) -> Outcome:
    lsub = isinstance(cmd, c.Lsub)
    patterns = (cmd.pattern,) if lsub else cmd.patterns
    verb = b"LSUB" if lsub else b"LIST"
    if not lsub and patterns == ("",) and not cmd.selection:
        out.write(b'* LIST (\\Noselect) "." ""\r\n')       # the delimiter question (§6.3.8)
        return session.ok(cmd, out, "LIST completed")
    store = session.host.store
    user = store.user(session.key)
    names, subscribed = await store.run(lambda: (user.names(), user.subscriptions()))
    entries = list_entries(names, subscribed, cmd.reference, patterns, lsub=lsub,
                           selection=frozenset() if lsub else cmd.selection,
                           returns=frozenset() if lsub else cmd.returns)
    for attributes, name in entries:
        out.write(b"* " + verb + b" (" + " ".join(attributes).encode("ascii") + b') "." '
                  + encode(mailbox_name(name)) + b"\r\n")
        if not lsub and cmd.status_items and "\\Noselect" not in attributes:
            await _status_line(session, name, cmd.status_items, out, quiet=True)
    return session.ok(cmd, out, f"{verb.decode()} completed")


async def namespace(session: ImapSession, cmd: c.Namespace, out: Out) -> Outcome:
    out.write(b'* NAMESPACE (("" ".")) NIL NIL\r\n')
    return session.ok(cmd, out, "NAMESPACE completed")


# -- STATUS ------------------------------------------------------------------------------
async def status(session: ImapSession, cmd: c.Status, out: Out) -> Outcome:
    async def work() -> Outcome:
        await _status_line(session, folder_name(cmd.mailbox), cmd.items, out)
        return session.ok(cmd, out, "STATUS completed")
    return await guarded(session, cmd, out, work)


async def _status_line(session: ImapSession, name: str, items: tuple[str, ...], out: Out,
                       quiet: bool = False) -> None:
    store = session.host.store
    try:
        folder = await store.open(session.key, name)
    except FolderGone:
        if quiet:
            return
        raise
    try:
        values = {"MESSAGES": len(folder), "UIDNEXT": folder.uid_next, "UIDVALIDITY": folder.uidvalidity,
                  "UNSEEN": folder.unseen(),
                  "RECENT": len(folder) - _bisect_count(folder.uids, folder.recent_mark)}
    finally:
        store.release(folder, session.key)
    body = " ".join(f"{item} {values[item]}" for item in items)
    out.write(b"* STATUS " + encode(mailbox_name(name)) + b" (" + body.encode("ascii") + b")\r\n")


def _bisect_count(uids, mark: int) -> int:
    return bisect.bisect_right(uids, mark)


# -- APPEND --------------------------------------------------------------------------------
async def append(session: ImapSession, cmd: c.Append, out: Out) -> Outcome:
    async def work() -> Outcome:
        name = folder_name(cmd.mailbox)
        if not cmd.message:
            return session.no(cmd, out, "Empty message")
        if len(cmd.message) > session.host.max_message_size:
            return session.no(cmd, out, "Message too large", "TOOBIG")
        store = session.host.store
        try:
            folder = await store.open(session.key, name)
        except FolderGone:
            return session.no(cmd, out, "Mailbox does not exist", "TRYCREATE")
        try:
            when = cmd.date_time.timestamp() if cmd.date_time else None
            uid = await folder.append(cmd.message, cmd.flags, when)
            validity = folder.uidvalidity
        finally:
            store.release(folder, session.key)
        return session.ok(cmd, out, "APPEND completed", Code.of("APPENDUID", validity, uid))
    try:
        return await guarded(session, cmd, out, work)
    except OSError:
        return session.no(cmd, out, "Cannot store the message now", "SERVERBUG")
