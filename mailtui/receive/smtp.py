"""SMTP intake: aiosmtpd's protocol engine, mailtui's policy and storage.

aiosmtpd does the conversation (greeting, EHLO, STARTTLS, AUTH, RSET ...);
this subclass replaces MAIL, RCPT and DATA so that addresses go through the
one strict parser, policy is asked at MAIL and RCPT (never at connect, so an
unregistered client can still AUTH), DATA is read in large chunks instead of
line by line, and 250 is said only after :class:`~mailtui.intake.Intake` has
the message on disk. Served with ``loop.create_server`` in the application's
own event loop.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import re
import ssl
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Optional

from aiosmtpd.smtp import SMTP, AuthResult, _AuthMechAttr, login_always_fail, syntax

from ..addresses import Address, AddressError, parse_params, parse_path, split_path
from ..admin.registry import Registry
from ..admin.throttle import LoginThrottle
from ..config import Config
from ..events import (
    AuthFailed,
    AuthSucceeded,
    ClientRefused,
    ConnectionClosed,
    ConnectionOpened,
    EventBus,
    MessageAccepted,
    SessionChanged,
)
from ..replies import add_enhanced_status
from ..store.db import Store
from ..wire import header_section, normalize_crlf, printable
from .intake import Envelope, Intake, StorageError
from .policy import Client, Policy

log = logging.getLogger(__name__)

MAX_RECEIVED = 50
_RECEIVED = re.compile(rb"(?im)^received:")
DATA_READ_LIMIT = 256 * 1024
CLOSE_GRACE = 5.0  # seconds a closing client gets to read our last reply before it is dropped


def _command_limits() -> collections.defaultdict:
    """Command line limits: 512 octets, MAIL longer by what SIZE and SMTPUTF8 add."""
    limits = collections.defaultdict(lambda: 512)
    limits["MAIL"] = 512 + 26 + 10
    return limits


def unstuff_and_normalise(raw: bytes) -> bytes:
    """Remove dot-stuffing and turn bare CR/LF line ends into CRLF.

    Only ``<CRLF>.<CRLF>`` ended the data (the caller found it), so a bare-LF
    ``.`` line is ordinary content here, never a second message.
    """
    body = raw.replace(b"\r\n.", b"\r\n") if b"\r\n." in raw else raw
    if body.startswith(b"."):
        body = body[1:]
    return normalize_crlf(body)


def _consume_result(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("message stored after its client left failed: %s", task.exception())


def has_long_line(body: bytes) -> bool:
    """A line over 998 octets (plus CR) — RFC 5321 4.5.3.1.6.

    Splitting is C-speed; the regex ``[^\n]{1000}`` it replaces cost 3 ms per
    100 KiB message by retrying at every offset.
    """
    return len(body) > 999 and max(map(len, body.split(b"\n"))) > 999


@dataclass
class Transaction:
    sender: Optional[Address] = None
    has_sender: bool = False
    local: dict[str, list[str]] = field(default_factory=dict)
    remote: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    smtputf8: bool = False
    body_8bit: bool = False

    @property
    def count(self) -> int:
        return len(self.seen)


class SmtpContext:
    """What every SMTP session of one server shares: config, policy, limits."""

    def __init__(self, *, config: Config, registry: Registry, policy: Policy, intake: Intake,
                 bus: EventBus, store: Store | None, tls_context: ssl.SSLContext | None,
                 logins: LoginThrottle | None = None):
        self.config = config
        self.registry = registry
        self.policy = policy
        self.intake = intake
        self.bus = bus
        self.store = store
        self.tls_context = tls_context
        self.sessions: set["SmtpSession"] = set()
        self.per_ip: dict[str, int] = {}
        self.logins = logins or LoginThrottle()
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return f"S{next(self._ids)}"

    def factory(self) -> "SmtpSession":
        return SmtpSession(self)


class SmtpSession(SMTP):
    """One SMTP connection."""

    _tables: tuple[dict, dict, dict] | None = None

    def __init__(self, ctx: SmtpContext):
        cfg = ctx.config
        self._fast_init(
            data_size_limit=cfg.smtp.max_message_size,
            hostname=cfg.server.hostname,
            tls_context=ctx.tls_context,
            timeout=cfg.smtp.idle_timeout,
            auth_require_tls=cfg.smtp.auth_require_tls and ctx.tls_context is not None,
        )
        # aiosmtpd keeps these limits in a class-wide dict that grows on every
        # EHLO; keep our own per session.
        self.command_size_limits = _command_limits()
        self.ctx = ctx
        self.sid = ctx.next_id()
        self.ip = ""
        self.login = ""
        self.network_client = ""
        self.helo = ""
        self.tx = Transaction()
        self.errors = 0
        self.messages = 0
        self.last_refusal = ""
        self.closed_reason = ""
        self._counted = False
        self._over_limit = ""
        self._greeted = False
        self._raw_replies = False

    @classmethod
    def _method_tables(cls) -> tuple[dict, dict, dict]:
        """AUTH mechanisms, handler hooks and SMTP verbs, found once per class."""
        if cls.__dict__.get("_tables") is None:
            auth, hooks, verbs = {}, {}, {}
            for name in dir(cls):
                if name.startswith("auth_"):
                    func = getattr(cls, name)
                    mech = getattr(func, "__auth_mechanism_name__", name[5:].replace("__", "-"))
                    auth[mech] = func
                elif name.startswith("handle_"):
                    hooks[name[7:]] = getattr(cls, name)
                elif name.startswith("smtp_"):
                    verbs[name[5:]] = getattr(cls, name)
            cls._tables = (auth, hooks, verbs)
        return cls._tables

    def _fast_init(self, *, data_size_limit: int, hostname: str, tls_context, timeout: float,
                   auth_require_tls: bool) -> None:
        """What ``SMTP.__init__`` sets up, without its per-connection reflection.

        aiosmtpd finds the AUTH mechanisms, hooks and verbs with
        ``inspect.getmembers`` on every new connection (about 0.35 ms here,
        a third of the CPU a message costs). The tables depend only on the
        class, so they are built once and bound per session. A test checks
        that this sets exactly the attributes ``SMTP.__init__`` would.
        """
        loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=loop)
        self.__ident__ = "ESMTP mailtui"
        self.loop = loop
        self.event_handler = self
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = False
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = login_always_fail
        self._auth_required = False
        auth, hooks, verbs = self._method_tables()
        self._auth_methods = {mech: _AuthMechAttr(func.__get__(self), True) for mech, func in auth.items()}
        self._handle_hooks = {name: func.__get__(self) for name, func in hooks.items()}
        self._ehlo_hook_ver = "new"
        self._smtp_methods = {name: func.__get__(self) for name, func in verbs.items()}
        self._enforce_call_limit = False

    # -- connection bookkeeping ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            self._changed()  # STARTTLS finished
            return
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.ip = str(peer[0])
        self.network_client = self.ctx.registry.match(self.ip) or ""
        limits = self.ctx.config.smtp
        if len(self.ctx.sessions) >= limits.max_connections:
            self._over_limit = "421 4.7.0 Too many connections, try again later"
        elif self.ctx.per_ip.get(self.ip, 0) >= limits.max_connections_per_ip:
            self._over_limit = f"421 4.7.0 Too many connections from [{self.ip}]"
        self.ctx.sessions.add(self)
        self.ctx.per_ip[self.ip] = self.ctx.per_ip.get(self.ip, 0) + 1
        self._counted = True
        self.ctx.bus.publish(ConnectionOpened(session=self.sid, proto="smtp", peer=self.ip,
                                              registered=bool(self.network_client),
                                              client=self.network_client))

    def connection_lost(self, error: Optional[Exception]) -> None:
        if self._counted:
            self._counted = False
            self.ctx.sessions.discard(self)
            left = self.ctx.per_ip.get(self.ip, 1) - 1
            if left > 0:
                self.ctx.per_ip[self.ip] = left
            else:
                self.ctx.per_ip.pop(self.ip, None)
            result = self.closed_reason or (
                f"{self.messages} accepted" if self.messages else (self.last_refusal or "no mail"))
            self.ctx.bus.publish(ConnectionClosed(session=self.sid, proto="smtp", peer=self.ip,
                                                  result=result, messages=self.messages))
            if self.ctx.store is not None:
                self.ctx.store.log("connections", {
                    "at": time.time(), "session": self.sid, "proto": "smtp", "peer": self.ip,
                    "client": self.client().label, "helo": self.helo, "tls": self.tls,
                    "messages": self.messages, "result": result})
        super().connection_lost(error)

    def _timeout_cb(self):
        self.closed_reason = "idle timeout"
        if self.transport is not None:
            # A client that stopped reading has left replies in our buffer:
            # close() would wait for it forever and keep its slot, so drop it.
            if self.transport.get_write_buffer_size():
                self.closed_reason = "idle timeout (client stopped reading)"
                self.transport.abort()
                return
            self.transport.write(b"421 4.4.2 Idle timeout, closing connection\r\n")
        super()._timeout_cb()

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
        return self._tls_protocol is not None

    def client(self) -> Client:
        return Client(ip=self.ip, network_client=self.network_client, login=self.login, helo=self.helo)

    def _changed(self, state: str = "") -> None:
        self.ctx.bus.publish(SessionChanged(session=self.sid, proto="smtp", peer=self.ip, helo=self.helo,
                                            tls=self.tls, login=self.login, state=state))

    async def _handle_client(self) -> None:
        if self._over_limit:
            await self._refuse_connection(self._over_limit)
            return
        await super()._handle_client()

    async def _refuse_connection(self, reply: str) -> None:
        self.closed_reason = reply
        self.ctx.bus.publish(ClientRefused(session=self.sid, proto="smtp", peer=self.ip,
                                           stage="connect", reply=reply))
        self._writer.write(reply.encode() + b"\r\n")
        try:
            await asyncio.wait_for(self._writer.drain(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.transport.close()

    async def handle_exception(self, error: Exception) -> str:
        """An unexpected error in a command: log it, answer 451, keep the session.

        Needed because this class is its own aiosmtpd handler: the inherited
        method would call itself forever.
        """
        log.error("%s: unexpected error from %s", self.sid, self.ip, exc_info=error)
        return "451 4.3.0 Internal error, please try again later"

    # -- replies ------------------------------------------------------------------

    async def push(self, status) -> None:
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
            self._writer.write(b"421 4.7.0 Too many errors, closing connection\r\n")
            self._hang_up()

    async def _refuse(self, stage: str, reply: str, address: str = "") -> None:
        self.last_refusal = f"refused: {reply}"
        self.ctx.bus.publish(ClientRefused(session=self.sid, proto="smtp", peer=self.ip, stage=stage,
                                           reply=reply, address=address))
        await self.push(reply)

    # -- greeting and extensions ----------------------------------------------------

    async def _bad_hostname(self, verb: str, hostname: Optional[str]) -> bool:
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
        self.command_size_limits = _command_limits()
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return responses[:-1] + extra + [responses[-1]]

    def _set_helo(self, hostname: str) -> None:
        self.helo = printable(hostname[:255])
        self.session.host_name = hostname
        self.tx = Transaction()
        self._changed("helo")

    def _set_rset_state(self):
        super()._set_rset_state()
        self.tx = Transaction()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str):
        if self._tls_protocol is not None:
            await self.push("554 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        await self.push("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str) -> None:
        await self.push("502 5.5.1 EXPN not available")

    async def _http(self, arg: str) -> None:
        self.closed_reason = "HTTP request on the SMTP port"
        self.ctx.bus.publish(ClientRefused(session=self.sid, proto="smtp", peer=self.ip, stage="connect",
                                           reply="421 HTTP request"))
        await self.push("421 4.7.0 This is an SMTP server, not a web server; closing")
        self._hang_up()

    smtp_GET = smtp_POST = smtp_HEAD = smtp_PUT = smtp_DELETE = smtp_CONNECT = smtp_OPTIONS = _http

    # -- AUTH -----------------------------------------------------------------------

    async def auth_PLAIN(self, _, args: list[str]) -> AuthResult:
        result = await super().auth_PLAIN(_, args)
        return await self._finish_auth(result)

    async def auth_LOGIN(self, _, args: list[str]) -> AuthResult:
        result = await super().auth_LOGIN(_, args)
        return await self._finish_auth(result)

    def _authenticate(self, mechanism: str, auth_data) -> AuthResult:
        # aiosmtpd calls this synchronously; the slow KDF check happens in
        # _finish_auth, off the event loop.
        return AuthResult(success=False, handled=False, auth_data=auth_data)

    async def _finish_auth(self, result: AuthResult) -> AuthResult:
        data = result.auth_data
        if result.handled:
            return result
        if data is None:  # client aborted with "*"; aiosmtpd already answered
            return AuthResult(success=False, handled=True)
        login = data.login.decode("utf-8", "replace")
        await asyncio.sleep(self.ctx.logins.delay(self.ip, self.ctx.config.smtp.auth_failure_delay))
        key = await self.ctx.registry.verify(login, data.password)
        if key is None:
            failures = self.ctx.logins.failed(self.ip)
            shown = printable(login[:128])
            self.ctx.bus.publish(AuthFailed(session=self.sid, proto="smtp", peer=self.ip,
                                            login=shown, failures=failures))
            log.warning("SMTP AUTH failed for %r from %s (%d recent failures)", shown, self.ip, failures)
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")
        self.login = key
        self.ctx.logins.succeeded(self.ip)
        self.ctx.bus.publish(AuthSucceeded(session=self.sid, proto="smtp", peer=self.ip, login=key))
        self._changed("authenticated")
        return AuthResult(success=True, auth_data=key)

    # -- MAIL / RCPT -------------------------------------------------------------------

    def _parse(self, arg: Optional[str], keyword: str, null_ok: bool, smtputf8: Optional[bool] = None,
               postmaster_domain: Optional[str] = None):
        if arg is None:
            raise AddressError("missing argument", f"501 5.5.4 Syntax: {keyword} <address>")
        rest = self._strip_command_keyword(keyword, arg)
        if rest is None:
            raise AddressError("bad syntax", f"501 5.5.4 Syntax: {keyword} <address>")
        if "\x00" in rest:
            raise AddressError("NUL in command", "501 5.5.2 NUL byte in command")
        path, param_text = split_path(rest)
        if param_text and not self.session.extended_smtp:
            raise AddressError("parameters need EHLO", "501 5.5.4 Parameters need EHLO")
        params = parse_params(param_text, smtputf8=True)
        if smtputf8 is None:
            smtputf8 = "SMTPUTF8" in params
        addr = parse_path(path, null_ok=null_ok, smtputf8=smtputf8, postmaster_domain=postmaster_domain)
        return addr, params

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: Optional[str]) -> None:
        if await self.check_helo_needed():
            return
        if self.tx.has_sender:
            await self.push("503 5.5.1 Nested MAIL command")
            return
        try:
            sender, params = self._parse(arg, "FROM:", null_ok=True)
        except AddressError as exc:
            await self.push(exc.reply)
            return
        smtputf8 = False
        body_8bit = False
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    await self.push("501 5.5.4 SIZE needs a number")
                    return
                if int(value) > self.ctx.config.smtp.max_message_size:
                    await self._refuse("mail", "552 5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    await self.push("501 5.5.4 BODY must be 7BIT or 8BITMIME")
                    return
                body_8bit = (value or "").upper() == "8BITMIME"
            elif key == "SMTPUTF8":
                if value is not None:
                    await self.push("501 5.5.4 SMTPUTF8 takes no value")
                    return
                smtputf8 = True
            else:
                await self.push(f"555 5.5.4 MAIL parameter {key} not supported")
                return
        refusal = self.ctx.policy.check_sender(self.client(), sender)
        if refusal is not None:
            await self._refuse("mail", str(refusal), str(sender or "<>"))
            return
        self.tx = Transaction(sender=sender, has_sender=True, smtputf8=smtputf8, body_8bit=body_8bit)
        self._changed("mail")
        await self.push("250 2.1.0 Sender OK")

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: Optional[str]) -> None:
        if await self.check_helo_needed():
            return
        if not self.tx.has_sender:
            await self.push("503 5.5.1 Need MAIL command first")
            return
        try:
            rcpt, params = self._parse(arg, "TO:", null_ok=False, smtputf8=self.tx.smtputf8,
                                       postmaster_domain=self.ctx.config.server.local_domains[0])
        except AddressError as exc:
            await self.push(exc.reply)
            return
        if params:
            await self.push(f"555 5.5.4 RCPT parameter {next(iter(params))} not supported")
            return
        if rcpt.needs_smtputf8 and not self.tx.smtputf8:
            await self.push("553 5.6.7 Non-ASCII address requires SMTPUTF8")
            return
        if self.tx.count >= self.ctx.config.smtp.max_recipients:
            await self.push("452 4.5.3 Too many recipients")
            return
        refusal, key = self.ctx.policy.check_recipient(self.client(), rcpt)
        if refusal is not None:
            await self._refuse("rcpt", str(refusal), str(rcpt))
            return
        text = str(rcpt)
        if text.lower() not in self.tx.seen:
            self.tx.seen.add(text.lower())
            if key is not None:
                self.tx.local.setdefault(key, []).append(text)
            else:
                self.tx.remote.append(text)
        await self.push("250 2.1.5 Recipient OK")

    # -- DATA ---------------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if not self.tx.has_sender:
            await self.push("503 5.5.1 Need MAIL command first")
            return
        if not self.tx.seen:
            await self.push("554 5.5.1 No valid recipients")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        raw, problem = await self._read_data()
        data_ended = time.monotonic()
        if raw is None:
            return
        tx, self.tx = self.tx, Transaction()
        if problem:
            await self._refuse("data", problem)
            return
        body = unstuff_and_normalise(raw)
        if len(_RECEIVED.findall(header_section(body))) > MAX_RECEIVED:
            await self._refuse("data", "554 5.4.6 Too many Received headers: mail loop detected")
            return
        if has_long_line(body):
            await self._refuse("data", "500 5.5.6 Line too long (RFC 5321 4.5.3.1.6: 998 octets)")
            return
        envelope = Envelope(sender=str(tx.sender) if tx.sender else "", local=tx.local, remote=tx.remote,
                            smtputf8=tx.smtputf8, body_8bit=tx.body_8bit or not body.isascii(),
                            peer=self.ip, helo=self.helo)
        from ..store.queue import new_id

        msg_id = new_id()
        data = self._received_header(msg_id, tx) + body
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
                                             peer=self.ip, store_seconds=time.monotonic() - data_ended))
        await self.push(f"250 2.0.0 OK: queued as {msg_id}")

    async def _read_data(self) -> tuple[Optional[bytes], str]:
        """Read up to ``<CRLF>.<CRLF>`` in large chunks.

        Returns (raw data with the final CRLF, problem reply or ""). Only the
        exact CRLF.CRLF sequence ends the data; anything pipelined after it is
        put back for the command loop.
        """
        # Commands are read under aiosmtpd's 1001-octet reader limit, which
        # also pauses the socket whenever 2 KiB are buffered; for the body
        # let up to 512 KiB queue up so each wake-up brings a large chunk.
        reader = self._reader
        reader._limit = DATA_READ_LIMIT
        try:
            return await self._read_body()
        finally:
            reader._limit = self.line_length_limit

    async def _read_body(self) -> tuple[Optional[bytes], str]:
        limit = self.ctx.config.smtp.max_message_size
        deadline = time.monotonic() + self.ctx.config.smtp.data_timeout
        reader = self._reader
        buf = bytearray(b"\r\n")  # the CRLF that ended the DATA command line
        scan = 0
        discarded = 0
        while True:
            if time.monotonic() > deadline:
                self.closed_reason = "DATA took too long"
                self._writer.write(b"421 4.4.2 DATA timeout, closing connection\r\n")
                self._hang_up()
                return None, ""
            chunk = await reader.read(262144)
            if not chunk:
                self.closed_reason = "connection lost during DATA"
                return None, ""
            self._reset_timeout()
            buf += chunk
            end = buf.find(b"\r\n.\r\n", scan)
            if end >= 0:
                leftover = bytes(buf[end + 5:])
                if leftover:
                    reader._buffer[0:0] = leftover  # pipelined commands after the dot
                if discarded or end > limit:
                    return b"", "552 5.3.4 Message size exceeds fixed maximum message size"
                return bytes(buf[2:end + 2]), ""
            scan = max(0, len(buf) - 4)
            if len(buf) - 2 > limit + 2:
                discarded += len(buf) - 4
                del buf[:-4]
                scan = 0

    def _received_header(self, msg_id: str, tx: Transaction) -> bytes:
        proto = "ESMTP" if self.session.extended_smtp else "SMTP"
        if self.tls:
            proto += "S"
        if self.login:
            proto += "A"
        helo = re.sub(r"[^\x21-\x7e]", "?", self.helo) or "unknown"
        rcpts = tx.remote + [a for addrs in tx.local.values() for a in addrs]
        for_part = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
        ip = f"IPv6:{self.ip}" if ":" in self.ip else self.ip
        line = (f"Received: from {helo} ([{ip}])\r\n\tby {self.hostname} (mailtui) with {proto} "
                f"id {msg_id}{for_part};\r\n\t{formatdate(localtime=True)}\r\n")
        return line.encode("utf-8", "surrogateescape")
