"""LiveTable: a keyboard-first table for live data, drawn with the Line API.

Only the rows on screen are rendered, so a redraw costs the same whether the
table holds ten rows or five hundred, and replacing the rows is one
assignment: the panels hand over their bounded lists a few times a second.
Columns that do not fit are dropped, least important first, and one flexible
column takes the width that is left, so nothing ever scrolls sideways.

A table can be filtered and sorted (:mod:`.view`); a table whose rows arrive
at the end (``tail``) follows them while its cursor is on the newest row, and
stops following (it is *paused*) when the cursor moves away. It says so with
a :class:`LiveTable.StateChanged` message, which the panel shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ....wire import printable
from .view import Cell, Column, Order, RowView

__all__ = ["Cell", "Column", "LiveTable", "TableState", "fit_columns"]

SORT_MARKS = {False: " ▲", True: " ▼"}


@dataclass(frozen=True)
class TableState:
    """What a table's panel shows about it: its filter, its order, whether it follows new rows."""

    filter: str = ""
    shown: int = 0
    total: int = 0
    sorted_by: str = ""      # the label of the sort column, "" in arrival order
    reverse: bool = False
    paused: bool = False     # new rows arrive, the cursor stays where it is

    def describe(self) -> str:
        """One line for people, "" when there is nothing to say."""
        parts = []
        if self.filter:
            parts.append(f"{self.shown} of {self.total} match")
        if self.sorted_by:
            parts.append(f"sorted by {self.sorted_by}{' (reversed)' if self.reverse else ''}")
        elif self.reverse:
            parts.append("newest first · S oldest first")
        if self.paused:
            parts.append("paused — End to follow" if not self.reverse else "paused — Home to follow")
        return " · ".join(parts)


def fit_columns(columns: Sequence[Column], width: int) -> list[tuple[Column, int]]:
    """The columns to show in ``width`` cells, with their widths."""
    shown = list(columns)

    def needed(cols: list[Column]) -> int:
        return 1 + sum(c.width + 1 for c in cols)

    while needed(shown) > width and any(c.drop for c in shown):
        shown.remove(max((c for c in shown if c.drop), key=lambda c: c.drop))
    spare = max(0, width - needed(shown))
    flexible = [c for c in shown if c.flex] or shown[-1:]
    share, extra = divmod(spare, len(flexible)) if flexible else (0, 0)
    fitted = []
    for column in shown:
        grow = 0
        if column in flexible:
            grow = share + (extra if column is flexible[0] else 0)
        fitted.append((column, column.width + grow))
    return fitted


class LiveTable(ScrollView, can_focus=True):
    """Rows of any objects; ``cells(row)`` maps column keys to text."""

    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        height: 1fr;
        &:focus { background-tint: $foreground 4%; }
        & > .live-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .live-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .live-table--empty { color: $text-muted; text-style: italic; }
    }
    """

    COMPONENT_CLASSES = {"live-table--header", "live-table--cursor", "live-table--empty"}

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
        Binding("s", "sort", "Sort", show=False),
        Binding("S", "reverse", "Reverse", show=False),
    ]

    class _RowMessage(Message):
        def __init__(self, table: "LiveTable", row: Any) -> None:
            super().__init__()
            self.table = table
            self.row = row

        @property
        def control(self) -> "LiveTable":
            return self.table

    class Highlighted(_RowMessage):
        """The cursor moved to another row (``row`` is None when the table is empty)."""

    class Selected(_RowMessage):
        """Enter or a double click on a row."""

    class StateChanged(Message):
        """The filter, the order or the following of new rows changed: see ``table.state``."""

        def __init__(self, table: "LiveTable") -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> "LiveTable":
            return self.table

    def __init__(self, columns: Sequence[Column], cells: Callable[[Any], dict[str, Cell]], *,
                 key: Callable[[Any], Any] = lambda row: row.key, tail: bool = False,
                 version: Callable[[Any], Hashable] | None = None,
                 empty: str = "Nothing yet", name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        """``version(row)`` names a row's content: rows drawn once are then reused while it is unchanged."""
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self._cells = cells
        self._key = key
        self._version = version
        self._drawn: LRUCache[tuple, Strip] = LRUCache(maxsize=1024)
        self.tail = tail              # new rows arrive at the end; the cursor follows them
        self.empty = empty
        self.view = RowView(self.columns, cells, version)
        self._source: Sequence[Any] = ()
        self._rows: Sequence[Any] = ()
        self.cursor = 0
        self._fitted: list[tuple[Column, int]] = []
        self._fitted_width = -1
        self._highlighted_key: Any = object()
        self._announced_state: TableState | None = None

    # -- data ------------------------------------------------------------------------

    @property
    def rows(self) -> Sequence[Any]:
        """The rows shown: those that match the filter, in order."""
        return self._rows

    @property
    def total(self) -> int:
        """Every row the table holds, shown or not."""
        return len(self._source)

    @property
    def cursor_row(self) -> Any:
        return self._rows[self.cursor] if 0 <= self.cursor < len(self._rows) else None

    @property
    def following(self) -> bool:
        """Whether new rows will take the cursor: a tail table in arrival order, on its newest row."""
        if not self.tail or self.view.order.column is not None:
            return False
        newest = 0 if self.view.order.reverse else len(self._rows) - 1
        return not self._rows or self.cursor == newest

    @property
    def state(self) -> TableState:
        order = self.view.order
        column = self.view.columns.get(order.column or "")
        needle = self.view.filter.strip()
        return TableState(filter=needle, shown=len(self._rows) if needle else 0,
                          total=len(self._source) if needle else 0, sorted_by=column.label if column else "", reverse=order.reverse,
                          paused=self.tail and column is None and bool(self._rows) and not self.following)

    def set_rows(self, rows: Sequence[Any]) -> None:
        """Show ``rows``; the cursor stays on its row (or on the newest one, while it follows them)."""
        self._source = rows
        self._show(self.view.apply(rows))

    def reapply(self) -> None:
        """Filter and sort the rows again (their cells changed, not the rows)."""
        self._show(self.view.apply(self._source))

    @property
    def filter(self) -> str:
        return self.view.filter

    @filter.setter
    def filter(self, text: str) -> None:
        if text != self.view.filter:
            self.view.filter = text
            self.reapply()

    @property
    def order(self) -> Order:
        return self.view.order

    @order.setter
    def order(self, order: Order) -> None:
        if order != self.view.order:
            self.view.order = order
            self._drawn.clear()   # the header's mark moves
            self._show(self.view.apply(self._source), follow=self.tail and order.column is None)

    def _show(self, rows: Sequence[Any], follow: bool | None = None) -> None:
        following = self.following if follow is None else follow
        current = self.cursor_row
        self._rows = rows
        self._resize_virtual()
        if not rows:
            self.cursor = 0
        elif following:
            self.cursor = 0 if self.view.order.reverse else len(rows) - 1
        elif current is not None:
            key = self._key(current)
            index = next((i for i, row in enumerate(rows) if self._key(row) == key), None)
            if index is None:
                self.cursor = min(self.cursor, len(rows) - 1)
            else:
                shift = index - self.cursor
                self.cursor = index
                if shift:  # rows came or went above: keep the view where it was
                    self.scroll_to(y=self.scroll_y + shift, animate=False)
        self._scroll_to_cursor()
        self.refresh()
        self._announce()

    def select_key(self, key: Any) -> bool:
        """Put the cursor on the row with ``key``."""
        for index, row in enumerate(self._rows):
            if self._key(row) == key:
                self._move(index)
                return True
        return False

    def _announce(self) -> None:
        row = self.cursor_row
        key = None if row is None else self._key(row)
        if key != self._highlighted_key:
            self._highlighted_key = key
            self.post_message(self.Highlighted(self, row))
        state = self.state
        if state != self._announced_state:
            self._announced_state = state
            self.post_message(self.StateChanged(self))

    # -- geometry --------------------------------------------------------------------

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(self.size.width, len(self._rows) + 1)

    def on_resize(self, event: events.Resize) -> None:
        self._resize_virtual()
        self._scroll_to_cursor()

    @property
    def _page(self) -> int:
        return max(1, self.size.height - 1)

    def _scroll_to_cursor(self) -> None:
        if self.size.height <= 1:
            return
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self._page:
            self.scroll_to(y=self.cursor - self._page + 1, animate=False)

    def _move(self, index: int) -> None:
        if not self._rows:
            return
        self.cursor = max(0, min(len(self._rows) - 1, index))
        self._scroll_to_cursor()
        self.refresh()
        self._announce()

    # -- input -----------------------------------------------------------------------

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_page_up(self) -> None:
        self._move(self.cursor - self._page)

    def action_page_down(self) -> None:
        self._move(self.cursor + self._page)

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._rows) - 1)

    def action_select(self) -> None:
        if self.cursor_row is not None:
            self.post_message(self.Selected(self, self.cursor_row))

    def action_sort(self) -> None:
        """Sort by the next column on screen; after the last, back to the order of arrival."""
        keys = [column.key for column, _ in self._columns(self.size.width)]
        self.order = Order(self.order.next_column(keys).column, reverse=False)

    def action_reverse(self) -> None:
        self.order = Order(self.order.column, reverse=not self.order.reverse)

    def _column_at(self, x: int) -> Column | None:
        left = 1
        for column, width in self._columns(self.size.width):
            if left <= x < left + width + 1:
                return column
            left += width + 1
        return None

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:   # a header: sort by it, then reversed, then back to arrival order
            column = self._column_at(offset.x)
            if column is not None:
                order = self.order
                if order.column != column.key:
                    self.order = Order(column.key)
                else:
                    self.order = Order(column.key, reverse=True) if not order.reverse else Order()
            return
        index = round(self.scroll_y) + offset.y - 1
        if 0 <= index < len(self._rows):
            self._move(index)
            if event.chain >= 2:
                self.post_message(self.Selected(self, self.cursor_row))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # -- drawing ---------------------------------------------------------------------

    def _columns(self, width: int) -> list[tuple[Column, int]]:
        if width != self._fitted_width:
            self._drawn.clear()
            self._fitted = fit_columns(self.columns, width)
            self._fitted_width = width
        return self._fitted

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        """``text`` as one line of ``width`` cells, on ``style`` (the cells' own colours win)."""
        text.truncate(width, overflow="crop", pad=True)
        return Strip(text.render(self.app.console), width).apply_style(style)

    def _line(self, cells: dict[str, Cell], width: int, style: Style) -> Strip:
        line = Text(" ", no_wrap=True, end="")
        for column, cell_width in self._columns(width):
            value = cells.get(column.key, "")
            cell = value.copy() if isinstance(value, Text) else Text(printable(str(value)))
            cell.truncate(cell_width, overflow="ellipsis")
            cell.align(column.justify, cell_width)  # type: ignore[arg-type]
            line.append_text(cell)
            line.append(" ")
        return self._strip(line, width, style)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y == 0:
            order = self.view.order
            header = {c.key: c.label for c in self.columns}
            for column, cell_width in self._columns(width):
                if column.key == order.column:   # the mark stays whole, the label gives way
                    mark = SORT_MARKS[order.reverse]
                    header[column.key] = column.label[:max(0, cell_width - len(mark))] + mark
            return self._line(header, width, base + self.get_component_rich_style("live-table--header"))
        index = round(self.scroll_y) + y - 1
        if not self._rows:
            if y == 2:
                text = Text(self.empty, end="")
                text.truncate(width, overflow="ellipsis")
                text.align("center", width)
                return self._strip(text, width, base + self.get_component_rich_style("live-table--empty"))
            return Strip.blank(width, base)
        if index >= len(self._rows):
            return Strip.blank(width, base)
        style = base
        if index == self.cursor:
            style = base + self.get_component_rich_style("live-table--cursor")
        row = self._rows[index]
        if self._version is None:
            return self._line(self._cells(row), width, style)
        cache_key = (self._version(row), width)
        strip = self._drawn.get(cache_key)
        if strip is None:
            strip = self._drawn[cache_key] = self._line(self._cells(row), width, Style())
        return strip.apply_style(style)
