"""What every panel does with its tables: filter, open a row, copy its ID or address.

A panel holds one table or two (Clients) and a :class:`~.filter.FilterBar`.
``/`` filters the table that has (or last had) the focus, Esc clears the
filter, Enter opens the row under the cursor in a detail view, ``y`` copies
the row's ID or address. Each panel says what a row's detail and copy are.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from ..dialogs.detail import Detail, DetailView, copy_to_clipboard
from ..keys import expect_dialog
from .filter import FilterBar
from .table import LiveTable


class DetailPane(VerticalScroll, can_focus=False):
    """The lines under a table about the row under the cursor: as tall as they need, up to a
    limit, then they scroll (the mouse wheel; Enter shows everything in a dialog)."""

    DEFAULT_CSS = """
    DetailPane {
        height: auto;
        min-height: 4;
        max-height: 8;
        scrollbar-size-vertical: 1;
        padding: 0 1;
        background: $boost;
        border-top: hkey $foreground 15%;
        color: $foreground;
        & > Static { height: auto; }
    }
    """

    def __init__(self, text: Text, *, id: str | None = None) -> None:
        super().__init__()
        self._text = text
        self._static_id = id
        self._height = -1

    def compose(self) -> ComposeResult:
        yield Static(self._text, id=self._static_id)

    def show(self, text: Text) -> None:
        """Show ``text``; the screen's layout is redone only when its height changes (a few times a
        second, the cursor following new rows, it mostly does not)."""
        if text == self._text:
            return
        self._text = text
        width = self.scrollable_content_region.width
        height = len(text.wrap(self.app.console, width)) if width > 0 else -1
        self.query_one(Static).update(text, layout=height != self._height or height < 0)
        self._height = height


def table_bindings(*, filter_in_footer: bool = True) -> list[Binding]:
    """The keys of every panel; each lists them after its own, so the footer shows its own first
    (a base class's bindings would come first)."""
    return [
        Binding("slash", "filter", "Filter", show=filter_in_footer),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("y", "copy", "Copy", show=False),
    ]


class TablePanel(Vertical):
    """Subclasses add ``*table_bindings()`` to their own ``BINDINGS``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._current: LiveTable | None = None

    # -- what each panel says about its rows -------------------------------------------

    def detail(self, table: LiveTable, row: Any) -> Detail | None:
        """What Enter shows of ``row``."""
        return None

    def copy_value(self, table: LiveTable, row: Any) -> tuple[str, str] | None:
        """(what, value): what ``y`` copies of ``row``."""
        return None

    def detail_action(self, table: LiveTable, row: Any, key: str) -> None:
        """The detail view of ``row`` was closed with ``key``, one of its actions."""

    # -- the table in use ----------------------------------------------------------------

    @property
    def current(self) -> LiveTable:
        """The table that has the focus, or had it last."""
        if self._current is None:
            self._current = self.query(LiveTable).first()
        return self._current

    @property
    def bar(self) -> FilterBar:
        return self.query_one(FilterBar)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, LiveTable) and event.widget is not self._current:
            self._current = event.widget
            self.bar.show_state(event.widget.state)

    def on_live_table_state_changed(self, event: LiveTable.StateChanged) -> None:
        if event.table is self.current:
            self.bar.show_state(event.table.state)

    # -- filter ------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.bar.edit(self.current.filter)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":   # otherwise Esc goes on to whoever else wants it
            return bool(self.current.filter) or self.bar.editing
        return True

    def action_clear_filter(self) -> None:
        self.bar.close()
        self.current.filter = ""
        self.current.focus()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.current.filter = event.value

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        self.current.focus()

    # -- a row ---------------------------------------------------------------------------------

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        detail = self.detail(event.table, event.row)
        if detail is None:
            return
        event.stop()
        expect_dialog(self)
        table, row = event.table, event.row

        def closed(key: str | None) -> None:
            if key:
                self.detail_action(table, row, key)

        self.app.push_screen(DetailView(detail), closed)

    def action_copy(self) -> None:
        table = self.current
        row = table.cursor_row
        value = None if row is None else self.copy_value(table, row)
        if value is None:
            self.notify("Select a row first.", timeout=3)
        else:
            copy_to_clipboard(self, *value)
