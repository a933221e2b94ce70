"""Registered clients (networks allowed to send) and mailboxes (accounts)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Static

from ....wire import printable
from .table import Cell, Column, LiveTable


@dataclass(frozen=True)
class ClientRow:
    key: str
    networks: tuple[str, ...]
    note: str = ""
    created: float = 0.0

    @property
    def name(self) -> str:
        return self.key


@dataclass(frozen=True)
class MailboxRow:
    key: str                  # the address
    messages: int | None = None

    @property
    def address(self) -> str:
        return self.key


def client_cells(row: ClientRow) -> dict[str, Cell]:
    return {"name": Text(row.name, style="bold"), "networks": ", ".join(row.networks),
            "note": Text(printable(row.note), style="dim")}


def mailbox_cells(row: MailboxRow) -> dict[str, Cell]:
    return {"address": row.address, "messages": "…" if row.messages is None else str(row.messages)}


def client_detail(row: ClientRow | MailboxRow | None) -> Text:
    if isinstance(row, ClientRow):
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
        Binding("a", "request('add_client')", "Add client"),
        Binding("m", "request('add_mailbox')", "Add mailbox"),
    ]

    class ActionRequested(Message):
        """add_client, edit_client, remove_client, add_mailbox, set_password or remove_mailbox."""

        def __init__(self, action: str, target: str = "") -> None:
            super().__init__()
            self.action = action
            self.target = target

    def compose(self) -> ComposeResult:
        with Horizontal(id="clients-columns"):
            yield from self._tables()
        yield Static(client_detail(None), id="clients-detail", classes="detail")

    def _tables(self) -> ComposeResult:
        clients = ClientTable(
            (Column("name", "Name", 14), Column("networks", "Networks", 20, flex=True),
             Column("note", "Note", 12, flex=True, drop=1)),
            client_cells, empty="No clients: only logged-in sessions may send (a: add)",
            id="clients-table")
        clients.border_title = "Registered clients"
        yield clients
        mailboxes = MailboxTable(
            (Column("address", "Address", 22, flex=True), Column("messages", "Messages", 8, justify="right")),
            mailbox_cells, empty="No mailboxes (m: add)", id="mailboxes-table")
        mailboxes.border_title = "Mailboxes"
        yield mailboxes

    def show(self, clients: Sequence[ClientRow], mailboxes: Sequence[MailboxRow]) -> None:
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

    def action_request(self, action: str) -> None:
        self.post_message(self.ActionRequested(action))


class _RowActions(LiveTable):
    """A table whose bindings act on the row under the cursor."""

    SELECT_ACTION = ""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "request":
            return True if self.cursor_row is not None else None
        return True

    def action_request(self, action: str) -> None:
        if self.cursor_row is not None:
            self.post_message(ClientsPanel.ActionRequested(action, self.cursor_row.key))

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self.refresh_bindings()

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        event.stop()
        self.post_message(ClientsPanel.ActionRequested(self.SELECT_ACTION, event.row.key))


class ClientTable(_RowActions):
    SELECT_ACTION = "edit_client"
    BINDINGS = [
        Binding("e", "request('edit_client')", "Edit"),
        Binding("d,delete", "request('remove_client')", "Remove"),
    ]


class MailboxTable(_RowActions):
    SELECT_ACTION = "set_password"
    BINDINGS = [
        Binding("p", "request('set_password')", "Set password"),
        Binding("d,delete", "request('remove_mailbox')", "Remove"),
    ]
