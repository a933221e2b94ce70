"""DNS lookups: what the server asked, what it was told, and how fast."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive

from ....events import DnsLookup
from ....wire import printable
from ..model import StoredLookup
from .connections import clock_time, dimmed
from .table import Cell, Column, LiveTable

COLUMNS = (
    Column("time", "Time", 8),
    Column("name", "Name", 22),
    Column("type", "Type", 4),
    Column("rcode", "Rcode", 8),
    Column("answer", "Answer", 16, flex=True),
    Column("took", "Took", 7, justify="right"),
    Column("cached", "Cached", 6, drop=1),
)


def rcode_text(rcode: str) -> Text:
    style = {"NOERROR": "green", "NXDOMAIN": "yellow"}.get(rcode, "bold red")
    return Text(rcode, style=style)


def dns_cells(event: DnsLookup) -> dict[str, Cell]:
    cells = _dns_cells(event)
    return dimmed(cells) if isinstance(event, StoredLookup) else cells


def _dns_cells(event: DnsLookup) -> dict[str, Cell]:
    answer = ", ".join(event.answer)
    return {
        "time": clock_time(event.at),
        "name": event.name,
        "type": event.rtype,
        "rcode": rcode_text(event.rcode),
        "answer": Text(printable(answer)) if answer else Text("—", style="dim"),
        "took": Text("—", style="dim") if event.cached else f"{event.duration * 1000:.0f} ms",
        "cached": Text("cached", style="dim") if event.cached else "",
    }


class DnsPanel(Vertical):
    BINDINGS = [Binding("c", "hide_cached", "Hide cached")]

    hide_cached: reactive[bool] = reactive(False, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lookups: Sequence[DnsLookup] = ()

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, dns_cells, key=id, tail=True,
                        version=lambda e: (e.at, e.name, e.rtype, e.rcode, e.duration, e.cached),
                        empty="No DNS lookups yet: they happen when mail leaves for other domains",
                        id="dns-table")

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def show(self, lookups: Sequence[DnsLookup]) -> None:
        self._lookups = lookups
        self.table.set_rows([e for e in lookups if not e.cached] if self.hide_cached else lookups)

    def action_hide_cached(self) -> None:
        self.hide_cached = not self.hide_cached

    def watch_hide_cached(self, value: bool) -> None:
        self.show(self._lookups)
        self.notify("Cached answers hidden (c: show)" if value else "Showing cached answers too", timeout=2)
