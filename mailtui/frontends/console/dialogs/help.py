"""The help screen: every key, by panel, and where this server keeps its things."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

KEYS = (
    ("Panels", "1 Connections · 2 Clients · 3 DNS · 4 Queue · 5 Log · Tab / Shift+Tab move the focus"),
    ("Anywhere", "? help · Ctrl+P command palette · t light/dark theme · q quit (asks first when this console runs the server) · Ctrl+Q quit at once"),
    ("Tables", "↑ ↓ or j k · PgUp PgDn · Home End (g G) · click, double-click, wheel · "
               "End follows new rows again"),
    ("", "Enter details of the row · y copy its ID or address · / filter (Esc clears) · "
         "s sort by the next column, S reverse (or click a header)"),
    ("Connections", "r register the selected address as a client · f refused sessions only"),
    ("Clients", "a add a client · e edit · d remove · m add a mailbox · p set its password"),
    ("DNS", "c hide answers served from the cache · r the records to publish, checked now"),
    ("Queue", "r retry now · R retry all · b bounce to the sender · d delete · v or Enter view"),
    ("Log", "Enter shows a line in full, with the event's fields"),
    ("Forms", "Tab next field · Enter next or save · Ctrl+S save · Esc cancel"),
)


def help_table(about: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for section, keys in KEYS:
        table.add_row(section, keys)
    table.add_row("", "")
    for label, value in about:
        table.add_row(Text(label, style="dim"), Text(value))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, about: list[tuple[str, str]]) -> None:
        super().__init__()
        self.about = about

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="help-dialog"):
            yield Label("mailtui — keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(help_table(self.about))
        yield Footer()
