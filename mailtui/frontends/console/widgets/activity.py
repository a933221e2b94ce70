"""The activity log: one line per step in the life of a message, newest last."""

from __future__ import annotations

from collections import deque
from typing import Iterable

from rich.text import Text
from textual.widgets import RichLog

from ....events import Event
from ...describe import render

MAX_LINES = 500
BACKLOG = 200      # lines kept for a hidden log, written when it is shown


class ActivityLog(RichLog):
    """A RichLog that draws only while it is on screen.

    Writing renders a line, which costs; a hidden log (another tab, or the
    dock on a short terminal) keeps its latest lines aside instead and
    writes them when it comes into view.
    """

    DEFAULT_CSS = """
    ActivityLog { background: $surface; scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, highlight=False,
                         auto_scroll=True, id=id, classes=classes)
        self._backlog: deque[Text] = deque(maxlen=BACKLOG)
        self._shown = False

    def write_events(self, events: Iterable[Event], skipped: int = 0) -> None:
        lines = []
        if skipped:
            lines.append(Text(f"… {skipped} more events in this moment, not shown", style="dim italic"))
        lines += [line for line in map(render, events) if line is not None]
        self._add(lines)

    def write_note(self, text: str, style: str = "dim") -> None:
        self._add([Text(text, style=style)])

    def _add(self, lines: list[Text]) -> None:
        if self._shown:
            self._write(lines)
        else:
            self._backlog.extend(lines)

    def _write(self, lines: list[Text]) -> None:
        width = self.scrollable_content_region.width or None   # wrap at the widget, not the terminal
        for line in lines:
            self.write(line, width=width)

    def on_show(self) -> None:
        self.call_after_refresh(self._catch_up)   # once laid out, so lines wrap at the final width

    def _catch_up(self) -> None:
        self._shown = True
        backlog, self._backlog = list(self._backlog), deque(maxlen=BACKLOG)
        self._write(backlog)

    def on_hide(self) -> None:
        self._shown = False
