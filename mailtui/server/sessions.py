"""The sessions open right now, folded from the event stream.

A console that attaches to a running server was not listening when those
sessions began, so the server keeps their state for it: one small dict per
open session (the Connections panel's columns), updated by a bus listener
with a few dictionary operations per event, and forgotten when the session
closes. Closed sessions are the store's connection log (the history).
"""

from __future__ import annotations

from .. import events as ev


class OpenSessions:
    def __init__(self) -> None:
        self._open: dict[tuple[str, str], dict] = {}

    def __len__(self) -> int:
        return len(self._open)

    def observe(self, event: ev.Event) -> None:
        """Bus listener: keep each open session's state."""
        match event:
            case ev.ConnectionOpened():
                self._open[(event.proto, event.session)] = {
                    "session": event.session, "proto": event.proto, "peer": event.peer, "at": event.at,
                    "client": event.client, "login": "", "helo": "", "tls": False, "state": "connected",
                    "refusal": "", "messages": 0}
            case ev.ConnectionClosed():
                self._open.pop((event.proto, event.session), None)
            case ev.SessionChanged():
                row = self._open.get((event.proto, event.session))
                if row is not None:
                    for name in ("helo", "tls", "login", "state"):
                        row[name] = getattr(event, name) or row[name]
            case ev.AuthSucceeded():
                self._set(event.proto, event.session, "login", event.login)
            case ev.ClientRefused():
                self._set(event.proto, event.session, "refusal", event.reply)
            case ev.MessageAccepted():
                row = self._open.get((event.proto, event.session))
                if row is not None:
                    row["messages"] += 1

    def _set(self, proto: str, session: str, name: str, value: object) -> None:
        row = self._open.get((proto, session))
        if row is not None:
            row[name] = value

    def rows(self) -> list[dict]:
        """Copies of the open sessions' state, oldest first (JSON-ready)."""
        return [dict(row) for row in self._open.values()]
