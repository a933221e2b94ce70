"""Connections: every SMTP, submission, POP3 and IMAP session as it happens."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive

from ....wire import printable
from ..dialogs.detail import Detail
from ..keys import expect_dialog
from ..model import SessionRow
from .filter import FilterBar
from .panel import DetailPane, TablePanel, table_bindings
from .table import Cell, Column, LiveTable

def address_order(peer: str) -> tuple[int, int, str]:
    """Sorts addresses as numbers (192.0.2.9 before 192.0.2.10), IPv4 before IPv6."""
    try:
        address = ipaddress.ip_address(host_of(peer))
    except ValueError:
        return 9, 0, peer
    return address.version, int(address), peer


# Every protocol in five characters, the Proto column's width ("submission" showed as "subm…").
PROTO_LABELS = {"submission": "subm", "submissions": "smtps"}

COLUMNS = (
    Column("time", "Time", 8, sort=lambda row: row.at),
    Column("proto", "Proto", 5),
    Column("peer", "Address", 15, sort=address_order),
    Column("who", "Registered as", 18),
    Column("tls", "TLS", 3, drop=1),
    Column("helo", "HELO", 18, drop=2),
    Column("state", "State", 9, drop=3),
    Column("result", "Result", 20, flex=True),
)

OUTCOME_STYLES = {"accepted": "green", "refused": "red", "open": "yellow", "closed": ""}


def clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def host_of(peer: str) -> str:
    """The address of a peer given as "192.0.2.1", "192.0.2.1:4321" or "[2001:db8::1]:4321"."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    return peer.partition(":")[0] if peer.count(":") == 1 else peer


def who_text(row: SessionRow) -> Text:
    if row.login:
        return Text(printable(row.login), style="cyan")
    if row.client:
        return Text(printable(row.client), style="green")
    if row.covered:           # registered after this session
        return Text(f"→ {printable(row.covered)}", style="green")
    if row.proto == "smtp":   # SMTP from an unregistered network: policy refuses its mail
        return Text("unregistered", style="red")
    return Text("-", style="dim")


def session_cells(row: SessionRow) -> dict[str, Cell]:
    cells = _session_cells(row)
    return dimmed(cells) if row.history else cells


def dimmed(cells: dict[str, Cell]) -> dict[str, Cell]:
    """A row from the stored history: dim, whatever its colours."""
    return {key: Text(value.plain if isinstance(value, Text) else value, style="dim")
            for key, value in cells.items()}


def _session_cells(row: SessionRow) -> dict[str, Cell]:
    return {
        "time": clock_time(row.at),
        "proto": PROTO_LABELS.get(row.proto, row.proto),
        "peer": host_of(row.peer),
        "who": who_text(row),
        "tls": Text("yes", style="green") if row.tls else Text("no", style="dim"),
        "helo": row.helo,
        "state": row.state,
        "result": Text(printable(row.summary), style=OUTCOME_STYLES[row.outcome]),
    }


def session_detail(row: SessionRow | None) -> Text:
    if row is None:
        return Text("Sessions appear here as clients connect.", style="dim")
    text = Text.assemble((f"{row.proto.upper()} {row.session} ", "bold"), f"from {row.peer} · ",
                         who_text(row))
    if row.proto == "smtp":
        text.append(f" · HELO {printable(row.helo)}" if row.helo else " · no HELO yet")
    text.append(" · TLS" if row.tls else " · no TLS")
    text.append("\n")
    if row.outcome == "open":
        text.append(f"in progress ({row.state})", style=OUTCOME_STYLES["open"])
    else:
        text.append(printable(row.summary), style=OUTCOME_STYLES[row.outcome])
    if row.can_register and row.outcome == "refused":
        text.append(f"  — press r to register {row.peer}", style="bold")
    elif row.covered and row.outcome == "refused":
        text.append(f"  — {row.peer} is registered now, as {printable(row.covered)}", style="green")
    return text


def session_fields(row: SessionRow) -> list[tuple[str, str | Text]]:
    """Everything the Connections panel knows of a session, for its detail view."""
    opened = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.at))
    times = f"opened {opened}"
    if row.closed_at:
        times += f", closed {clock_time(row.closed_at)} ({row.closed_at - row.at:.1f} s)"
    fields: list[tuple[str, str | Text]] = [
        ("Session", f"{row.proto.upper()} {row.session}"), ("Peer", row.peer), ("Who", who_text(row))]
    if row.proto == "smtp":
        fields.append(("HELO", printable(row.helo) or "—"))
    fields += [("TLS", "yes" if row.tls else "no"), ("State", row.state), ("Times", times),
               ("Result", Text(printable(row.summary), style=OUTCOME_STYLES[row.outcome]))]
    if row.messages:
        more = f" (last {len(row.accepted)}: " if row.messages > len(row.accepted) else " ("
        fields.append(("Accepted", f"{row.messages}{more}{', '.join(row.accepted)})"))
    for at, stage, reply in row.refusals:
        fields.append(("Refused", Text(f"{clock_time(at)} at {stage}: {printable(reply)}", style="red")))
    return fields


class ConnectionsPanel(TablePanel):
    BINDINGS = [
        Binding("r", "register", "Register client"),
        Binding("f", "refused_only", "Refused only"),
        *table_bindings(),
    ]

    refused_only: reactive[bool] = reactive(False, init=False)

    @dataclass
    class Register(Message):
        """Register ``address``, a session's peer, as a client."""

        address: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._sessions: Sequence[SessionRow] = ()

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, session_cells, key=lambda row: row.key, tail=True,
                        version=lambda row: (row.key, row.version),
                        empty="No connections yet", id="connections-table")
        yield FilterBar()
        yield DetailPane(session_detail(None), id="connections-detail")

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def show(self, sessions: Sequence[SessionRow]) -> None:
        self._sessions = sessions
        rows = [r for r in sessions if r.outcome == "refused"] if self.refused_only else sessions
        self.table.set_rows(rows)
        self._detail(self.table.cursor_row)

    def _detail(self, row: SessionRow | None) -> None:
        self.query_one(DetailPane).show(session_detail(row))

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        self._detail(event.row)

    def detail(self, table: LiveTable, row: SessionRow) -> Detail:
        return Detail(f"{row.proto.upper()} session {row.session} from {host_of(row.peer)}", session_fields(row),
                      copy=("address", host_of(row.peer)),
                      actions=[("r", "register this address")] if row.can_register else ())

    def detail_action(self, table: LiveTable, row: SessionRow, key: str) -> None:
        if key == "r" and row.can_register:
            expect_dialog(self)
            self.post_message(self.Register(row.peer))

    def copy_value(self, table: LiveTable, row: SessionRow) -> tuple[str, str]:
        return "address", host_of(row.peer)

    def action_register(self) -> None:
        # Always offered (a footer that changed with every new row would flicker and cost a layout each time).
        row = self.table.cursor_row
        if row is None:
            self.notify("Select a session first.", timeout=3)
        elif row.can_register:
            expect_dialog(self)
            self.post_message(self.Register(row.peer))
        elif row.proto != "smtp":
            self.notify("POP3 sessions log in as a mailbox: there is nothing to register.", timeout=4)
        else:
            self.notify(f"{row.peer} is already registered as the client {row.client or row.covered}.", timeout=4)

    def action_refused_only(self) -> None:
        self.refused_only = not self.refused_only

    def watch_refused_only(self, value: bool) -> None:
        self.table.empty = "No refused connections" if value else "No connections yet"
        self.show(self._sessions)
        self.notify("Showing refused connections only (f: all)" if value else "Showing all connections",
                    timeout=2)
