"""DNS lookups: what the server asked, what it was told, and how fast."""

from __future__ import annotations

import time
from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive

from ....events import DnsLookup
from ....wire import printable
from ..dialogs.detail import Detail
from ..model import StoredLookup
from .connections import clock_time, dimmed
from .filter import FilterBar
from .panel import TablePanel, table_bindings
from .table import Cell, Column, LiveTable

COLUMNS = (
    Column("time", "Time", 8, sort=lambda e: e.at),
    Column("name", "Name", 22),
    Column("type", "Type", 4),
    Column("purpose", "Purpose", 7),
    Column("rcode", "Rcode", 8),
    Column("answer", "Answer", 16, flex=True),
    Column("took", "Took", 7, justify="right", sort=lambda e: -1.0 if e.cached else e.duration),
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
        "purpose": event.purpose or Text("—", style="dim"),
        "rcode": rcode_text(event.rcode),
        "answer": Text(printable(answer)) if answer else Text("—", style="dim"),
        "took": Text("—", style="dim") if event.cached else f"{event.duration * 1000:.0f} ms",
        "cached": Text("cached", style="dim") if event.cached else "",
    }


def lookup_fields(event: DnsLookup) -> list[tuple[str, str | Text]]:
    """Everything the DNS panel knows of a lookup, for its detail view."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
    took = "answered from the cache" if event.cached else f"{event.duration * 1000:.1f} ms from the nameserver"
    return [("Question", f"{event.name} {event.rtype}"), ("Purpose", event.purpose or Text("—", style="dim")),
            ("Rcode", rcode_text(event.rcode)),
            ("Answer", "\n".join(printable(a) for a in event.answer) or Text("none", style="dim")),
            ("Took", took), ("Time", at)]


class DnsPanel(TablePanel):
    BINDINGS = [Binding("c", "hide_cached", "Hide cached"), Binding("r", "records", "Records to publish"),
                *table_bindings()]

    class ShowRecords(Message):
        """Open the DNS records screen (what ``mailtui dns`` checks)."""

    hide_cached: reactive[bool] = reactive(False, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lookups: Sequence[DnsLookup] = ()

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, dns_cells, key=id, tail=True,
                        version=lambda e: (e.at, e.name, e.rtype, e.rcode, e.duration, e.cached),
                        empty="No DNS lookups yet: mail to other domains and from outside asks (r: records to publish)",
                        id="dns-table")
        yield FilterBar()

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def show(self, lookups: Sequence[DnsLookup]) -> None:
        self._lookups = lookups
        self.table.set_rows([e for e in lookups if not e.cached] if self.hide_cached else lookups)

    def detail(self, table: LiveTable, row: DnsLookup) -> Detail:
        return Detail(f"DNS {row.rtype} {row.name}", lookup_fields(row), copy=("name", row.name))

    def copy_value(self, table: LiveTable, row: DnsLookup) -> tuple[str, str]:
        return "name", row.name

    def action_records(self) -> None:
        self.post_message(self.ShowRecords())

    def action_hide_cached(self) -> None:
        self.hide_cached = not self.hide_cached

    def watch_hide_cached(self, value: bool) -> None:
        self.show(self._lookups)
        self.notify("Cached answers hidden (c: show)" if value else "Showing cached answers too", timeout=2)
