"""A user's folders: INBOX is the Maildir POP3 reads; the others are Maildir++ subfolders.

``data_dir/mail/<domain>/<user>/`` is INBOX; folder ``Work.Projects`` lives in
``.Work.Projects/`` beside ``cur/``, with a ``maildirfolder`` file, as
Courier and Dovecot lay them out. Names are the IMAP wire names (modified
UTF-7, ``.`` as the hierarchy delimiter); :func:`folder_dir` refuses
anything that could leave the user's directory or clash with the layout.

:class:`MailStore` keeps one :class:`folder.Folder` per open folder for the
whole process, so every session (IMAP or POP3) shares its index and its
notifications; folders nobody has open stay cached, within a budget of
messages, so the second open of a big mailbox is fast.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .folder import Folder, FolderGone
from .maildir import Maildirs
from .safeio import DirSyncer, atomic_write, fsync_dir

DELIMITER = "."
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
SUBSCRIPTIONS = "subscriptions"
VALIDITY_FILE = "mailtui-uidvalidity"
MAX_NAME = 200                     # octets of a folder name (a directory name holds 255)
CACHE_MESSAGES = 100_000           # messages kept indexed for folders nobody has open
_BAD_COMPONENT = re.compile(r"[\x00-\x1f\x7f/%*]")      # "/" would be a path; % and * are wildcards
_validity_lock = threading.Lock()


class FolderError(Exception):
    """A folder operation the user asked for cannot be done; ``code`` is an IMAP response code."""

    def __init__(self, text: str, code: str = ""):
        super().__init__(text)
        self.code = code


def check_name(name: str) -> str:
    """The canonical folder name, or FolderError: no path tricks, no other namespaces."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX" + DELIMITER:
        name = "INBOX" + name[5:]
    if not name or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise FolderError("Invalid mailbox name length", "CANNOT")
    if name[0] in "~#/" or not name.isascii() or _BAD_COMPONENT.search(name):
        raise FolderError("Invalid mailbox name", "CANNOT")
    if any(part in ("", ".", "..") for part in name.split(DELIMITER)):
        raise FolderError("Invalid mailbox name (empty hierarchy level)", "CANNOT")
    return name


def parents_of(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


class UserFolders:
    """One user's folder tree on disk (blocking methods: call them in an executor)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder_dir(self, name: str) -> Path:
        name = check_name(name)
        return self.root if name == "INBOX" else self.root / (DELIMITER + name)

    def exists(self, name: str) -> bool:
        return (self.folder_dir(name) / "cur").is_dir()

    def names(self) -> list[str]:
        """Every folder, INBOX first, then sorted."""
        found = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return ["INBOX"]
        for entry in entries:
            if entry.name.startswith(DELIMITER) and len(entry.name) > 1 and entry.is_dir():
                try:
                    name = check_name(entry.name[1:])
                except FolderError:
                    continue
                if name != "INBOX" and os.path.isdir(os.path.join(entry.path, "cur")):
                    found.append(name)
        return ["INBOX"] + sorted(found)

    def create(self, name: str) -> None:
        name = check_name(name)
        if name == "INBOX" or self.exists(name):
            raise FolderError("Mailbox already exists", "ALREADYEXISTS")
        for each in parents_of(name) + [name]:
            if each != "INBOX" and not self.exists(each):
                self._make(self.folder_dir(each))
        fsync_dir(self.root)

    def _make(self, path: Path) -> None:
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        (path / "maildirfolder").touch(mode=0o600)

    def ensure_special(self) -> None:
        """Sent, Drafts, Trash and Junk exist from the first login (and are subscribed)."""
        missing = [name for name in SPECIAL_USE if not self.exists(name)]
        for name in missing:
            self._make(self.folder_dir(name))
        if missing:
            fsync_dir(self.root)
            self.subscribe(missing, True)

    def children(self, name: str) -> list[str]:
        prefix = name + DELIMITER
        return [n for n in self.names() if n.startswith(prefix)]

    def delete(self, name: str) -> None:
        name = check_name(name)
        if name == "INBOX":
            raise FolderError("INBOX cannot be deleted", "CANNOT")
        if not self.exists(name):
            raise FolderError("Mailbox does not exist", "NONEXISTENT")
        if self.children(name):
            raise FolderError("Mailbox has children, delete them first", "INUSE")
        path = self.folder_dir(name)
        doomed = path.with_name(f".deleting-{time.time_ns()}")   # not a folder name: never listed
        os.rename(path, doomed)
        fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

    def rename(self, old: str, new: str) -> list[tuple[str, str]]:
        """Rename a folder and its children; returns the (old, new) names moved."""
        old, new = check_name(old), check_name(new)
        if not self.exists(old):
            raise FolderError("Mailbox does not exist", "NONEXISTENT")
        if new == "INBOX" or self.exists(new) or new.startswith(old + DELIMITER):
            raise FolderError("Target mailbox already exists or is inside the source", "ALREADYEXISTS")
        if old == "INBOX":
            raise FolderError("INBOX is not a directory to rename; move its messages instead", "CANNOT")
        moves = [(old, new)] + [(child, new + child[len(old):]) for child in self.children(old)]
        for parent in parents_of(new):
            if not self.exists(parent):
                self._make(self.folder_dir(parent))
        for source, target in moves:
            os.rename(self.folder_dir(source), self.folder_dir(target))
        fsync_dir(self.root)
        subscribed = self.subscriptions()
        renamed = [dict(moves).get(name, name) for name in subscribed]
        if renamed != subscribed:
            self._save_subscriptions(renamed)
        return moves

    # -- subscriptions --
    def subscriptions(self) -> list[str]:
        try:
            text = (self.root / SUBSCRIPTIONS).read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line]

    def subscribe(self, names: list[str], on: bool) -> None:
        current = self.subscriptions()
        if on:
            updated = current + [n for n in names if n not in current]
        else:
            updated = [n for n in current if n not in names]
        if updated != current:
            self._save_subscriptions(updated)

    def _save_subscriptions(self, names: list[str]) -> None:
        atomic_write(self.root / SUBSCRIPTIONS, "".join(n + "\n" for n in names).encode("utf-8"))

    def new_validity(self) -> int:
        """A UIDVALIDITY larger than any this user's folders were given before (RFC 3501 §2.3.1.1)."""
        with _validity_lock:
            path = self.root / VALIDITY_FILE
            try:
                last = int(path.read_text().strip() or 0)
            except (FileNotFoundError, ValueError):
                last = 0
            value = min(max(last + 1, int(time.time())), 2**32 - 1)
            atomic_write(path, f"{value}\n".encode("ascii"))
            return value


class MailStore:
    """The process's open folders, shared by every session; see the module docstring."""

    def __init__(self, maildirs: Maildirs, *, syncer: DirSyncer | None = None,
                 cache_messages: int = CACHE_MESSAGES):
        self.maildirs = maildirs
        self.syncer = syncer or DirSyncer()
        self.cache_messages = cache_messages
        self._folders: dict[tuple[str, str], Folder] = {}
        self._users: dict[str, UserFolders] = {}
        self._idle: OrderedDict[tuple[str, str], None] = OrderedDict()   # open by nobody, oldest first

    def user(self, key: str) -> UserFolders:
        found = self._users.get(key)
        if found is None:
            found = self._users[key] = UserFolders(self.maildirs.ensure(key))
        return found

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def open(self, key: str, name: str) -> Folder:
        """The folder, looked at now (its index loaded or brought up to date); release() it after."""
        name = check_name(name)
        slot = (key, name)
        folder = self._folders.get(slot)
        if folder is None:
            user = self.user(key)
            folder = Folder(user.folder_dir(name), name, syncer=self.syncer, new_validity=user.new_validity)
            self._folders[slot] = folder
        folder.users += 1
        self._idle.pop(slot, None)
        try:
            await folder.refresh()
        except BaseException:
            self.release(folder, key)
            if not folder.loaded:
                self._folders.pop(slot, None)
            raise
        return folder

    def release(self, folder: Folder, key: str) -> None:
        slot = (key, folder.name)
        folder.users -= 1
        if folder.users <= 0 and self._folders.get(slot) is folder:
            self._idle[slot] = None
            self._trim()

    def in_use(self, key: str, name: str) -> bool:
        folder = self._folders.get((key, name))
        return folder is not None and folder.users > 0

    def _trim(self) -> None:
        cached = sum(len(self._folders[slot]) for slot in self._idle)
        while self._idle and cached > self.cache_messages:
            slot, _ = self._idle.popitem(last=False)
            cached -= len(self._folders.pop(slot))

    def forget(self, key: str, name: str) -> None:
        """Drop a folder (and its children) from the cache after DELETE or RENAME."""
        for slot in [s for s in self._folders if s[0] == key and (s[1] == name or s[1].startswith(name + DELIMITER))]:
            self._idle.pop(slot, None)
            folder = self._folders.pop(slot)
            folder.gone = True          # sessions that still hold it find it gone at their next look

    def close(self) -> None:
        """Shutdown: no more delivery looks."""
        for folder in self._folders.values():
            folder.stop()

    def poke(self, key: str) -> None:
        """New mail was delivered to ``key``'s INBOX: wake whoever watches it."""
        folder = self._folders.get((key, "INBOX"))
        if folder is not None and folder.loaded:
            folder.poke()


__all__ = ["DELIMITER", "Folder", "FolderError", "FolderGone", "MailStore", "SPECIAL_USE", "UserFolders",
           "check_name"]
