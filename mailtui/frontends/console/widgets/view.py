"""Which rows a table shows, and in what order: its filter and its sort.

Plain Python (the Textual widget is :mod:`.table`), so the rules are tested
without a screen. A filter is a substring of any cell, in any case, hidden
columns included; a sort is by one column, ascending or descending, and
stable, so rows that tie keep their order of arrival. The text each row is
searched in is kept by the row's version, so filtering a live table a few
times a second redoes only the rows that changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from rich.text import Text
from textual.cache import LRUCache

Cell = str | Text


def plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int               # its width, or the least it gets when flexible
    flex: bool = False       # takes the width the other columns leave
    drop: int = 0            # 0: always shown; when narrow, the highest drops first
    justify: str = "left"
    sort: Callable[[Any], Any] | None = None   # the value to sort by (default: the cell's text)


@dataclass(frozen=True)
class Order:
    """Sorted by ``column`` (None: in the order the rows came), maybe reversed."""

    column: str | None = None
    reverse: bool = False

    def next_column(self, keys: Sequence[str]) -> "Order":
        """The next column of ``keys`` to sort by, after the last one back to arrival order."""
        if not keys:
            return Order()
        if self.column not in keys:
            return Order(keys[0])
        index = keys.index(self.column) + 1
        return Order(keys[index]) if index < len(keys) else Order()


class RowView:
    """``cells(row)`` gives a row's cells by column key; ``version(row)`` names its content, if it can."""

    def __init__(self, columns: Sequence[Column], cells: Callable[[Any], dict[str, Cell]],
                 version: Callable[[Any], Hashable] | None = None) -> None:
        self.columns = {column.key: column for column in columns}
        self._cells = cells
        self._version = version
        self._haystacks: LRUCache[Hashable, str] = LRUCache(maxsize=2048)
        self.filter = ""
        self.order = Order()

    def haystack(self, row: Any) -> str:
        """Every cell of ``row``, lower case, in one string."""
        if self._version is None:
            return self._haystack(row)
        key = self._version(row)
        found = self._haystacks.get(key)
        if found is None:
            found = self._haystacks[key] = self._haystack(row)
        return found

    def _haystack(self, row: Any) -> str:
        return "\t".join(plain(cell) for cell in self._cells(row).values()).lower()

    def sort_value(self, row: Any, key: str) -> Any:
        column = self.columns[key]
        if column.sort is not None:
            return column.sort(row)
        return plain(self._cells(row).get(key, "")).lower()

    def apply(self, rows: Sequence[Any]) -> Sequence[Any]:
        """``rows`` as shown: those that match the filter, in order."""
        needle = self.filter.strip().lower()
        shown = [row for row in rows if needle in self.haystack(row)] if needle else rows
        column, reverse = self.order.column, self.order.reverse
        if column is not None and column in self.columns:
            return sorted(shown, key=lambda row: self.sort_value(row, column), reverse=reverse)
        return list(reversed(shown)) if reverse else shown
