"""The SMTP session: one connection, from greeting to hang-up.

aiosmtpd's engine (behind ``aiosmtpd_compat``) reads commands and speaks
EHLO, STARTTLS, AUTH, RSET and the like; this session adds what is
mailtui's: connection accounting and limits, the error budget, enhanced
status codes, events and the connection log, and the MAIL, RCPT and DATA
verbs. Those ask ``transaction.py`` what a command means, the service's
:class:`~mailtui.receive.rules.SessionRules` whether it is allowed (at MAIL
and RCPT, never at connect, so an unregistered client can still AUTH), read
DATA with ``data.py``, check it with ``message.py``, and say 250 only after
:class:`~mailtui.receive.intake.Intake` has the message on disk.

One :class:`SmtpContext` per service (port 25 "smtp"; "submission" on
587-style and 465-style ports) holds what its sessions share, their
connection counts included; ``listen.py`` binds its listeners. A session
on an implicit-TLS listener (RFC 8314) starts inside TLS: STARTTLS is not
offered there, and AUTH is offered at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time

from ..admin.registry import Registry
from ..admin.throttle import LoginThrottle
from ..config import Config
from ..events import (
    ClientRefused,
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    MessageAccepted,
    SessionChanged,
)
from ..replies import SmtpReply, add_enhanced_status
from ..store.db import Store
from ..store.queue import new_id
from ..wire import printable
from .aiosmtpd_compat import Engine, syntax
from .auth import SmtpAuth
from .data import read_data
from .intake import Envelope, Intake, StorageError
from .message import (
    Arrival,
    protocol_refusal,
    received_header,
    run_checks,
    unstuff_and_normalise,
    with_protocol,
)
from .policy import Peer, Policy
from .rules import InboundRules, SessionRules
from .slots import ConnectionSlots
from .transaction import TOO_BIG, Transaction, data_refusal, mail_from, rcpt_to

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0  # seconds a closing client gets to read our last reply before it is dropped
SESSION_PREFIX = {"smtp": "S", "submission": "M"}   # session ids: S1, M1 ... (POP3 is P, IMAP I)
OVER_LIMIT = {"total": "421 4.7.0 Too many connections, try again later",
              "ip": "421 4.7.0 Too many connections from [{ip}]"}


class SmtpContext:
    """What every session of one SMTP service shares: config, rules, limits, services."""

    def __init__(self, *, config: Config, registry: Registry, policy: Policy, intake: Intake,
                 bus: EventBus, store: Store | None, tls_context: ssl.SSLContext | None,
                 logins: LoginThrottle | None = None, rules: SessionRules | None = None, proto: str = "smtp"):
        self.proto = proto          # the service's name in events and logs
        self.config = config
        self.registry = registry
        self.policy = policy
        self.rules = rules or InboundRules(policy, auth_requires_tls=config.smtp.auth_require_tls)
        self.intake = intake
        self.bus = bus
        self.store = store
        self.tls_context = tls_context
        self.slots: ConnectionSlots[SmtpSession] = ConnectionSlots()
        self.logins = logins or LoginThrottle()
        self.auth = SmtpAuth(credentials=registry, throttle=self.logins, bus=bus,
                             failure_delay=config.smtp.auth_failure_delay, proto=proto)
        self._ids = itertools.count(1)

    @property
    def sessions(self) -> set[SmtpSession]:
        """The open sessions."""
        return self.slots.open

    @property
    def per_ip(self) -> dict[str, int]:
        """Open sessions per client IP."""
        return self.slots.per_ip

    def next_id(self) -> str:
        return f"{SESSION_PREFIX.get(self.proto, 'X')}{next(self._ids)}"

    def factory(self) -> SmtpSession:
        return SmtpSession(self)

    def tls_factory(self) -> SmtpSession:
        """A session for an implicit-TLS listener: the handshake is done before it sees the connection."""
        return SmtpSession(self, implicit_tls=True)


def _consume_result(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("message stored after its client left failed: %s", task.exception())


class SmtpSession(Engine):
    """One SMTP connection."""

    def __init__(self, ctx: SmtpContext, *, implicit_tls: bool = False):
        cfg = ctx.config
        self.fast_init(
            data_size_limit=cfg.smtp.max_message_size,
            hostname=cfg.server.hostname,
            tls_context=None if implicit_tls else ctx.tls_context,   # no STARTTLS inside TLS
            timeout=cfg.smtp.idle_timeout,
            auth_require_tls=ctx.rules.auth_requires_tls and not implicit_tls,
        )
        self.ctx = ctx
        self.proto = ctx.proto
        self.sid = ctx.next_id()
        self.ip = ""
        self.login = ""
        self.network_client = ""
        self.helo = ""
        self.tx = Transaction()
        self.errors = 0
        self.messages = 0
        self.data_ended = 0.0
        self.last_refusal = ""
        self.closed_reason = ""
        self._counted = False
        self._over_limit = ""
        self._greeted = False
        self._raw_replies = False

    # -- connection bookkeeping ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            self._changed()  # STARTTLS finished
            return
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.ip = str(peer[0])
        if self.ctx.rules.trusts_networks:
            self.network_client = self.ctx.registry.match(self.ip) or ""
        limits = self.ctx.config.smtp
        full = self.ctx.slots.full(self.ip, total=limits.max_connections, per_ip=limits.max_connections_per_ip)
        if full:
            self._over_limit = OVER_LIMIT[full].format(ip=self.ip)
        self.ctx.slots.take(self, self.ip)
        self._counted = True
        self.ctx.bus.publish(ConnectionOpened(session=self.sid, proto=self.proto, peer=self.ip,
                                              registered=bool(self.network_client),
                                              client=self.network_client))
        if self.tls:
            self._changed("tls")   # implicit TLS: the handshake is already done

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.ctx.slots.give_back(self, self.ip)
            result = self.closed_reason or (
                f"{self.messages} accepted" if self.messages else (self.last_refusal or "no mail"))
            self.ctx.bus.publish(ConnectionClosed(session=self.sid, proto=self.proto, peer=self.ip,
                                                  result=result, messages=self.messages))
            if self.ctx.store is not None:
                self.ctx.store.log("connections", {
                    "at": time.time(), "session": self.sid, "proto": self.proto, "peer": self.ip,
                    "client": self.peer().label, "helo": self.helo, "tls": self.tls,
                    "messages": self.messages, "result": result})
        super().connection_lost(error)

    async def admit(self) -> bool:
        if not self._over_limit:
            return True
        reply = self._over_limit
        self.closed_reason = reply
        self.ctx.bus.publish(ClientRefused(session=self.sid, proto=self.proto, peer=self.ip,
                                           stage="connect", reply=reply, client=self.network_client))
        await self.write_last(reply.encode() + b"\r\n", timeout=5)
        return False

    def on_idle_timeout(self) -> bool:
        self.closed_reason = "idle timeout"
        if self.transport is not None:
            # A client that stopped reading has left replies in our buffer:
            # close() would wait for it forever and keep its slot, so drop it.
            if self.transport.get_write_buffer_size():
                self.closed_reason = "idle timeout (client stopped reading)"
                self.transport.abort()
                return False
            self.transport.write(b"421 4.4.2 Idle timeout, closing connection\r\n")
        return True

    def _hang_up(self) -> None:
        """Close after the last reply; drop the client if it does not read it in time."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        if transport.get_write_buffer_size():
            self.loop.call_later(CLOSE_GRACE, transport.abort)

    @property
    def tls(self) -> bool:
        return self.tls_active

    def peer(self) -> Peer:
        return Peer(ip=self.ip, network_client=self.network_client, login=self.login, helo=self.helo)

    def _changed(self, state: str = "") -> None:
        self.ctx.bus.publish(SessionChanged(session=self.sid, proto=self.proto, peer=self.ip, helo=self.helo,
                                            tls=self.tls, login=self.login, state=state))

    async def handle_exception(self, error: Exception) -> str:
        """An unexpected error in a command: log it, answer 451, keep the session.

        Needed because this class is its own aiosmtpd handler: the inherited
        method would call itself forever.
        """
        log.error("%s: unexpected error from %s", self.sid, self.ip, exc_info=error)
        return "451 4.3.0 Internal error, please try again later"

    # -- replies ------------------------------------------------------------------

    async def push(self, status: str | bytes | SmtpReply) -> None:
        if isinstance(status, SmtpReply):
            status = str(status)
        reply = status.encode("utf-8") if isinstance(status, str) else status
        if not self._greeted:
            self._greeted = True
        elif not self._raw_replies:
            reply = add_enhanced_status(reply)
        await super().push(reply)
        if reply[:2] == b"50" or reply[:3] == b"535" or reply[:1] == b"5" and reply[4:7] == b"5.5":
            await self._count_error()  # failed AUTH (535) counts too, as in Postfix and chasquid

    async def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.ctx.config.smtp.error_budget and self.transport is not None:
            self.closed_reason = "too many errors"
            self.write_now(b"421 4.7.0 Too many errors, closing connection\r\n")
            self._hang_up()

    async def _refuse(self, stage: str, reply: SmtpReply | str, address: str = "") -> None:
        reply = str(reply)
        self.last_refusal = f"refused: {reply}"
        self.ctx.bus.publish(ClientRefused(session=self.sid, proto=self.proto, peer=self.ip, stage=stage,
                                           reply=reply, address=address, client=self.network_client,
                                           login=self.login))
        await self.push(reply)

    # -- greeting and extensions ----------------------------------------------------

    async def _bad_hostname(self, verb: str, hostname: str | None) -> bool:
        """Refuse a HELO/EHLO without an argument, or with control characters (NUL ...) or over 255 octets."""
        if not hostname:
            await self.push(f"501 5.5.4 Syntax: {verb} hostname")
            return True
        if printable(hostname) != hostname or len(hostname.encode("utf-8", "surrogateescape")) > 255:
            await self.push("501 5.5.4 Invalid HELO/EHLO hostname")
            return True
        return False

    async def smtp_HELO(self, hostname: str):
        if await self._bad_hostname("HELO", hostname):
            return
        self._raw_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_EHLO(self, hostname: str):
        if await self._bad_hostname("EHLO", hostname):
            return
        self._raw_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._raw_replies = False

    async def handle_HELO(self, server, session, envelope, hostname: str):
        self._set_helo(hostname)
        return f"250 {self.hostname}"

    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]):
        self._set_helo(hostname)
        self.reset_command_limits()
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return responses[:-1] + extra + [responses[-1]]

    def _set_helo(self, hostname: str) -> None:
        self.helo = printable(hostname[:255])
        self.session.host_name = hostname
        self.tx = Transaction()
        self._changed("helo")

    def on_reset(self) -> None:
        self.tx = Transaction()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str):
        if self.tls_active:
            await self.push("554 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        await self.push("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str) -> None:
        await self.push("502 5.5.1 EXPN not available")

    async def _http(self, arg: str) -> None:
        self.closed_reason = "HTTP request on the SMTP port"
        self.ctx.bus.publish(ClientRefused(session=self.sid, proto=self.proto, peer=self.ip, stage="connect",
                                           reply="421 HTTP request"))
        await self.push("421 4.7.0 This is an SMTP server, not a web server; closing")
        self._hang_up()

    smtp_GET = smtp_POST = smtp_HEAD = smtp_PUT = smtp_DELETE = smtp_CONNECT = smtp_OPTIONS = _http

    # -- AUTH -----------------------------------------------------------------------

    async def check_login(self, login: bytes, password: bytes) -> str | SmtpReply:
        outcome = await self.ctx.auth.check(session=self.sid, ip=self.ip, login=login, password=password)
        if isinstance(outcome, str):
            self.login = outcome
            self._changed("authenticated")
        return outcome

    # -- MAIL / RCPT / DATA ------------------------------------------------------------

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        tx = mail_from(self.tx, arg, extended=self.session.extended_smtp,
                       max_size=self.ctx.config.smtp.max_message_size)
        if tx == TOO_BIG:
            await self._refuse("mail", tx)
            return
        if isinstance(tx, SmtpReply):
            await self.push(tx)
            return
        refusal = self.ctx.rules.check_sender(self.peer(), tx.sender)
        if refusal is not None:
            await self._refuse("mail", refusal, str(tx.sender or "<>"))
            return
        self.tx = tx
        self._changed("mail")
        await self.push("250 2.1.0 Sender OK")

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        cfg = self.ctx.config
        rcpt = rcpt_to(self.tx, arg, extended=self.session.extended_smtp,
                       postmaster_domain=cfg.server.local_domains[0], max_recipients=cfg.smtp.max_recipients)
        if isinstance(rcpt, SmtpReply):
            await self.push(rcpt)
            return
        refusal, key = self.ctx.rules.check_recipient(self.peer(), rcpt)
        if refusal is not None:
            await self._refuse("rcpt", refusal, str(rcpt))
            return
        self.tx.add(rcpt, key)
        await self.push("250 2.1.5 Recipient OK")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        refusal = data_refusal(self.tx, arg)
        if refusal is not None:
            await self.push(refusal)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limits = self.ctx.config.smtp
        with self.data_stream() as stream:
            read = await read_data(stream, max_size=limits.max_message_size, timeout=limits.data_timeout)
        self.data_ended = time.monotonic()  # the 250 latency runs from here
        if read.timed_out:
            self.closed_reason = "DATA took too long"
            self.write_now(b"421 4.4.2 DATA timeout, closing connection\r\n")
            self._hang_up()
            return
        if read.lost:
            self.closed_reason = "connection lost during DATA"
            return
        tx, self.tx = self.tx, Transaction()
        if read.refusal is not None:
            await self._refuse("data", read.refusal)
            return
        await self._take(tx, unstuff_and_normalise(read.data))

    async def _take(self, tx: Transaction, body: bytes) -> None:
        """Check a received message, then store it and say 250, or refuse it."""
        refusal = protocol_refusal(body)
        if refusal is not None:
            await self._refuse("data", refusal)
            return
        sender = str(tx.sender) if tx.sender else ""
        verdict = await run_checks(self.ctx.rules.message_checks,
                                   Arrival(self.peer(), sender, tuple(tx.recipients), body))
        if verdict.refusal is not None:
            await self._refuse("data", verdict.refusal)
            return
        body = body if verdict.body is None else verdict.body
        envelope = Envelope(sender=sender, local=tx.local, remote=tx.remote, smtputf8=tx.smtputf8,
                            body_8bit=tx.body_8bit or not body.isascii(), peer=self.ip, helo=self.helo,
                            quarantine=verdict.quarantine)
        msg_id = new_id()
        protocol = with_protocol(extended=self.session.extended_smtp, tls=self.tls, authenticated=bool(self.login))
        trace = received_header(helo=self.helo, ip=self.ip, hostname=self.hostname, protocol=protocol,
                                msg_id=msg_id, recipients=tx.recipients)
        await self._store(envelope, trace + verdict.header + body, msg_id)

    async def _store(self, envelope: Envelope, data: bytes, msg_id: str) -> None:
        # Shielded: aiosmtpd cancels this handler when the client goes away,
        # and a spool entry cut off between its files and the in-memory queue
        # would wait unqueued until the next restart. Storing always finishes;
        # with no 250 sent, the client sends the message again.
        storing = asyncio.ensure_future(self.ctx.intake.accept(envelope, data, msg_id=msg_id))
        try:
            await asyncio.shield(storing)
        except StorageError as exc:
            await self._refuse("data", exc.reply)
            return
        except asyncio.CancelledError:
            storing.add_done_callback(_consume_result)
            raise
        self.messages += 1
        self.ctx.bus.publish(MessageAccepted(session=self.sid, msg_id=msg_id, sender=envelope.sender,
                                             recipients=tuple(envelope.recipients), size=len(data),
                                             peer=self.ip, proto=self.proto, client=self.network_client,
                                             login=self.login, store_seconds=time.monotonic() - self.data_ended))
        await self.push(f"250 2.0.0 OK: queued as {msg_id}")
