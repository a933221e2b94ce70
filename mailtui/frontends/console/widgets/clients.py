"""Registered clients (networks allowed to send) and mailboxes (accounts)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Static

from ....admin.registry import Client
from ....wire import printable
from .table import Cell, Column, LiveTable


@dataclass(frozen=True)
class MailboxRow:
    """A mailbox with the count of messages waiting in it (None while it is being counted)."""

    address: str
    messages: int | None = None


def client_cells(row: Client) -> dict[str, Cell]:
    return {"name": Text(row.name, style="bold"), "networks": ", ".join(row.networks),
            "note": Text(printable(row.note), style="dim")}


def mailbox_cells(row: MailboxRow) -> dict[str, Cell]:
    return {"address": row.address, "messages": "…" if row.messages is None else str(row.messages)}


def client_detail(row: Client | MailboxRow | None) -> Text:
    if isinstance(row, Client):
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.created)) if row.created else "?"
        text = Text.assemble((row.name, "bold"), f" · {', '.join(row.networks)} · registered {since}")
        if row.note:
            text.append(f" · {printable(row.note)}", style="dim")
        text.append("\nSessions from these networks may send mail to any domain.", style="dim")
        return text
    if isinstance(row, MailboxRow):
        waiting = "…" if row.messages is None else str(row.messages)
        return Text.assemble((row.address, "bold"), f" · {waiting} message(s) waiting for POP3",
                             ("\nIts owner logs in with this address to read mail (POP3) and to send it (SMTP AUTH).",
                              "dim"))
    return Text("Mail is taken only from registered networks and from sessions that log in as a mailbox.",
                style="dim")


class ClientsPanel(Vertical):
    BINDINGS = [
        Binding("a", "add_client", "Add client"),
        Binding("m", "add_mailbox", "Add mailbox"),
    ]

    class AddClient(Message):
        """Register a new client."""

    @dataclass
    class EditClient(Message):
        """Edit the registered client ``name``."""

        name: str

    @dataclass
    class RemoveClient(Message):
        """Remove the registered client ``name``."""

        name: str

    class AddMailbox(Message):
        """Create a mailbox."""

    @dataclass
    class SetPassword(Message):
        """Set a new password for the mailbox ``address``."""

        address: str

    @dataclass
    class RemoveMailbox(Message):
        """Remove the mailbox ``address`` (its messages stay on disk)."""

        address: str

    def compose(self) -> ComposeResult:
        with Horizontal(id="clients-columns"):
            yield from self._tables()
        yield Static(client_detail(None), id="clients-detail", classes="detail")

    def _tables(self) -> ComposeResult:
        clients = ClientTable(
            (Column("name", "Name", 14), Column("networks", "Networks", 20, flex=True),
             Column("note", "Note", 12, flex=True, drop=1)),
            client_cells, key=lambda client: client.name,
            empty="No clients: only logged-in sessions may send (a: add)", id="clients-table")
        clients.border_title = "Registered clients"
        yield clients
        mailboxes = MailboxTable(
            (Column("address", "Address", 22, flex=True), Column("messages", "Messages", 8, justify="right")),
            mailbox_cells, key=lambda mailbox: mailbox.address, empty="No mailboxes (m: add)",
            id="mailboxes-table")
        mailboxes.border_title = "Mailboxes"
        yield mailboxes

    def show(self, clients: Sequence[Client], mailboxes: Sequence[MailboxRow]) -> None:
        client_table = self.query_one(ClientTable)
        client_table.set_rows(clients)
        client_table.border_title = f"Registered clients ({len(clients)})"
        mailbox_table = self.query_one(MailboxTable)
        mailbox_table.set_rows(mailboxes)
        mailbox_table.border_title = f"Mailboxes ({len(mailboxes)})"
        self._detail()

    def _detail(self) -> None:
        focused = self.screen.focused if self.is_mounted else None
        table = focused if isinstance(focused, _RowActions) else self.query_one(ClientTable)
        self.query_one("#clients-detail", Static).update(client_detail(table.cursor_row), layout=False)

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self._detail()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._detail()

    def action_add_client(self) -> None:
        self.post_message(self.AddClient())

    def action_add_mailbox(self) -> None:
        self.post_message(self.AddMailbox())



class _RowActions(LiveTable):
    """A table whose own bindings act on the row under the cursor (greyed out when there is none)."""

    ROW_ACTIONS: ClassVar[tuple[str, ...]] = ()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ROW_ACTIONS:
            return True if self.cursor_row is not None else None
        return True

    def _post(self, message: Callable[[str], Message]) -> None:
        if self.cursor_row is not None:
            self.post_message(message(self._key(self.cursor_row)))

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self.refresh_bindings()


class ClientTable(_RowActions):
    ROW_ACTIONS = ("edit", "remove")
    BINDINGS = [
        Binding("e", "edit", "Edit"),
        Binding("d,delete", "remove", "Remove"),
    ]

    def action_edit(self) -> None:
        self._post(ClientsPanel.EditClient)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        event.stop()
        self.post_message(ClientsPanel.EditClient(event.row.name))

    def action_remove(self) -> None:
        self._post(ClientsPanel.RemoveClient)


class MailboxTable(_RowActions):
    ROW_ACTIONS = ("set_password", "remove")
    BINDINGS = [
        Binding("p", "set_password", "Set password"),
        Binding("d,delete", "remove", "Remove"),
    ]

    def action_set_password(self) -> None:
        self._post(ClientsPanel.SetPassword)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        event.stop()
        self.post_message(ClientsPanel.SetPassword(event.row.address))

    def action_remove(self) -> None:
        self._post(ClientsPanel.RemoveMailbox)
