"""The detail view: everything about one row, wrapped and scrolling, read only.

Enter on a row of any panel opens it; the panel says what to show in a
:class:`Detail`. ``y`` copies the row's ID or address (OSC 52, through the
terminal, so it works over SSH too); a key the panel offers (e.g. ``e`` edit)
closes the view with that key as its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static


@dataclass(frozen=True)
class Detail:
    """What the detail view shows of one row."""

    title: str
    fields: Sequence[tuple[str, str | Text]]
    copy: tuple[str, str] | None = None                         # (what, value): ``y`` copies the value
    actions: Sequence[tuple[str, str]] = field(default=())      # (key, what it does): closes with the key


def copy_to_clipboard(node: DOMNode, what: str, value: str) -> None:
    """Copy ``value`` to the terminal's clipboard and say so."""
    node.app.copy_to_clipboard(value)
    node.notify(f"Copied {what}: {value}", timeout=3, markup=False)


def fields_table(fields: Sequence[tuple[str, str | Text]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in fields:
        table.add_row(label, value if isinstance(value, Text) else Text(value))
    return table


class DetailView(ModalScreen[str | None]):
    BINDINGS = [
        Binding("escape,q,enter", "dismiss", "Close"),
        Binding("y", "copy", "Copy"),
    ]

    def __init__(self, detail: Detail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        detail = self.detail
        with Vertical(classes="dialog wide", id="detail-dialog"):
            yield Label(detail.title, classes="dialog-title", markup=False)
            with VerticalScroll(id="detail-body"):
                yield Static(fields_table(detail.fields))
                keys = [f"{key} {what}" for key, what in detail.actions]
                if detail.copy:
                    keys.append(f"y copy the {detail.copy[0]}")
                yield Static(" · ".join([*keys, "Esc close"]), classes="dialog-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-body").focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.detail.copy is not None if action == "copy" else True

    def action_copy(self) -> None:
        if self.detail.copy:
            copy_to_clipboard(self, *self.detail.copy)

    def on_key(self, event) -> None:
        if any(event.key == key for key, _ in self.detail.actions):
            event.stop()
            self.dismiss(event.key)
