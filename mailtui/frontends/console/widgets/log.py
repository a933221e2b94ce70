"""The Log panel: the activity log as a table, one line per event, to filter and open.

The same lines as the log under the panels (:mod:`.activity`), but with a
cursor: ``/`` filters them, Enter shows a line in full with the event's
fields, ``y`` copies the message ID (or the line). It follows new lines
while its cursor is on the last one.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult

from ....events import Event
from ....wire import printable
from ...describe import render
from ..dialogs.detail import Detail
from .filter import FilterBar
from .panel import TablePanel, table_bindings
from .table import Cell, Column, LiveTable

MAX_LINES = 500
STAMP = len("00:00:00 ")   # render() starts every line with the time

COLUMNS = (Column("time", "Time", 8, sort=lambda line: line.key), Column("text", "Event", 20, flex=True))


@dataclass(frozen=True, eq=False)
class LogLine:
    key: int            # in the order written
    at: float
    text: Text          # without the time
    event: Event | None = None


def line_cells(line: LogLine) -> dict[str, Cell]:
    return {"time": Text(time.strftime("%H:%M:%S", time.localtime(line.at)), style="dim"), "text": line.text}


def event_fields(event: Event) -> list[tuple[str, str | Text]]:
    """Every field of ``event``, for people."""
    out: list[tuple[str, str | Text]] = []
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.name == "at" or value in ("", (), None):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        out.append((f.name.replace("_", " "), printable(shown)))
    return out


class LogPanel(TablePanel):
    BINDINGS = table_bindings()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: deque[LogLine] = deque(maxlen=MAX_LINES)
        self._numbers = itertools.count()

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, line_cells, tail=True, version=lambda line: line.key,
                        empty="Nothing has happened yet", id="log-tab")
        yield FilterBar()

    def write_events(self, events: Iterable[Event], skipped: int = 0) -> None:
        lines = []
        if skipped:
            lines.append(LogLine(next(self._numbers), time.time(),
                                 Text(f"… {skipped} more events in this moment, not shown", style="dim italic")))
        for event in events:
            text = render(event)
            if text is not None:
                lines.append(LogLine(next(self._numbers), event.at, text[STAMP:], event))
        self._add(lines)

    def write_note(self, text: str, style: str = "dim") -> None:
        self._add([LogLine(next(self._numbers), time.time(), Text(text, style=style))])

    def _add(self, lines: list[LogLine]) -> None:
        if lines:
            self._lines.extend(lines)
            self.query_one(LiveTable).set_rows(list(self._lines))

    def detail(self, table: LiveTable, row: LogLine) -> Detail:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.at))
        fields: list[tuple[str, str | Text]] = [("Time", at), ("Line", row.text)]
        if row.event is not None:
            fields += event_fields(row.event)
        title = f"{type(row.event).__name__ if row.event else 'Note'} at {at}"
        return Detail(title, fields, copy=self.copy_value(table, row))

    def copy_value(self, table: LiveTable, row: LogLine) -> tuple[str, str]:
        msg_id = getattr(row.event, "msg_id", "")
        return ("message ID", msg_id) if msg_id else ("line", row.text.plain)
