"""The retry queue: what waits for remote delivery, and the admin's verbs on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message

from ....store.queue import QueueItem
from ....wire import printable
from ..keys import expect_dialog
from ..model import Counters
from .connections import clock_time
from .filter import FilterBar
from .panel import DetailPane, TablePanel, table_bindings
from .table import Cell, Column, LiveTable

DETAIL_RECIPIENTS = 6   # recipients the line under the table lists (Enter shows them all)

COLUMNS = (
    Column("id", "ID", 17),
    Column("from", "From", 20, drop=1),
    Column("to", "To", 22),
    Column("tries", "Tries", 5, justify="right", sort=lambda row: row.attempts),
    Column("next", "Next try", 9, justify="right", sort=lambda row: (not row.in_flight, row.next_attempt)),
    Column("error", "Last error", 16, flex=True),
)


@dataclass(frozen=True)
class QueueRow:
    """A snapshot of one queued message."""

    key: str
    sender: str
    recipients: tuple[tuple[str, str, str], ...]   # (address, state, last error)
    attempts: int
    next_attempt: float
    last_error: str
    in_flight: bool
    size: int
    arrival: float

    @classmethod
    def of(cls, item: QueueItem) -> "QueueRow":
        return cls(key=item.id, sender=item.sender,
                   recipients=tuple((r.address, r.state, r.last_error) for r in item.recipients),
                   attempts=item.attempts, next_attempt=item.next_attempt, last_error=item.last_error,
                   in_flight=item.in_flight, size=item.size, arrival=item.arrival)

    @property
    def pending(self) -> list[str]:
        return [address for address, state, _ in self.recipients if state in ("queued", "deferred")]


def countdown(seconds: float) -> str:
    if seconds <= 0.5:
        return "due"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size_text(size: int) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def recipients_text(addresses: Iterable[str]) -> str:
    addresses = list(addresses)
    if not addresses:
        return "—"
    return addresses[0] + (f" +{len(addresses) - 1}" if len(addresses) > 1 else "")


def empty_text(counters: Counters | None) -> str:
    """What an empty queue says: true whether its messages were delivered or bounced."""
    if counters is None or not (counters.delivered or counters.bounced):
        return "The queue is empty."
    return f"The queue is empty. So far {counters.delivered} delivered, {counters.bounced} bounced."


class QueuePanel(TablePanel):
    BINDINGS = [
        Binding("r", "retry", "Retry now"),
        Binding("b", "bounce", "Bounce"),
        Binding("d,delete", "delete", "Delete"),
        Binding("v", "view", "View"),
        Binding("R", "retry_all", "Retry all", show=False),
        *table_bindings(),
    ]

    @dataclass
    class Retry(Message):
        """Try to deliver ``msg_id`` now."""

        msg_id: str

    class RetryAll(Message):
        """Make every queued message due now."""

    @dataclass
    class Bounce(Message):
        """Give up on ``msg_id`` and send its sender a bounce."""

        msg_id: str

    @dataclass
    class Delete(Message):
        """Delete ``msg_id`` from the queue, with no bounce."""

        msg_id: str

    @dataclass
    class View(Message):
        """Show ``msg_id``: envelope, recipient states and text."""

        msg_id: str

    def __init__(self, clock: Callable[[], float] = time.time, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, self._cells, empty=empty_text(None), id="queue-table")
        yield FilterBar()
        yield DetailPane(self._detail_text(None), id="queue-detail")

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def _cells(self, row: QueueRow) -> dict[str, Cell]:
        if row.in_flight:
            when = Text("sending", style="magenta")
        else:
            wait = row.next_attempt - self.clock()
            when = Text("in " + countdown(wait) if wait > 0.5 else "due", style="" if wait > 0.5 else "bold")
        return {
            "id": row.key,
            "from": f"<{row.sender}>" if row.sender else Text("<> bounce", style="dim"),
            "to": recipients_text(row.pending),
            "tries": str(row.attempts),
            "next": when,
            "error": Text(printable(row.last_error), style="yellow") if row.last_error else "",
        }

    def _detail_text(self, row: QueueRow | None) -> Text:
        if row is None:
            return Text("Messages for other domains wait here between delivery attempts.", style="dim")
        text = Text.assemble((row.key, "bold"), f" from <{row.sender}> · {size_text(row.size)}"
                                                f" · arrived {clock_time(row.arrival)}"
                                                f" · {row.attempts} attempt(s)")
        for address, state, error in row.recipients[:DETAIL_RECIPIENTS]:
            style = {"deferred": "yellow", "failed": "red", "delivered": "green"}.get(state, "")
            text.append(f"\n  {address}: ")
            text.append(state, style=style)
            if error:
                text.append(f" — {printable(error)}", style="dim")
        if len(row.recipients) > DETAIL_RECIPIENTS:
            text.append(f"\n  (+{len(row.recipients) - DETAIL_RECIPIENTS} more recipients: Enter shows all)",
                        style="dim")
        return text

    def show(self, rows: Sequence[QueueRow], counters: Counters | None = None) -> None:
        """``counters`` (delivered, bounced so far) are what an empty queue says besides being empty."""
        if not self.query(LiveTable):           # the console is closing
            return
        self.table.empty = empty_text(counters)
        self.table.set_rows(rows)
        self._detail(self.table.cursor_row)

    def copy_value(self, table: LiveTable, row: QueueRow) -> tuple[str, str]:
        return "message ID", row.key

    def tick(self) -> None:
        """Redraw the countdowns."""
        for table in self.query(LiveTable):     # (none while the console closes: children go first)
            table.refresh()

    @property
    def shows_attempts(self) -> bool:
        """A row shows an attempt in flight: its end publishes no event of its own, so look again."""
        return any(row.in_flight for table in self.query(LiveTable) for row in table.rows)

    def _detail(self, row: QueueRow | None) -> None:
        self.query_one(DetailPane).show(self._detail_text(row))

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self._detail(event.row)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        event.stop()   # the message view is the detail (read from the server: it has the text)
        event.prevent_default()
        expect_dialog(self)
        self.post_message(self.View(event.row.key))

    def action_retry(self) -> None:
        self._post(self.Retry)

    def action_bounce(self) -> None:
        self._post(self.Bounce, dialog=True)

    def action_delete(self) -> None:
        self._post(self.Delete, dialog=True)

    def action_view(self) -> None:
        self._post(self.View, dialog=True)

    def action_retry_all(self) -> None:
        self.post_message(self.RetryAll())

    def _post(self, message: Callable[[str], Message], dialog: bool = False) -> None:
        # Always offered: a footer that changed whenever the queue emptied would flicker under load.
        row = self.table.cursor_row
        if row is None:
            self.notify("No message is selected." if self.table.total else "The queue is empty.", timeout=3)
        else:
            if dialog:
                expect_dialog(self)
            self.post_message(message(row.key))
