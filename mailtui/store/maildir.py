"""Local mailboxes as Maildirs under ``data_dir/mail/<domain>/<user>/``.

Delivery writes ``tmp/<name>``, fsyncs it, renames it into ``new/`` and
fsyncs ``new/`` (coalesced across concurrent deliveries): once
:meth:`Maildirs.deliver` returns, a kill -9 cannot lose the message.
Messages are stored exactly as received on the wire (CRLF line endings,
dot-stuffing removed), so POP3 octet counts are file sizes.
IMAP and POP3 read them through ``folder.py`` (UIDs, flags, a shared index);
here only :meth:`Maildirs.count` looks, for the admin list and the console.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import time
from pathlib import Path

from .safeio import DirSyncer, write_file

_OUR_NAME = re.compile(r"(\d+)\.M(\d+)P\d+Q\d+\.[^,]*,S=(\d+)$")
_SAFE_PART = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
_SAFE_DOMAIN = re.compile(r"[a-z0-9][a-z0-9.-]{0,254}")


class MaildirError(ValueError):
    pass


_counter = itertools.count(1)
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def unique_name(size: int) -> str:
    """A new Maildir base name (``time.MusecPpidQn.host,S=size``), unique in this process."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size}"


def name_facts(name: str) -> tuple[float, int] | None:
    """(arrival time, size) from a name :func:`unique_name` made, or None (then: stat the file)."""
    ours = _OUR_NAME.match(name)
    return (int(ours[1]) + int(ours[2]) / 1e6, int(ours[3])) if ours else None


class Maildirs:
    def __init__(self, root: Path, *, syncer: DirSyncer | None = None):
        self.root = Path(root)
        self._syncer = syncer or DirSyncer()
        self._known: set[Path] = set()

    def path_for(self, key: str) -> Path:
        """The Maildir of mailbox ``user@domain``; refuses anything path-like."""
        local, _, domain = key.lower().rpartition("@")
        if (not _SAFE_PART.fullmatch(local) or not _SAFE_DOMAIN.fullmatch(domain)
                or ".." in local or ".." in domain):
            raise MaildirError(f"unsafe mailbox name {key!r}")
        return self.root / domain / local

    def ensure(self, key: str) -> Path:
        path = self.path_for(key)
        if path not in self._known:
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            self._known.add(path)
        return path

    def _write_tmp(self, box: Path, data: bytes, folder: str = "") -> tuple[Path, Path]:
        if folder and os.path.isdir(box / folder / "cur"):
            box = box / folder
        name = unique_name(len(data))
        tmp = box / "tmp" / name
        write_file(tmp, data)
        final = box / "new" / name
        os.rename(tmp, final)
        return tmp, final

    async def deliver(self, key: str, data: bytes, *, folder: str = "") -> Path:
        """Store ``data`` in mailbox ``key`` durably; returns the file's path.

        ``folder`` is a Maildir++ subfolder (``.Junk``) to deliver to if the
        mailbox has it; if not, the message goes to INBOX.
        """
        box = self.ensure(key)
        loop = asyncio.get_running_loop()
        _, final = await loop.run_in_executor(None, self._write_tmp, box, data, folder)
        await self._syncer.sync(final.parent)
        return final

    def deliver_sync(self, key: str, data: bytes) -> Path:
        from .safeio import fsync_dir

        box = self.ensure(key)
        _, final = self._write_tmp(box, data)
        fsync_dir(box / "new")
        return final

    # -- reading ----------------------------------------------------------------

    def count(self, key: str) -> int:
        """Messages waiting in a mailbox (a directory listing, no stat)."""
        try:
            box = self.path_for(key)
        except MaildirError:
            return 0
        total = 0
        for sub in ("new", "cur"):
            try:
                total += sum(1 for e in os.scandir(box / sub) if not e.name.startswith("."))
            except FileNotFoundError:
                pass
        return total
