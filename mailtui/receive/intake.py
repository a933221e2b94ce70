"""Taking responsibility for a message: local copies and the queue entry.

:meth:`Intake.accept` returns only when every local recipient's copy is in
its Maildir and every remote recipient is in the spool, all fsync'd. Only
then may the SMTP session say 250. Any storage failure raises
:class:`StorageError`, which the session turns into a 4xx.

A message sender authentication quarantined goes to the mailbox's Junk
folder when it has one - IMAP makes it at its owner's first login - and to
INBOX otherwise, where a POP3 reader sees it (tagged X-Mailtui-Quarantine
either way).

The spool copy is DKIM-signed here, once, before it is written (the
:class:`MessageSigner` decides whether the message is ours to sign): every
delivery attempt sends the same signed bytes. Local copies are stored as
received, unsigned, also when the message has remote recipients too: a
signature proves a message to other receivers, and the local ones need not
wait for it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from ..events import DeliveredLocal, EventBus, Notice, Queued
from ..store.db import Store
from ..store.maildir import Maildirs
from ..store.mailboxes import DELIMITER
from ..store.queue import Queue, QueueItem, new_id

log = logging.getLogger(__name__)


class StorageError(Exception):
    """The message could not be made durable; ``reply`` is the 4xx to give."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


@dataclass
class Envelope:
    sender: str                              # "" = null sender
    local: dict[str, list[str]] = field(default_factory=dict)   # mailbox key -> addresses
    remote: list[str] = field(default_factory=list)
    smtputf8: bool = False
    body_8bit: bool = False
    peer: str = ""
    helo: str = ""
    quarantine: bool = False                 # for the Junk folder (sender authentication said so)

    @property
    def recipients(self) -> list[str]:
        return [a for addrs in self.local.values() for a in addrs] + self.remote


def storage_reply(exc: OSError) -> str:
    # EFBIG: a file size limit (ulimit -f, RLIMIT_FSIZE) is storage running out too.
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "452 4.3.1 Insufficient system storage"
    return "451 4.3.0 Local error in processing: cannot store the message"


class MessageSigner(Protocol):
    async def signature(self, sender: str, message: bytes) -> bytes:
        """The DKIM-Signature field to put on top of ``message``, or b"" when it is not ours to sign."""


JUNK = DELIMITER + "Junk"     # quarantined mail goes there if the mailbox has it (its owner uses IMAP)
SIGNING_FAILED = "451 4.3.0 Local error in processing: cannot DKIM-sign the message"


class Intake:
    def __init__(self, *, maildirs: Maildirs, queue: Queue, bus: EventBus, store: Store | None = None,
                 signer: MessageSigner | None = None):
        self.maildirs = maildirs
        self.queue = queue
        self.bus = bus
        self.store = store
        self.signer = signer
        self._signing_problem = ""

    async def accept(self, envelope: Envelope, data: bytes, *, msg_id: str | None = None) -> str:
        """Store ``data`` for every recipient durably; returns the message id."""
        msg_id = msg_id or new_id()
        try:
            folder = JUNK if envelope.quarantine else ""
            jobs = [self.maildirs.deliver(key, data, folder=folder) for key in envelope.local]
            if envelope.remote:
                jobs.append(self._spool(envelope, data, msg_id))
            results = await asyncio.gather(*jobs, return_exceptions=True)
        except OSError as exc:  # pragma: no cover - gather collects them
            raise StorageError(storage_reply(exc)) from exc
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self._undo(results)
            first = failures[0]
            if isinstance(first, OSError):
                raise StorageError(storage_reply(first)) from first
            raise first
        now = time.time()
        for key, addrs in envelope.local.items():
            self.bus.publish(DeliveredLocal(msg_id=msg_id, recipient=", ".join(addrs), mailbox=key, size=len(data)))
            if self.store is not None:
                self.store.log("deliveries", {"at": now, "id": msg_id, "sender": envelope.sender,
                                              "recipient": key, "result": "delivered", "where": "local"})
        if envelope.remote:
            self.bus.publish(Queued(msg_id=msg_id, sender=envelope.sender,
                                    recipients=tuple(envelope.remote), size=results[-1].size))
        return msg_id

    async def _spool(self, envelope: Envelope, data: bytes, msg_id: str) -> QueueItem:
        """The queue entry for the remote recipients: signed once, here, then written durably."""
        if self.signer is not None:
            try:
                data = await self.signer.signature(envelope.sender, data) + data
            except Exception as exc:  # a key that cannot be read or made: the client tries again later
                log.error("DKIM signing of %s failed: %s", msg_id, exc)
                if str(exc) != self._signing_problem:     # said once, not for every message
                    self._signing_problem = str(exc)
                    self.bus.publish(Notice(level="error", text=f"DKIM signing failed ({exc}); relayed "
                                                                "mail is refused with 451 until it is fixed"))
                raise StorageError(SIGNING_FAILED) from exc
            self._signing_problem = ""
        return await self.queue.enqueue(
            envelope.sender, envelope.remote, data, msg_id=msg_id, peer=envelope.peer,
            helo=envelope.helo, smtputf8=envelope.smtputf8, body_8bit=envelope.body_8bit)

    async def _undo(self, results: list) -> None:
        """Remove the copies that were stored when another one failed.

        The client gets a 4xx and sends the whole message again, so a copy
        kept here would be delivered twice.
        """
        loop = asyncio.get_running_loop()
        for result in results:
            try:
                if isinstance(result, os.PathLike):   # a Maildir file
                    await loop.run_in_executor(None, os.unlink, result)
                elif result is not None and not isinstance(result, BaseException):
                    await self.queue.finish(result)   # a spool entry
            except OSError as exc:
                log.warning("could not remove a partly stored message: %s", exc)
