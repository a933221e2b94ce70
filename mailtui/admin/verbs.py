"""The administrator's verbs, one implementation for every front end.

The CLI (directly, or through the running server's control socket), the
console and the tests all call these. Results are plain dicts and lists so
they cross the control socket as JSON unchanged.
"""

from __future__ import annotations

import inspect
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, Callable, Protocol

from ..events import EventBus, QueueChanged
from ..store.maildir import Maildirs
from ..store.queue import Queue
from .registry import Registry, RegistryError


class AdminError(Exception):
    """A request that cannot be carried out; the message is one line for people."""


class Delivery(Protocol):
    """What the queue verbs need of the running delivery scheduler.

    Only the running server has one: it knows which message an attempt holds
    right now, so it can act at once or as soon as that attempt ends. Each
    answers False when there is no such message to act on.
    """

    async def retry_now(self, msg_id: str) -> bool: ...

    async def remove_now(self, msg_id: str) -> bool: ...

    async def bounce_now(self, msg_id: str) -> bool: ...


class Admin:
    def __init__(self, *, registry: Registry, queue: Queue, maildirs: Maildirs,
                 delivery: Delivery | None = None, bus: EventBus | None = None,
                 status: Callable[[], dict] | None = None):
        self.registry = registry
        self.queue = queue
        self.maildirs = maildirs
        self.delivery = delivery
        self.bus = bus
        self._status = status

    def _publish(self, action: str, msg_id: str = "") -> None:
        if self.bus is not None:
            self.bus.publish(QueueChanged(action=action, msg_id=msg_id))

    # -- clients -------------------------------------------------------------------

    def client_list(self) -> list[dict]:
        return [{"name": c.name, "networks": list(c.networks), "note": c.note, "created": c.created}
                for c in self.registry.clients()]

    def client_add(self, name: str, networks: list[str], note: str = "") -> dict:
        client = self.registry.add_client(name, networks, note)
        return {"name": client.name, "networks": list(client.networks)}

    def client_edit(self, name: str, new_name: str | None = None, networks: list[str] | None = None,
                    note: str | None = None) -> dict:
        client = self.registry.update_client(name, new_name=new_name, networks=networks, note=note)
        return {"name": client.name, "networks": list(client.networks)}

    def client_remove(self, name: str) -> dict:
        self.registry.remove_client(name)
        return {"name": name}

    # -- mailboxes -----------------------------------------------------------------

    def mailbox_list(self) -> list[dict]:
        return [{"address": m.address, "created": m.created, "messages": self.maildirs.count(m.address)}
                for m in self.registry.mailboxes()]

    async def mailbox_add(self, address: str, password: str, replace: bool = False) -> dict:
        box = await self.registry.add_mailbox_async(address, password, replace=replace)
        self.maildirs.ensure(box.address)
        return {"address": box.address}

    def mailbox_remove(self, address: str) -> dict:
        self.registry.remove_mailbox(address)
        return {"address": address.lower(), "note": "messages are kept on disk"}

    # -- queue ---------------------------------------------------------------------

    async def queue_list(self) -> list[dict]:
        return await self.queue.summaries()

    def queue_status(self) -> dict:
        """How many messages are queued, whether the spool scan at start is still running, and
        whether the queue index still has changes to write."""
        return {"queued": len(self.queue), "scanning": self.queue.scanning, "indexing": self.queue.indexing}

    def queue_show(self, msg_id: str) -> dict:
        item = self._item(msg_id)
        try:
            body = self.queue.read_body(item)
        except OSError as exc:
            raise AdminError(f"cannot read message {item.id}: {exc.strerror}") from None
        headers = BytesHeaderParser(policy=default_policy).parsebytes(body)
        return item.summary() | {
            "headers": [(k, str(v)) for k, v in headers.items()],
            "text": body[:65536].decode("utf-8", "replace"),
        }

    async def queue_flush(self, msg_id: str | None = None) -> dict:
        if msg_id:
            item = self._item(msg_id)
            if self.delivery is not None:
                count = int(await self.delivery.retry_now(item.id))
            else:
                count = await self.queue.flush(item.id)
        else:
            count = await self.queue.flush()
        self._publish("flush", msg_id or "")
        return {"flushed": count}

    async def queue_remove(self, msg_id: str) -> dict:
        item = self._item(msg_id)
        if self.delivery is not None:
            await self.delivery.remove_now(item.id)  # waits out an attempt in progress
        elif item.in_flight:
            raise AdminError(f"message {item.id} is being delivered right now; try again in a moment")
        else:
            await self.queue.remove(item.id)
        self._publish("remove", item.id)
        return {"removed": item.id}

    async def queue_bounce(self, msg_id: str) -> dict:
        item = self._item(msg_id)
        if self.delivery is None:
            raise AdminError("bouncing needs the running server (start `mailtui serve`)")
        ok = await self.delivery.bounce_now(item.id)
        if not ok:
            raise AdminError(f"message {item.id} could not be bounced now (being delivered?)")
        self._publish("bounce", item.id)
        return {"bounced": item.id}

    def _item(self, msg_id: str):
        item = self.queue.get(msg_id)
        if item is None:
            raise AdminError(f"no queued message {msg_id!r}")
        return item

    # -- dispatch (control socket) ------------------------------------------------

    # -- the running server -------------------------------------------------------

    def status(self) -> dict:
        """Listeners, totals, queue size and loop lag of the running server (``mailtui status``)."""
        if self._status is None:
            raise AdminError("status needs the running server")
        return self._status()

    OPS = ("status", "client_list", "client_add", "client_edit", "client_remove", "mailbox_list", "mailbox_add",
           "mailbox_remove", "queue_list", "queue_status", "queue_show", "queue_flush", "queue_remove", "queue_bounce")

    async def call(self, op: str, args: dict) -> Any:
        if op not in self.OPS:
            raise AdminError(f"unknown operation {op!r}")
        method = getattr(self, op)
        try:
            result = method(**args)
            if inspect.isawaitable(result):
                result = await result
        except TypeError as exc:
            raise AdminError(f"bad arguments for {op}: {exc}") from None
        except (RegistryError, ValueError) as exc:
            raise AdminError(str(exc)) from None
        return result
