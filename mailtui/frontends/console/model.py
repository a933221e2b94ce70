"""What the console shows, folded from the core's events.

Plain bookkeeping with no Textual in it: the app drains its bus subscription
a few times a second and hands the batch to :meth:`ConsoleModel.apply`, which
updates bounded collections and reports which panels need a redraw. However
many events arrive, the rows kept stay bounded and the work per event is a
few dictionary operations.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from ... import events as ev
from ...admin.registry import match_network, network_table

MAX_ROWS = 500          # rows kept per live table
LOG_BATCH_LINES = 25    # activity lines written per batch (a burst is counted, not drawn)
RATE_BUCKET = 10.0      # seconds per sparkline bar
RATE_BARS = 30          # bars kept (five minutes)
KEPT_PER_SESSION = 10   # refusals and message IDs kept per session row, for its detail

# What the activity log shows: the life of messages, and what needs reading.
LOG_EVENTS = (ev.MessageAccepted, ev.DeliveredLocal, ev.Queued, ev.DeliveryAttempt, ev.DeliveredRemote,
              ev.Deferred, ev.Bounced, ev.QueueChanged, ev.RegistryChanged, ev.MailboxRetrieved,
              ev.AuthFailed, ev.Notice, ev.ListenerStarted, ev.ListenerFailed)
QUEUE_EVENTS = (ev.Queued, ev.DeliveryAttempt, ev.DeliveredRemote, ev.Deferred, ev.Bounced,
                ev.QueueChanged)


@dataclass(eq=False)
class SessionRow:
    """One SMTP or POP3 session, as the Connections panel shows it."""

    key: str
    session: str
    at: float
    proto: str
    peer: str
    client: str = ""       # registered client whose network matched
    login: str = ""        # mailbox the session logged in as
    helo: str = ""
    tls: bool = False
    state: str = "connected"
    result: str = ""       # set when the session ends
    refusal: str = ""      # the last refusal reply sent
    messages: int = 0
    closed: bool = False
    closed_at: float = 0.0
    covered: str = ""      # the client registered since, whose network now holds the peer
    refusals: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=KEPT_PER_SESSION))
    accepted: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_PER_SESSION))   # message IDs
    version: int = 0       # bumped on every change (the table redraws a row only when it changed)
    history: bool = False  # from the stored log, from before this console started (drawn dimmed)

    @property
    def outcome(self) -> str:
        """accepted, refused, open or closed (for colour and filtering)."""
        if self.messages:
            return "accepted"
        if self.refusal or self.result.startswith(("refused", "421", "too many")):
            return "refused"
        return "closed" if self.closed else "open"

    @property
    def summary(self) -> str:
        if self.closed:
            return self.result or "closed"
        if self.refusal:
            return f"refused: {self.refusal}"
        if self.messages:
            return f"{self.messages} accepted"
        return self.state or "connected"

    @property
    def can_register(self) -> bool:
        """An SMTP peer that no registered network covers (then, or since)."""
        return self.proto == "smtp" and not self.client and not self.covered and bool(self.peer)


class ClientNetworks(Protocol):
    """A registered client as far as the Connections panel cares (the registry's Client is one)."""

    @property
    def name(self) -> str: ...
    @property
    def networks(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredLookup(ev.DnsLookup):
    """A DNS lookup from the stored log, from before this console started (drawn dimmed)."""


@dataclass
class Counters:
    accepted: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    refused: int = 0


class Rate:
    """Events counted in fixed buckets, for a per-minute sparkline."""

    def __init__(self, bucket: float = RATE_BUCKET, bars: int = RATE_BARS):
        self.bucket = bucket
        self.bars = bars
        self._counts: dict[int, int] = {}

    def add(self, at: float) -> None:
        index = int(at // self.bucket)
        self._counts[index] = self._counts.get(index, 0) + 1
        if len(self._counts) > 2 * self.bars:
            oldest = max(self._counts) - self.bars
            for key in [k for k in self._counts if k < oldest]:
                del self._counts[key]

    def series(self, now: float) -> list[float]:
        """Messages per minute in each of the last ``bars`` buckets, oldest first."""
        last = int(now // self.bucket)
        scale = 60.0 / self.bucket
        return [self._counts.get(i, 0) * scale for i in range(last - self.bars + 1, last + 1)]

    def per_minute(self, now: float) -> int:
        """Events in the last minute (whole buckets)."""
        last = int(now // self.bucket)
        span = max(1, round(60 / self.bucket))
        return sum(self._counts.get(i, 0) for i in range(last - span + 1, last + 1))


@dataclass
class Changes:
    """What one batch changed."""

    connections: bool = False
    dns: bool = False
    queue: bool = False
    registry: bool = False
    listeners: bool = False
    counters: bool = False
    log: list[ev.Event] = field(default_factory=list)
    log_skipped: int = 0
    alerts: list[ev.Event] = field(default_factory=list)


class ConsoleModel:
    def __init__(self, max_rows: int = MAX_ROWS):
        self.max_rows = max_rows
        self.sessions: OrderedDict[str, SessionRow] = OrderedDict()
        self.dns: deque[ev.DnsLookup] = deque(maxlen=max_rows)
        self.counters = Counters()
        self.rate = Rate()
        self.registry_stale = True     # sessions may have been refused from networks registered since

    def reconcile(self, clients: Iterable[ClientNetworks]) -> None:
        """Mark the sessions of unregistered peers that a registered network now holds (or no longer does).

        Called with the registry's clients when ``registry_stale``: after a
        RegistryChanged, the "press r to register" hint must not outlive the
        registration. The registry's own matching rules decide.
        """
        table = network_table((client.name, client.networks) for client in clients)
        for row in self.sessions.values():
            if row.proto != "smtp" or row.client:
                continue
            covered = match_network(table, row.peer) or ""
            if covered != row.covered:
                row.covered = covered
                row.version += 1
        self.registry_stale = False

    def restart(self, counters: Counters) -> None:
        """Start over (a new snapshot of an attached server): no rows, the server's own totals."""
        self.sessions.clear()
        self.dns.clear()
        self.counters = counters

    def add_history(self, sessions: Iterable[SessionRow], lookups: Iterable[ev.DnsLookup]) -> None:
        """Stored rows, oldest first, go before the live ones (the bounds still hold)."""
        live = list(self.sessions.values())
        self.sessions.clear()
        for row in [*sessions, *live][-self.max_rows:]:
            self.sessions[row.key] = row
        self.dns = deque([*lookups, *self.dns], maxlen=self.max_rows)

    def apply(self, events: Iterable[ev.Event]) -> Changes:
        changes = Changes()
        log: deque[ev.Event] = deque(maxlen=LOG_BATCH_LINES)
        logged = 0
        for event in events:
            if isinstance(event, LOG_EVENTS):
                log.append(event)
                logged += 1
            match event:
                case ev.ConnectionOpened():
                    self._open(event)
                    changes.connections = True
                case ev.SessionChanged() | ev.AuthSucceeded() | ev.ClientRefused() | ev.ConnectionClosed():
                    changes.connections |= self._update(event)
                    if isinstance(event, ev.ClientRefused):
                        self.counters.refused += 1
                        changes.counters = True
                case ev.MessageAccepted():
                    row = self.sessions.get(f"{event.proto}:{event.session}")
                    if row is not None:
                        row.messages += 1
                        row.accepted.append(event.msg_id)
                        row.version += 1
                        changes.connections = True
                    self.counters.accepted += 1
                    self.rate.add(event.at)
                    changes.counters = True
                case ev.DeliveredLocal() | ev.DeliveredRemote():
                    self.counters.delivered += 1
                    changes.counters = True
                    changes.queue |= isinstance(event, ev.DeliveredRemote)
                case ev.Deferred():
                    self.counters.deferred += 1
                    changes.counters = changes.queue = True
                case ev.Bounced():
                    self.counters.bounced += 1
                    changes.counters = changes.queue = True
                case ev.DnsLookup():
                    self.dns.append(event)
                    changes.dns = True
                case ev.RegistryChanged():
                    changes.registry = True
                    changes.connections = self.registry_stale = True
                case ev.ListenerStarted():
                    changes.listeners = True
                case ev.ListenerFailed():
                    changes.listeners = True
                    changes.alerts.append(event)
                case ev.Notice() if event.level in ("warning", "error"):
                    changes.alerts.append(event)
            if isinstance(event, QUEUE_EVENTS):
                changes.queue = True
        changes.log = list(log)
        changes.log_skipped = logged - len(log)
        return changes

    def _open(self, event: ev.ConnectionOpened) -> None:
        key = f"{event.proto}:{event.session}"
        self.sessions[key] = SessionRow(key=key, session=event.session, at=event.at, proto=event.proto,
                                        peer=event.peer, client=event.client)
        while len(self.sessions) > self.max_rows:
            self.sessions.popitem(last=False)

    def _update(self, event) -> bool:
        row = self.sessions.get(f"{event.proto}:{event.session}")
        if row is None:  # opened before the console started, or already dropped
            return False
        match event:
            case ev.SessionChanged():
                row.helo = event.helo or row.helo
                row.tls = event.tls or row.tls
                row.login = event.login or row.login
                row.state = event.state or row.state
            case ev.AuthSucceeded():
                row.login = event.login
            case ev.ClientRefused():
                row.refusal = event.reply
                row.refusals.append((event.at, event.stage, event.reply))
            case ev.ConnectionClosed():
                row.closed = True
                row.closed_at = event.at
                row.state = "closed"
                row.result = event.result
        row.version += 1
        return True
