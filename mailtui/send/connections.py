"""The outbound connection cache: SMTP sessions kept open between messages, per destination.

After Postfix's ``scache`` and its SMTP client's settings: a session that
delivered a message goes back here instead of saying QUIT, and the next
message to the same destination (MX host, address, port, TLS level) takes it, saving
the connect, the greeting, EHLO and the TLS handshake. Bounded like Postfix:

* idle time (``smtp_connection_cache_time_limit``): a session unused for
  ``idle_time`` seconds is closed;
* uses (``smtp_connection_reuse_count_limit``): after ``reuse_limit``
  messages a session is closed instead of cached;
* room: at most ``size`` idle sessions in all and ``per_destination`` for
  one destination; the oldest idle one makes way.

A session is used by one transaction at a time: :meth:`ConnectionCache.take`
hands it out and removes it, :meth:`ConnectionCache.put` brings it back.
Sessions that are closed leave with QUIT. The cache also keeps the last TLS
session of each destination (:class:`TlsSessions`), so that a new connection
resumes it instead of a full handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

# How a destination's TLS is checked: part of its key, so that a session opened
# one way is never reused by a delivery that needs another.
MAY = "may"                  # opportunistic: STARTTLS if offered, nothing checked
PREFER_VERIFIED = "prefer"   # MTA-STS testing: a checked certificate if there is one, else as MAY
VERIFIED = "verified"        # MTA-STS enforce: STARTTLS and a certificate valid for the MX name, or nothing


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a connection goes. Sessions are shared by every domain with this MX and TLS level."""

    host: str              # the MX host's name, as the DNS gave it
    address: str
    port: int
    tls: str = MAY


@dataclass(frozen=True, slots=True)
class CacheLimits:
    idle_time: float = 5.0
    reuse_limit: int = 100
    size: int = 100
    per_destination: int = 8


class Reusable(Protocol):
    """What the cache needs of a session."""

    uses: int              # transactions it has carried

    @property
    def usable(self) -> bool:
        """Still open, and nothing unasked has come from the peer (no EOF, no 421)."""

    def close(self) -> None:
        """QUIT (not waiting for the answer) and close."""


@dataclass(eq=False)
class _Idle:
    destination: Destination
    session: Reusable
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ConnectionCache:
    """Idle SMTP sessions by destination; closes them when they have waited long enough."""

    def __init__(self, limits: CacheLimits = CacheLimits()):
        self.limits = limits
        self.tls = TlsSessions()
        self._idle: dict[Destination, list[_Idle]] = {}
        self._lru: dict[_Idle, None] = {}    # every idle entry, oldest first
        self._closed = False

    def __len__(self) -> int:
        return len(self._lru)

    def idle(self, destination: Destination) -> int:
        return len(self._idle.get(destination, ()))

    def take(self, destination: Destination) -> Reusable | None:
        """The most recently used idle session to ``destination`` that is still usable."""
        entries = self._idle.get(destination)
        while entries:
            entry = entries[-1]
            self._forget(entry)
            if entry.session.usable:
                return entry.session
            entry.session.close()
        return None

    def put(self, destination: Destination, session: Reusable) -> bool:
        """Keep ``session`` for the next message to ``destination``, or close it.

        It is closed when it cannot be reused (not usable, used up, the cache
        closed); to make room, the oldest idle session goes. True if kept.
        """
        limits = self.limits
        if self._closed or not session.usable or session.uses >= limits.reuse_limit \
                or limits.size < 1 or limits.per_destination < 1:
            session.close()
            return False
        if self.idle(destination) >= limits.per_destination:
            self._evict(self._idle[destination][0])
        if len(self._lru) >= limits.size:
            self._evict(next(iter(self._lru)))
        entry = _Idle(destination, session)
        entry.timer = asyncio.get_running_loop().call_later(limits.idle_time, self._evict, entry)
        self._idle.setdefault(destination, []).append(entry)
        self._lru[entry] = None
        return True

    def close(self) -> None:
        """Close every idle session and any that comes back later (at shutdown)."""
        self._closed = True
        for entry in list(self._lru):
            self._evict(entry)

    def _evict(self, entry: _Idle) -> None:
        if self._forget(entry):
            entry.session.close()

    def _forget(self, entry: _Idle) -> bool:
        if entry not in self._lru:
            return False
        del self._lru[entry]
        if entry.timer is not None:
            entry.timer.cancel()
        entries = self._idle[entry.destination]
        entries.remove(entry)
        if not entries:
            del self._idle[entry.destination]
        return True


# -- TLS session resumption ----------------------------------------------------------

class _ResumingContext(ssl.SSLContext):
    """A client context that offers its destination's last TLS session in each handshake.

    asyncio's ``start_tls`` (and uvloop's) wrap the connection with
    ``context.wrap_bio(...)`` and no session; here that call adds one. A
    session can only be resumed through the context that made it, hence one
    context per destination.
    """

    session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None,
                 session=None):
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname,
                                session=session or self.session)


_Context = TypeVar("_Context", bound=ssl.SSLContext)


def _opportunistic(context: _Context) -> _Context:
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def opportunistic_context() -> ssl.SSLContext:
    """Opportunistic TLS: encrypt, but check nothing (as Postfix's "may" level)."""
    return _opportunistic(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


class TlsSessions:
    """One client TLS context per destination, holding its last session (newest ``size``)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._contexts: OrderedDict[Destination, _ResumingContext] = OrderedDict()

    def context(self, destination: Destination) -> ssl.SSLContext:
        context = self._contexts.get(destination)
        if context is None:
            context = _opportunistic(_ResumingContext(ssl.PROTOCOL_TLS_CLIENT))
            self._contexts[destination] = context
            while len(self._contexts) > self.size:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(destination)
        return context

    def remember(self, destination: Destination, ssl_object: ssl.SSLObject | None) -> None:
        """Keep the session of a finished handshake (call once a reply has come over TLS:
        a TLS 1.3 server sends its session ticket after the handshake)."""
        context = self._contexts.get(destination)
        if context is None or ssl_object is None or ssl_object.context is not context:
            return
        session = ssl_object.session
        if session is not None and (session.has_ticket or session.id):
            context.session = session

    def forget(self, destination: Destination) -> None:
        """Drop the saved session (a handshake that offered it failed)."""
        context = self._contexts.get(destination)
        if context is not None:
            context.session = None
