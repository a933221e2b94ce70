"""The server's running totals, counted once from the event stream.

One bus listener keeps them (a few integer additions per event, so the mail
path never notices); ``mailtui status``, the Prometheus endpoint and the
console's header all read these, so every front end shows the same figures.
The figures per registered client and per login come from the events'
``client`` and ``login`` fields, so counting needs no memory of sessions and
a console that attaches later can go on counting from a snapshot.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from .. import events as ev

DNS_OK = ("NOERROR", "NXDOMAIN")          # an answer, even "no such domain", is not a failure


@dataclass
class Figures:
    """What one registered client (or one login) did: the Clients panel's columns."""

    accepted: int = 0          # messages given their 250
    refused: int = 0           # commands refused
    last_seen: float = 0.0     # its latest connection, login, message or refusal

    def seen(self, at: float) -> None:
        self.last_seen = max(self.last_seen, at)


@dataclass
class Totals:
    accepted: int = 0          # messages given their 250
    refused: int = 0           # commands refused by policy or limits
    delivered_local: int = 0   # local mailboxes written
    delivered_remote: int = 0  # remote recipients handed over
    deferred: int = 0          # remote recipients put off for a later attempt
    bounced: int = 0           # recipients failed for good
    auth_failures: int = 0
    refused_by_stage: Counter = field(default_factory=Counter)
    sessions: Counter = field(default_factory=Counter)        # opened, by protocol
    open_sessions: Counter = field(default_factory=Counter)   # open now, by protocol
    auth_failures_by_proto: Counter = field(default_factory=Counter)
    dns_lookups: Counter = field(default_factory=Counter)     # by record type
    dns_failures: Counter = field(default_factory=Counter)
    clients: dict[str, Figures] = field(default_factory=dict)   # by registered client name
    logins: dict[str, Figures] = field(default_factory=dict)    # by mailbox logged in as

    @property
    def delivered(self) -> int:
        return self.delivered_local + self.delivered_remote


class ServerStats:
    def __init__(self) -> None:
        self.started = time.time()
        self.totals = Totals()

    def observe(self, event: ev.Event) -> None:
        """Bus listener: count one event."""
        t = self.totals
        match event:
            case ev.MessageAccepted():
                t.accepted += 1
                for figures in self._who(event.client, event.login):
                    figures.accepted += 1
                    figures.seen(event.at)
            case ev.ClientRefused():
                t.refused += 1
                t.refused_by_stage[event.stage] += 1
                for figures in self._who(event.client, event.login):
                    figures.refused += 1
                    figures.seen(event.at)
            case ev.DeliveredLocal():
                t.delivered_local += 1
            case ev.DeliveredRemote():
                t.delivered_remote += 1
            case ev.Deferred():
                t.deferred += 1
            case ev.Bounced():
                t.bounced += 1
            case ev.ConnectionOpened():
                t.sessions[event.proto] += 1
                t.open_sessions[event.proto] += 1
                for figures in self._who(event.client, ""):
                    figures.seen(event.at)
            case ev.ConnectionClosed():
                t.open_sessions[event.proto] -= 1
            case ev.AuthSucceeded():
                for figures in self._who("", event.login):
                    figures.seen(event.at)
            case ev.AuthFailed():
                t.auth_failures += 1
                t.auth_failures_by_proto[event.proto] += 1
            case ev.DnsLookup():
                t.dns_lookups[event.rtype] += 1
                if event.rcode not in DNS_OK:
                    t.dns_failures[event.rtype] += 1

    def _who(self, client: str, login: str) -> list[Figures]:
        """The figures an event from ``client`` and ``login`` counts in (either may be "")."""
        t = self.totals
        out = []
        if client:
            out.append(t.clients.get(client) or t.clients.setdefault(client, Figures()))
        if login:
            out.append(t.logins.get(login) or t.logins.setdefault(login, Figures()))
        return out

    def snapshot(self) -> dict:
        """Plain JSON-ready figures (``mailtui status``, attached consoles)."""
        t = self.totals
        return {"started": self.started, "accepted": t.accepted, "refused": t.refused,
                "delivered": t.delivered, "delivered_local": t.delivered_local,
                "delivered_remote": t.delivered_remote, "deferred": t.deferred, "bounced": t.bounced,
                "auth_failures": t.auth_failures, "sessions": dict(t.sessions),
                "open_sessions": {k: v for k, v in t.open_sessions.items() if v},
                "dns_lookups": sum(t.dns_lookups.values()), "dns_failures": sum(t.dns_failures.values()),
                "clients": {name: asdict(f) for name, f in t.clients.items()},
                "logins": {login: asdict(f) for login, f in t.logins.items()}}

    @classmethod
    def restore(cls, snapshot: dict) -> "ServerStats":
        """Totals as a :meth:`snapshot` gave them, to count on from (an attached console)."""
        stats = cls()
        stats.started = snapshot.get("started", stats.started)
        t = stats.totals
        for name in ("accepted", "refused", "delivered_local", "delivered_remote", "deferred", "bounced",
                     "auth_failures"):
            setattr(t, name, int(snapshot.get(name, 0)))
        t.sessions.update(snapshot.get("sessions", {}))
        t.open_sessions.update(snapshot.get("open_sessions", {}))
        t.clients, t.logins = cls.figures_of(snapshot)
        return stats

    @staticmethod
    def figures_of(snapshot: dict) -> tuple[dict[str, Figures], dict[str, Figures]]:
        """The per-client and per-login figures of a :meth:`snapshot` (an attached console's start)."""
        def load(part: dict) -> dict[str, Figures]:
            return {name: Figures(**values) for name, values in part.items()}
        return load(snapshot.get("clients", {})), load(snapshot.get("logins", {}))
