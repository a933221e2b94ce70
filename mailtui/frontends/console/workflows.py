"""The admin's workflows in the console: register a client, create a mailbox, retry a message ...

Each starts from a typed message that a panel posts (``ClientsPanel.AddClient``,
``QueuePanel.Retry`` ...) or from the command palette, and runs as a worker:
it asks in a modal dialog that returns a typed result, calls the server's
admin verbs (the CLI's own) and says in a notification what happened. A
refusal is a notification, never an exception.

:class:`AdminWorkflows` is a layer of the console app, not a helper object,
because Textual looks for ``@on`` handlers on the app's classes; the app on
top of it adds composition and navigation.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import App

from ...admin.registry import parse_network
from ...admin.verbs import AdminError
from ...config import Config
from .backend import MailServer
from .batch import Batcher
from .dialogs import ClientForm, ConfirmDialog, MailboxForm, MessageView
from .lifecycle import ServerLifecycle
from .widgets import ClientsPanel, ConnectionsPanel, QueuePanel


def free_name(base: str, taken: list[str]) -> str:
    """``base``, or ``base-2``, ``base-3`` ... whichever is not taken yet."""
    return next(n for n in (base, *(f"{base}-{i}" for i in range(2, 100))) if n not in taken)


class AdminWorkflows(App[None]):
    # Set up by the app (MailtuiApp.__init__).
    config: Config
    core: MailServer
    lifecycle: ServerLifecycle
    batch: Batcher

    async def admin_call(self, op: str, **args: Any) -> Any:
        """Run an admin verb; a refusal becomes a notification and None."""
        if not self._check_running():
            return None
        try:
            return await self.core.admin.call(op, args)
        except AdminError as exc:
            self.notify(str(exc), title="Not done", severity="error")
            return None

    def _check_running(self) -> bool:
        """Whether the server runs; says so on screen when it does not."""
        if not self.lifecycle.running:   # say what is true: still starting, stopped, or why it never ran
            why = {"starting": "The server is still starting.", "stopping": "The server is stopping.",
                   "stopped": "The server has stopped."}.get(self.lifecycle.phase)
            self.notify(why or self.lifecycle.problem or "The server is not running.", title="Not done",
                        severity="error")
        return self.lifecycle.running

    async def _ask_then_call(self, question: ConfirmDialog, op: str, args: dict[str, Any], done: str) -> None:
        """Ask ``question``; on yes, run the admin verb ``op`` and say ``done``."""
        if await self.push_screen_wait(question) and await self.admin_call(op, **args):
            self.notify(done)

    # -- clients ---------------------------------------------------------------------

    @on(ClientsPanel.AddClient)
    def _add_client(self) -> None:
        self.add_client()

    @on(ConnectionsPanel.Register)
    def _register_peer(self, message: ConnectionsPanel.Register) -> None:
        self.add_client(message.address)

    @work(group="admin", exit_on_error=False)
    async def add_client(self, address: str = "") -> None:
        """Register a client; with ``address`` (a refused peer), pre-filled for it."""
        if not self._check_running():
            return
        taken = [c.name for c in self.core.admin.registry.clients()]
        name, networks = "", []
        if address:
            network = parse_network(address)
            networks = [str(network)]
            name = free_name("host-" + str(network.network_address).replace(".", "-").replace(":", "-"), taken)
        result = await self.push_screen_wait(ClientForm(taken=taken, name=name, networks=networks))
        if result is None:
            return
        done = await self.admin_call("client_add", name=result.name, networks=list(result.networks),
                                     note=result.note)
        if done:
            self.notify(f"{done['name']} may now send from {', '.join(done['networks'])}",
                        title="Client registered")

    @on(ClientsPanel.EditClient)
    @work(group="admin", exit_on_error=False)
    async def edit_client(self, message: ClientsPanel.EditClient) -> None:
        client = self.core.admin.registry.get_client(message.name)
        if client is None:
            return
        taken = [c.name for c in self.core.admin.registry.clients()]
        result = await self.push_screen_wait(ClientForm(taken=taken, editing=client.name, networks=client.networks,
                                                        note=client.note))
        if result is None:
            return
        done = await self.admin_call("client_edit", name=client.name,
                                     new_name=result.name if result.name != client.name else None,
                                     networks=list(result.networks), note=result.note)
        if done:
            self.notify(f"{done['name']}: {', '.join(done['networks'])}", title="Client updated")

    @on(ClientsPanel.RemoveClient)
    @work(group="admin", exit_on_error=False)
    async def remove_client(self, message: ClientsPanel.RemoveClient) -> None:
        name = message.name
        question = ConfirmDialog("Remove client", f"Remove the client {name}? Its networks may no longer send "
                                 "mail (sessions that log in still can).", confirm="Remove")
        await self._ask_then_call(question, "client_remove", {"name": name}, f"client {name} removed")

    # -- mailboxes -------------------------------------------------------------------

    @on(ClientsPanel.AddMailbox)
    @work(group="admin", exit_on_error=False)
    async def add_mailbox(self) -> None:
        await self._save_mailbox()

    @on(ClientsPanel.SetPassword)
    @work(group="admin", exit_on_error=False)
    async def set_password(self, message: ClientsPanel.SetPassword) -> None:
        await self._save_mailbox(message.address)

    async def _save_mailbox(self, address: str = "") -> None:
        """Create a mailbox, or (with ``address``) set its password."""
        if not self._check_running():
            return
        taken = [m.address for m in self.core.admin.registry.mailboxes()]
        result = await self.push_screen_wait(MailboxForm(local_domains=self.config.server.local_domains,
                                                         taken=taken, address=address))
        if result is None:
            return
        # The server hashes with scrypt off the event loop.
        if await self.admin_call("mailbox_add", address=result.address, password=result.password,
                                 replace=bool(address)):
            self.notify(f"mailbox {result.address} {'updated' if address else 'created'}")

    @on(ClientsPanel.RemoveMailbox)
    @work(group="admin", exit_on_error=False)
    async def remove_mailbox(self, message: ClientsPanel.RemoveMailbox) -> None:
        address = message.address
        question = ConfirmDialog("Remove mailbox", f"Remove the mailbox {address}? Its login stops working; "
                                 "its messages stay on disk.", confirm="Remove")
        await self._ask_then_call(question, "mailbox_remove", {"address": address}, f"mailbox {address} removed")

    # -- the queue (each redraws it afterwards: a row may be gone, whatever the answer) --

    @on(QueuePanel.RetryAll)
    @work(group="admin", exit_on_error=False)
    async def retry_all(self) -> None:
        done = await self.admin_call("queue_flush")
        if done is not None:
            self.notify(f"{done['flushed']} message(s) due now")
        self.batch.mark("queue")

    @on(QueuePanel.Retry)
    @work(group="admin", exit_on_error=False)
    async def retry_message(self, message: QueuePanel.Retry) -> None:
        msg_id = message.msg_id
        done = await self.admin_call("queue_flush", msg_id=msg_id)
        if done is not None:
            self.notify(f"{msg_id}: trying again now" if done["flushed"]
                        else f"{msg_id} is being delivered right now")
        self.batch.mark("queue")

    @on(QueuePanel.Bounce)
    @work(group="admin", exit_on_error=False)
    async def bounce_message(self, message: QueuePanel.Bounce) -> None:
        msg_id = message.msg_id
        question = ConfirmDialog("Bounce message", f"Give up on {msg_id} now and send a bounce to its sender?",
                                 confirm="Bounce")
        await self._ask_then_call(question, "queue_bounce", {"msg_id": msg_id}, f"{msg_id} bounced")
        self.batch.mark("queue")

    @on(QueuePanel.Delete)
    @work(group="admin", exit_on_error=False)
    async def delete_message(self, message: QueuePanel.Delete) -> None:
        msg_id = message.msg_id
        question = ConfirmDialog("Delete message", f"Delete {msg_id} from the queue? No bounce is sent; "
                                 "the message is gone.", confirm="Delete")
        await self._ask_then_call(question, "queue_remove", {"msg_id": msg_id}, f"{msg_id} deleted")
        self.batch.mark("queue")

    @on(QueuePanel.View)
    @work(group="admin", exit_on_error=False)
    async def view_message(self, message: QueuePanel.View) -> None:
        shown = await self.admin_call("queue_show", msg_id=message.msg_id)
        if shown is not None:
            await self.push_screen_wait(MessageView(shown))
        self.batch.mark("queue")
