"""Every use of aiosmtpd 1.4's internals, in one place.

aiosmtpd is meant to be extended through handler hooks and ``smtp_*`` verbs,
and mailtui does that everywhere it can. A few things its hooks do not offer:

* a cheap session: ``SMTP.__init__`` finds the AUTH mechanisms, hooks and
  verbs by reflection on every connection (0.35 ms, a third of the CPU one
  message costs); :meth:`Engine.fast_init` builds those tables once per class;
* an asynchronous password check (aiosmtpd's ``_authenticate`` is
  synchronous; the KDF must run off the loop behind the login throttle):
  :meth:`Engine.check_login`;
* the idle timer, the greeting and RSET as hooks (:meth:`Engine.on_idle_timeout`,
  :meth:`Engine.admit`, :meth:`Engine.on_reset`);
* DATA read in large chunks, with what was pipelined after it put back
  (:meth:`Engine.data_stream`), and replies written without waiting
  (:meth:`Engine.write_now`), for the 421s that end a session.
* TLS that began before the session (an implicit-TLS listener, RFC 8314):
  aiosmtpd knows only STARTTLS; :attr:`Engine.tls_active` knows both.

The session (``smtp.py``) subclasses :class:`Engine` and uses only these
names. :data:`PRIVATE_ATTRIBUTES` and :data:`PRIVATE_METHODS` list what of
aiosmtpd (and asyncio's ``StreamReader``) this module touches;
``tests/receive/test_aiosmtpd_compat.py`` checks each of them on a real
aiosmtpd session, so an upgrade fails there, loudly, and not in a client's
conversation. aiosmtpd stays pinned ``<1.5`` in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    LoginPassword,
    _AuthMechAttr,
    login_always_fail,
    syntax,
)

from ..replies import SmtpReply

__all__ = ["Engine", "command_limits", "syntax"]

IDENT = "ESMTP mailtui"
DATA_READ_LIMIT = 256 * 1024   # StreamReader buffer during DATA (commands keep aiosmtpd's 1001 octets)

# What of aiosmtpd's SMTP (after a connection is made) this module reads, sets or overrides.
PRIVATE_ATTRIBUTES = (
    "_reader", "_writer", "_tls_protocol", "_timeout_duration", "_timeout_handle", "_tls_handshake_okay",
    "_original_transport", "_handler_coroutine", "_auth_require_tls", "_proxy_timeout", "_authenticator",
    "_auth_callback", "_auth_required", "_auth_methods", "_handle_hooks", "_ehlo_hook_ver", "_smtp_methods",
    "_enforce_call_limit", "_decode_data",
)
PRIVATE_METHODS = ("_handle_client", "_timeout_cb", "_reset_timeout", "_set_rset_state", "_authenticate",
                   "_cb_client_connected")
READER_ATTRIBUTES = ("_limit", "_buffer")   # asyncio.StreamReader's, during DATA


def command_limits() -> collections.defaultdict:
    """Command line limits: 512 octets, MAIL longer by what SIZE and SMTPUTF8 add.

    aiosmtpd keeps these in a class-wide dict that grows on every EHLO; each
    session gets its own, set again at every EHLO.
    """
    limits = collections.defaultdict(lambda: 512)
    limits["MAIL"] = 512 + 26 + 10
    return limits


class _ReaderStream:
    """The session's StreamReader as a :class:`~mailtui.receive.data.DataStream`."""

    __slots__ = ("_reader", "alive")

    def __init__(self, reader: asyncio.StreamReader, alive) -> None:
        self._reader = reader
        self.alive = alive          # restarts aiosmtpd's idle timer

    async def read(self, n: int) -> bytes:
        return await self._reader.read(n)

    def unread(self, data: bytes) -> None:
        self._reader._buffer[0:0] = data   # StreamReader has no public put-back


class Engine(SMTP):
    """aiosmtpd's protocol engine, with its internals behind the names listed above."""

    _tables: tuple[dict, dict, dict] | None = None

    # -- set-up --------------------------------------------------------------------

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

    def fast_init(self, *, data_size_limit: int, hostname: str, tls_context, timeout: float,
                  auth_require_tls: bool) -> None:
        """What ``SMTP.__init__(handler=self, enable_SMTPUTF8=True, ...)`` sets up, without its reflection.

        The session is its own handler. The guard test checks that this sets
        exactly the attributes ``SMTP.__init__`` would.
        """
        loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=loop)
        self.__ident__ = IDENT
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
        self.command_size_limits = command_limits()
        self.began_in_tls = False   # an implicit-TLS listener's connection; set in connection_made

    def reset_command_limits(self) -> None:
        """Undo what aiosmtpd's EHLO added to the MAIL line limit (call from ``handle_EHLO``)."""
        self.command_size_limits = command_limits()

    # -- hooks for the session -------------------------------------------------------

    async def admit(self) -> bool:
        """Before the greeting: False ends the connection (the session has said why)."""
        return True

    def on_idle_timeout(self) -> bool:
        """The idle timer ran out: True lets aiosmtpd close the connection as usual."""
        return True

    def on_reset(self) -> None:
        """HELO, EHLO, RSET or STARTTLS started over: forget the transaction."""

    async def check_login(self, login: bytes, password: bytes) -> str | SmtpReply:
        """Check decoded AUTH credentials: the mailbox key, or the reply refusing them."""
        raise NotImplementedError

    # -- what the session may use ----------------------------------------------------

    @property
    def tls_active(self) -> bool:
        """TLS protects this connection: STARTTLS has completed, or it began in TLS (RFC 8314)."""
        return self._tls_protocol is not None or self.began_in_tls

    def write_now(self, line: bytes) -> None:
        """Queue a reply line without waiting for the client to read it (a closing 421)."""
        self._writer.write(line)

    async def write_last(self, line: bytes, *, timeout: float) -> None:
        """Send a last reply line, give the client ``timeout`` seconds to take it, then close."""
        self._writer.write(line)
        try:
            await asyncio.wait_for(self._writer.drain(), timeout)
        except (TimeoutError, ConnectionError):
            pass
        self.transport.close()

    @contextlib.contextmanager
    def data_stream(self) -> Iterator[_ReaderStream]:
        """The connection as a chunked byte stream for DATA.

        Commands are read under aiosmtpd's 1001-octet reader limit, which also
        pauses the socket whenever 2 KiB are buffered; for the body up to
        512 KiB may queue up, so each wake-up brings a large chunk.
        """
        reader = self._reader
        reader._limit = DATA_READ_LIMIT
        try:
            yield _ReaderStream(reader, self._reset_timeout)
        finally:
            reader._limit = self.line_length_limit

    @property
    def handler_task(self) -> asyncio.Task | None:
        """The task that reads this session's commands; aiosmtpd ends it when the connection is lost."""
        return self._handler_coroutine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:   # the first call; STARTTLS calls again with its TLS transport
            # Asked now: once the connection is lost, a TLS transport no longer answers.
            self.began_in_tls = transport.get_extra_info("ssl_object") is not None
        super().connection_made(transport)

    # -- aiosmtpd's private methods, routed to the hooks ------------------------------

    async def _handle_client(self) -> None:
        if await self.admit():
            await super()._handle_client()

    def _timeout_cb(self) -> None:
        if self.on_idle_timeout():
            super()._timeout_cb()

    def _set_rset_state(self) -> None:
        super()._set_rset_state()
        self.on_reset()

    # -- AUTH: aiosmtpd decodes PLAIN and LOGIN, check_login decides -------------------

    async def auth_PLAIN(self, _, args: list[str]) -> AuthResult:
        return await self._finish_auth(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _, args: list[str]) -> AuthResult:
        return await self._finish_auth(await super().auth_LOGIN(_, args))

    def _authenticate(self, mechanism: str, auth_data: LoginPassword) -> AuthResult:
        # Called synchronously by the mechanisms: hand the credentials on to _finish_auth.
        return AuthResult(success=False, handled=False, auth_data=auth_data)

    async def _finish_auth(self, result: AuthResult) -> AuthResult:
        data = result.auth_data
        if result.handled:
            return result
        if data is None:  # client aborted with "*"; aiosmtpd already answered
            return AuthResult(success=False, handled=True)
        outcome = await self.check_login(data.login, data.password)
        if isinstance(outcome, SmtpReply):
            return AuthResult(success=False, handled=False, message=str(outcome))
        return AuthResult(success=True, auth_data=outcome)
