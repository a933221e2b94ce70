"""The line under a table: its filter as you type it, and what the table is doing.

Hidden while there is nothing to say. It shows the filter being typed (or
kept), how many rows match, the order, and "paused — End to follow" when a
live table has stopped following new rows. It edits nothing itself: it posts
what was typed, and the panel filters its table (attributes down, messages up).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Static

from .table import TableState


class FilterBar(Horizontal):
    DEFAULT_CSS = """
    FilterBar {
        height: 1;
        display: none;
        background: $panel;
        padding: 0 1;
        &.-on { display: block; }
        & > Label { width: auto; color: $text-muted; display: none; }
        & > Input { width: 1fr; display: none; background: $panel; }
        & > Input:focus { background: $primary 15%; }
        &.-filtering > Label, &.-filtering > Input { display: block; }
        & > #filter-state { width: auto; color: $text-warning; text-wrap: nowrap; text-overflow: ellipsis; }
        &.-filtering > #filter-state { max-width: 60%; margin-left: 2; }
    }
    """

    @dataclass
    class Changed(Message):
        """The filter typed so far."""

        value: str

    class Done(Message):
        """Enter in the filter: keep it and go back to the table."""

    def __init__(self) -> None:
        super().__init__(classes="filter-bar")
        self._state = TableState()

    def compose(self) -> ComposeResult:
        yield Label("filter: ")
        yield Input(placeholder="type to narrow the rows · Enter keeps it · Esc clears it", compact=True)
        yield Static(id="filter-state", markup=False)

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def editing(self) -> bool:
        return self.input.has_focus

    def edit(self, text: str) -> None:
        """Show the filter field with ``text`` in it, and type there."""
        self.input.value = text
        self.input.cursor_position = len(text)
        self.add_class("-filtering")
        self._update()
        self.input.focus()

    def show_state(self, state: TableState) -> None:
        """Show what the table does now; the field stays open while a filter is on or being typed."""
        self._state = state
        if not self.editing:
            if self.input.value != state.filter:   # another table's filter: the bar follows the focus
                with self.input.prevent(Input.Changed):
                    self.input.value = state.filter
            self.set_class(bool(state.filter), "-filtering")
        self._update()

    def close(self) -> None:
        self.input.value = ""
        self.remove_class("-filtering")
        self._update()

    def _update(self) -> None:
        text = self._state.describe()
        self.query_one("#filter-state", Static).update(text)
        self.set_class(bool(text) or self.has_class("-filtering"), "-on")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            self.remove_class("-filtering")
            self._update()
        self.post_message(self.Done())
