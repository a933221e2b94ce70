"""The stored history (``logs.json``) as the console shows it: rows marked as history.

The server logs every closed connection, DNS lookup and delivery to TinyDB.
A console that starts (or attaches) shows the newest of them dimmed, above
what happens from then on, so that after a restart the Connections panel is
not empty while the log holds connections. Connections from before a
restart can still be registered from (``r`` on a refused one). Plain
functions of the stored rows; rows of an older or newer format are shown as
far as they go, never refused.
"""

from __future__ import annotations

import time
from typing import Iterable

from .model import SessionRow, StoredLookup


def _at(row: dict) -> float:
    value = row.get("at", row.get("time", 0.0))
    return float(value) if isinstance(value, (int, float)) else 0.0


def _who(row: dict) -> tuple[str, str]:
    """(client, login) of a stored connection: SMTP stores a label ("client lab", "login bob@…")."""
    login = str(row.get("login") or "")
    label = str(row.get("client") or "")
    if label.startswith("client "):
        return label[len("client "):], login
    if label.startswith("login "):
        return "", login or label[len("login "):]
    return "", login


def session_row(row: dict) -> SessionRow:
    proto = str(row.get("proto") or "smtp")
    session = str(row.get("session") or "")
    result = str(row.get("result") or "")
    client, login = _who(row)
    coded = result[:3].isdigit() and result[:1] in "45"
    return SessionRow(key=f"{proto}:{session}", session=session, at=_at(row), proto=proto,
                      peer=str(row.get("peer") or ""), client=client, login=login,
                      helo=str(row.get("helo") or ""), tls=bool(row.get("tls")), state="closed",
                      result=result, refusal=result if coded else "", messages=int(row.get("messages") or 0),
                      closed=True, history=True)


def session_rows(rows: Iterable[dict]) -> list[SessionRow]:
    return [session_row(row) for row in rows if isinstance(row, dict)]


def dns_lookups(rows: Iterable[dict]) -> list[StoredLookup]:
    return [StoredLookup(at=_at(row), name=str(row.get("name", "")), rtype=str(row.get("type", "")),
                         answer=tuple(map(str, row.get("answer") or ())), rcode=str(row.get("rcode", "")),
                         duration=float(row.get("duration") or 0.0), cached=bool(row.get("cached")),
                         purpose=str(row.get("purpose") or ""))
            for row in rows if isinstance(row, dict)]


def delivery_line(row: dict) -> str:
    """One line of the activity log for a stored delivery."""
    when = time.strftime("%H:%M:%S", time.localtime(_at(row)))
    msg_id = row.get("msg_id") or row.get("id") or "?"
    result = str(row.get("result") or "?")
    where = "mailbox " if row.get("where") == "local" else ""
    line = f"{when} {msg_id} {result} to {where}{row.get('recipient', '?')}"
    if row.get("remote_mta"):
        line += f" via {row['remote_mta']}"
    why = row.get("error") or row.get("diagnostic")
    if result != "delivered" and why:
        line += f": {why}"
    return line


def delivery_lines(rows: Iterable[dict]) -> list[str]:
    return [delivery_line(row) for row in rows if isinstance(row, dict)]
