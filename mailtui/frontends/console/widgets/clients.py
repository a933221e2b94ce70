"""Registered clients (networks allowed to send) and mailboxes (accounts)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message

from ....admin.registry import Client
from ....server.stats import Figures
from ....wire import printable
from ..dialogs.detail import Detail
from ..keys import expect_dialog
from .filter import FilterBar
from .panel import DetailPane, TablePanel, table_bindings
from .table import Cell, Column, LiveTable


@dataclass(frozen=True)
class MailboxRow:
    """A mailbox with the count of messages waiting in it (None while it is being counted)."""

    address: str
    messages: int | None = None


class FiguresView(Protocol):
    """The server's figures per registered client and per login (:class:`~mailtui.server.stats.Totals`)."""

    @property
    def clients(self) -> Mapping[str, Figures]: ...
    @property
    def logins(self) -> Mapping[str, Figures]: ...


NO_FIGURES = Figures()


def ago(at: float, now: float) -> str:
    if not at:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def figures_cells(figures: Figures, now: float) -> dict[str, Cell]:
    return {"accepted": str(figures.accepted),
            "refused": Text(str(figures.refused), style="red" if figures.refused else ""),
            "seen": Text(ago(figures.last_seen, now), style="" if figures.last_seen else "dim")}


def figures_text(figures: Figures, now: float, since: str) -> str:
    return (f"{figures.accepted} accepted, {figures.refused} refused {since}; "
            f"last seen {ago(figures.last_seen, now)}")


def client_detail(row: Client | MailboxRow | None, figures: Figures = NO_FIGURES, now: float = 0.0) -> Text:
    if isinstance(row, Client):
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.created)) if row.created else "?"
        text = Text.assemble((row.name, "bold"), f" · {', '.join(row.networks)} · registered {since}")
        if row.note:
            text.append(f" · {printable(row.note)}", style="dim")
        text.append(f"\n{figures_text(figures, now, 'since the server started')}")
        text.append("\nSessions from these networks may send mail to any domain.", style="dim")
        return text
    if isinstance(row, MailboxRow):
        waiting = "…" if row.messages is None else str(row.messages)
        return Text.assemble((row.address, "bold"), f" · {waiting} message(s) waiting for POP3",
                             f"\nSent when logged in: {figures_text(figures, now, 'since the server started')}",
                             ("\nIts owner logs in with this address to read mail (POP3) and to send it (SMTP AUTH).",
                              "dim"))
    return Text("Mail is taken only from registered networks and from sessions that log in as a mailbox.",
                style="dim")


class ClientsPanel(TablePanel):
    BINDINGS = [
        Binding("a", "add_client", "Add client"),
        Binding("m", "add_mailbox", "Add mailbox"),
        *table_bindings(filter_in_footer=False),   # the footer is full here at 80 columns
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

    def __init__(self, clock: Callable[[], float] = time.time, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.figures: FiguresView | None = None   # the server's, live: redrawn every second while shown

    def compose(self) -> ComposeResult:
        with Horizontal(id="clients-columns"):
            yield from self._tables()
        yield FilterBar()
        yield DetailPane(client_detail(None), id="clients-detail")

    def _tables(self) -> ComposeResult:
        by_client, by_login = self.client_figures, self.login_figures
        clients = ClientTable(
            (Column("name", "Name", 14), Column("networks", "Networks", 16, flex=True),
             *self._figure_columns(by_client), Column("note", "Note", 12, flex=True, drop=2)),
            lambda row: {"name": Text(row.name, style="bold"), "networks": ", ".join(row.networks),
                         "note": Text(printable(row.note), style="dim"),
                         **figures_cells(by_client(row), self.clock())},
            key=lambda client: client.name,
            empty="No clients: only logged-in sessions may send (a: add)", id="clients-table")
        clients.border_title = "Registered clients"
        yield clients
        mailboxes = MailboxTable(
            (Column("address", "Address", 22, flex=True),
             Column("messages", "Waiting", 7, justify="right", sort=lambda row: row.messages or 0),
             *self._figure_columns(by_login)[::2]),   # accepted and last seen
            lambda row: {"address": row.address, "messages": "…" if row.messages is None else str(row.messages),
                         **figures_cells(by_login(row), self.clock())},
            key=lambda mailbox: mailbox.address, empty="No mailboxes (m: add)", id="mailboxes-table")
        mailboxes.border_title = "Mailboxes"
        yield mailboxes

    @staticmethod
    def _figure_columns(figures: Callable[[Any], Figures]) -> tuple[Column, ...]:
        return (Column("accepted", "Accepted", 8, justify="right", sort=lambda row: figures(row).accepted),
                Column("refused", "Refused", 7, justify="right", sort=lambda row: figures(row).refused),
                Column("seen", "Last seen", 9, justify="right", drop=1, sort=lambda row: -figures(row).last_seen))

    def client_figures(self, row: Client) -> Figures:
        return self.figures.clients.get(row.name, NO_FIGURES) if self.figures is not None else NO_FIGURES

    def login_figures(self, row: MailboxRow) -> Figures:
        return self.figures.logins.get(row.address, NO_FIGURES) if self.figures is not None else NO_FIGURES

    def show(self, clients: Sequence[Client], mailboxes: Sequence[MailboxRow],
             figures: FiguresView | None = None) -> None:
        if figures is not None:
            self.figures = figures
        self.query_one(ClientTable).set_rows(clients)
        self.query_one(MailboxTable).set_rows(mailboxes)
        self._titles()
        self._detail()

    def _titles(self) -> None:
        for table, title in ((self.query_one(ClientTable), "Registered clients"),
                             (self.query_one(MailboxTable), "Mailboxes")):
            count = f"{len(table.rows)} of {table.total}" if table.filter.strip() else str(table.total)
            table.border_title = f"{title} ({count})"

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick, name="clients-figures")

    def _tick(self) -> None:
        """The figures move with the mail: redraw them (and keep their order) while they are on screen."""
        # (not while the console closes: its children go first, and this timer may come in between)
        if self.figures is not None and self.is_on_screen and self.display:
            for table in self.query(LiveTable):
                if table.order.column is None:
                    table.refresh()
                else:
                    table.reapply()
            self._detail()

    def _detail(self) -> None:
        table = self.current
        row = table.cursor_row
        figures = self.client_figures(row) if isinstance(row, Client) else \
            self.login_figures(row) if isinstance(row, MailboxRow) else NO_FIGURES
        self.query_one(DetailPane).show(client_detail(row, figures, self.clock()))

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self._detail()

    def on_live_table_state_changed(self, event: LiveTable.StateChanged) -> None:
        self._titles()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._detail()

    def detail(self, table: LiveTable, row: Client | MailboxRow) -> Detail:
        now = self.clock()
        if isinstance(row, Client):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.created)) if row.created else "?"
            return Detail(f"Client {row.name}", [
                ("Networks", "\n".join(row.networks)), ("Note", printable(row.note) or "—"),
                ("Registered", created), ("Figures", figures_text(self.client_figures(row), now, "since start"))],
                copy=("name", row.name), actions=[("e", "edit"), ("d", "remove")])
        waiting = "being counted" if row.messages is None else str(row.messages)
        return Detail(f"Mailbox {row.address}", [
            ("Waiting", f"{waiting} message(s) for POP3"),
            ("Sent", figures_text(self.login_figures(row), now, "when logged in, since start"))],
            copy=("address", row.address), actions=[("p", "set its password"), ("d", "remove")])

    def detail_action(self, table: LiveTable, row: Client | MailboxRow, key: str) -> None:
        expect_dialog(self)
        if isinstance(row, Client):
            self.post_message(self.EditClient(row.name) if key == "e" else self.RemoveClient(row.name))
        else:
            self.post_message(self.SetPassword(row.address) if key == "p" else self.RemoveMailbox(row.address))

    def copy_value(self, table: LiveTable, row: Client | MailboxRow) -> tuple[str, str]:
        return ("name", row.name) if isinstance(row, Client) else ("address", row.address)

    def action_add_client(self) -> None:
        expect_dialog(self)
        self.post_message(self.AddClient())

    def action_add_mailbox(self) -> None:
        expect_dialog(self)
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
            expect_dialog(self)
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

    def action_remove(self) -> None:
        self._post(ClientsPanel.RemoveMailbox)
