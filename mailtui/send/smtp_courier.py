"""The courier that speaks SMTP: MX hosts in order, connections kept for the next message.

It takes a cached session to the best destination (MX host and address) that
has one; else it opens one to each address of each host (best first) until
one gets as far as MAIL FROM. That session carries the message
(:mod:`mailtui.send.session`), then goes back to the cache
(:mod:`mailtui.send.connections`) or says QUIT.

A cached session that fails mid-way (the peer closed it while it waited, a
timeout, a 421) is not the message's failure: the recipients it left without
an answer are sent again at once, once, on a fresh connection, and only what
happens there becomes their outcome. Connection failures move on to the next
address; a failed TLS handshake is retried in plaintext (opportunistic TLS).

A delivery bound by an MTA-STS policy has its own TLS level in the
destination (:data:`~.connections.VERIFIED` for enforce, ``PREFER_VERIFIED``
for testing), so it never takes a session opened for opportunistic TLS: an
enforced one is only made with the verifying context and never falls back;
a testing one tries that context first, then opportunistic TLS, then none.
Verified sessions do not resume TLS sessions (a full handshake each time).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from functools import lru_cache

from ..dns.resolver import MailHost
from ..wire import normalize_crlf
from .connections import (
    MAY,
    PREFER_VERIFIED,
    VERIFIED,
    ConnectionCache,
    Destination,
    opportunistic_context,
)
from .courier import Outcome
from .session import Broken, Mail, Session, TlsFailed, TryNext


@lru_cache(maxsize=1)
def client_tls_context() -> ssl.SSLContext:
    """The context of deliveries without a cache (and so without sessions to resume)."""
    return opportunistic_context()


@dataclass(frozen=True)
class SmtpCourier:
    """A :class:`~mailtui.send.courier.Courier` over SMTP; ``cache`` None: a connection per delivery."""

    helo: str
    port: int = 25
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    pipelining: bool = True
    cache: ConnectionCache | None = None

    async def deliver(self, hosts: list[MailHost], *, sender: str, recipients: list[str],
                      body: bytes, smtputf8: bool = False, body_8bit: bool = False,
                      require_tls: ssl.SSLContext | None = None,
                      verify_tls: ssl.SSLContext | None = None) -> dict[str, Outcome]:
        mail = Mail(sender, list(recipients), normalize_crlf(body, final=True), smtputf8, body_8bit)
        level = VERIFIED if require_tls else PREFER_VERIFIED if verify_tls else MAY
        destinations = [Destination(h.name, a, self.port, level) for h in hosts for a in h.addresses]
        done: dict[str, Outcome] = {}
        cached = self._cached(destinations)
        if cached is not None:
            try:
                return await self._carry(cached, mail)
            except Broken as exc:  # not the message's failure: on to a fresh connection
                if not exc.pending:
                    return exc.done
                done, mail = exc.done, replace(mail, recipients=exc.pending)
        failure = TryNext("no mail host to try").outcome
        for destination in destinations:
            try:
                session = await self._open(destination, require_tls or verify_tls)
            except TryNext as exc:
                if not failure.status.startswith("4.7."):   # an MTA-STS refusal says more than "down"
                    failure = exc.outcome
                continue
            try:
                return done | await self._carry(session, mail)
            except Broken as exc:
                return done | exc.results()
        return done | dict.fromkeys(mail.recipients, failure)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _cached(self, destinations: list[Destination]) -> Session | None:
        """A cached session to the best destination that has one (as Postfix, which
        caches by domain too: a host that was down is not tried again for every message)."""
        if self.cache is not None:
            for destination in destinations:
                session = self.cache.take(destination)
                if isinstance(session, Session):
                    return session
        return None

    async def _carry(self, session: Session, mail: Mail) -> dict[str, Outcome]:
        try:
            results = await session.send(mail, pipelining=self.pipelining)
        except BaseException:  # Broken, or cancelled mid-transaction: never reuse it
            session.close(quit=False)
            raise
        if self.cache is None:
            session.close()
        else:
            self.cache.put(session.destination, session)
        return results

    def _contexts(self, destination: Destination,
                  verifying: ssl.SSLContext | None) -> list[ssl.SSLContext | None]:
        """The TLS contexts to try in turn (None: plaintext); each one after a failed handshake."""
        if destination.tls == VERIFIED:
            return [verifying]
        opportunistic = client_tls_context() if self.cache is None else self.cache.tls.context(destination)
        if destination.tls == PREFER_VERIFIED:
            return [verifying, opportunistic, None]
        return [opportunistic, None]

    async def _open(self, destination: Destination, verifying: ssl.SSLContext | None = None) -> Session:
        helo = self.helo if self.helo.isascii() else self.helo.encode("idna").decode("ascii")
        for tls in self._contexts(destination, verifying):
            session = Session(destination, helo, self.connect_timeout, self.command_timeout)
            try:
                await session.open(tls, required=destination.tls == VERIFIED)
            except TlsFailed:
                session.close(quit=False)
                if self.cache is not None:
                    self.cache.tls.forget(destination)
                continue  # once more, with the next context
            except BaseException:
                session.close(quit=False)
                raise
            if session.tls and self.cache is not None and session.conn is not None:
                self.cache.tls.remember(destination, session.conn.ssl_object)
            return session
        raise AssertionError("the last context is plaintext, or TLS is required: no TlsFailed")
