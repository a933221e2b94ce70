"""The core's event stream: typed, immutable events on one bus.

Front ends (``mailtui serve``, the console) subscribe; the mail path only ever
publishes, and never waits for a subscriber: a subscriber that falls behind
loses its oldest events (and is told how many) rather than slowing delivery.

An event is named by its class and by nothing else: tables that map events to
something (a style, a panel) are keyed by class. When events cross the
control socket to an attached console, the class name is the name on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    at: float = field(default_factory=time.time)


# -- listeners ---------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerStarted(Event):
    proto: str
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerFailed(Event):
    proto: str
    address: str
    error: str


# -- sessions ----------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOpened(Event):
    session: str
    proto: str
    peer: str
    registered: bool
    client: str = ""  # registered client's name (network match), "" if none


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionChanged(Event):
    """HELO name, TLS, login or state of a session changed."""

    session: str
    proto: str
    peer: str
    helo: str = ""
    tls: bool = False
    login: str = ""
    state: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    session: str
    proto: str
    peer: str
    result: str = ""  # e.g. "2 accepted", "refused: 550 5.7.1 ...", "timeout"
    messages: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRefused(Event):
    session: str
    proto: str
    peer: str
    stage: str  # "connect", "mail", "rcpt", "data"
    reply: str
    address: str = ""
    client: str = ""  # the session's registered client, "" if none
    login: str = ""   # the mailbox it logged in as, "" if none


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed(Event):
    session: str
    proto: str
    peer: str
    login: str
    failures: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSucceeded(Event):
    session: str
    proto: str
    peer: str
    login: str


# -- messages ----------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class MessageAccepted(Event):
    session: str
    proto: str = "smtp"   # the service that took it: "smtp" (port 25) or "submission"
    msg_id: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    peer: str = ""
    store_seconds: float = 0.0   # end of DATA to the 250: the time it took to make it durable
    client: str = ""             # the session's registered client, "" if none
    login: str = ""              # the mailbox it logged in as, "" if none


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveredLocal(Event):
    msg_id: str
    recipient: str
    mailbox: str
    size: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued(Event):
    msg_id: str
    sender: str
    recipients: tuple[str, ...]
    size: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxRetrieved(Event):
    """A POP3 session retrieved or deleted messages (at QUIT)."""

    session: str
    mailbox: str
    retrieved: int = 0
    deleted: int = 0


# -- remote delivery ---------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class DnsLookup(Event):
    name: str
    rtype: str
    answer: tuple[str, ...]
    rcode: str
    duration: float
    cached: bool = False
    purpose: str = ""              # why it was asked: MX, SPF, DKIM, DMARC, MTA-STS, CHECK


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryAttempt(Event):
    msg_id: str
    domain: str
    recipients: tuple[str, ...]
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveredRemote(Event):
    msg_id: str
    recipient: str
    remote_mta: str
    reply: str
    tls: bool = False
    queued_for: float = 0.0      # seconds from arrival to this delivery
    reused: bool = False      # over a cached connection that had carried mail before
    mta_sts: str = ""         # the recipient domain's MTA-STS mode it went under ("enforce": verified TLS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deferred(Event):
    msg_id: str
    recipient: str
    error: str
    next_attempt: float
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounced(Event):
    """A recipient failed for good; a DSN goes (or went) to the sender."""

    msg_id: str
    recipient: str
    error: str
    dsn_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueChanged(Event):
    """An admin action changed the queue (flush, remove, bounce)."""

    action: str
    msg_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryChanged(Event):
    """Clients or mailboxes were added, edited or removed."""

    what: str  # "client" or "mailbox"
    name: str
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice(Event):
    """Something a sysadmin should read (store recovered, disk full ...)."""

    level: str  # "info", "warning", "error"
    text: str


# -- the bus -----------------------------------------------------------------

class Subscription:
    """A bounded queue of events for one subscriber; drops its oldest when full."""

    def __init__(self, bus: "EventBus", maxsize: int):
        self._bus = bus
        self._events: deque[Event] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future | None = None
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if len(self._events) >= self._maxsize:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drain(self) -> list[Event]:
        """Take every pending event at once (for batched UIs)."""
        events = list(self._events)
        self._events.clear()
        return events

    async def wait(self) -> None:
        """Wait until at least one event is pending."""
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def get(self) -> Event:
        await self.wait()
        return self._events.popleft()

    def __aiter__(self):
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        self._bus._subscriptions.discard(self)


class EventBus:
    """One-way fan-out of core events to subscribers and synchronous listeners."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscriptions.add(sub)
        return sub

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously for every event; it must be quick."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.remove(listener)

    def publish(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
        for sub in self._subscriptions:
            sub._put(event)
