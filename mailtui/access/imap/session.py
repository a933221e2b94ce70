"""The IMAP4rev1 session state machine (RFC 3501 §3): one per connection, no sockets.

States are named as the RFC names them. The I/O layer (:mod:`server`) gives
each parsed command to :meth:`ImapSession.handle` with an :class:`Out` to
write responses to, and acts on the :class:`Outcome` (close, STARTTLS,
IDLE, a SASL continuation). Commands of the authenticated and selected
states live in :mod:`mailboxcmds` and :mod:`messagecmds`; this module has
dispatch, the any-state and login commands, and the update rules.

Passwords never travel in clear: LOGIN and AUTHENTICATE are refused before
TLS unless the peer is on loopback, and LOGINDISABLED is advertised then
(as Dovecot does by default).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import logging
from dataclasses import dataclass
from typing import Protocol

from ...store.mailboxes import MailStore
from ...wire import is_loopback
from . import commands as c
from .errors import ParseError
from .response import Atom, Code, continuation, status_line
from .selection import Selection

log = logging.getLogger(__name__)
MAX_ERRORS = 10              # BAD responses before we hang up
MAX_AUTH_FAILURES = 3        # failed logins before we hang up
BASE_CAPABILITIES = ("IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE")
AUTH_CAPABILITIES = ("NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE",
                     "LIST-EXTENDED", "LIST-STATUS", "ESEARCH")


class State(enum.Enum):
    NOT_AUTHENTICATED = "NOT AUTHENTICATED"
    AUTHENTICATED = "AUTHENTICATED"
    SELECTED = "SELECTED"
    LOGOUT = "LOGOUT"


class Out(Protocol):
    """Where a session writes responses; the I/O layer drains it to the socket."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Let the writing catch up if much is pending (long answers); may return at once."""


class Host(Protocol):
    """What a session needs from its server."""

    hostname: str
    store: MailStore
    max_message_size: int
    tls_available: bool

    async def verify(self, session: ImapSession, login: str, password: str | bytes) -> str | None: ...

    def logged_in(self, session: ImapSession) -> bool: ...

    def login_failed(self, session: ImapSession, login: str) -> None: ...

    def changed(self, session: ImapSession) -> None: ...


@dataclass
class Outcome:
    close: bool = False
    starttls: bool = False
    idle: bool = False
    sasl: bool = False


DONE = Outcome()


class ImapSession:
    def __init__(self, host: Host, *, id: str, ip: str, tls: bool = False):
        self.host = host
        self.id = id
        self.ip = ip
        self.tls = tls
        self.state = State.NOT_AUTHENTICATED
        self.login = ""                 # last login tried, then the mailbox key
        self.key: str | None = None
        self.counted = False            # counted against imap.max_connections_per_user
        self.selection: Selection | None = None
        self.errors = 0
        self.auth_failures = 0
        self.result = ""
        self.idle_command: c.Idle | None = None
        self.woken = asyncio.Event()    # set by the folder's watchers: something changed
        self._sasl_tag: str | None = None

    # -- facts -------------------------------------------------------------------
    @property
    def plaintext_ok(self) -> bool:
        """Whether a password may be sent now: inside TLS, or from this machine."""
        return self.tls or is_loopback(self.ip)

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if self.host.tls_available and not self.tls:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.plaintext_ok else "LOGINDISABLED")
        else:
            caps += AUTH_CAPABILITIES
            caps.append(f"APPENDLIMIT={self.host.max_message_size}")
        return caps

    def greeting(self) -> bytes:
        return status_line("*", "OK", f"{self.host.hostname} mailtui IMAP4rev1 ready",
                           Code.of("CAPABILITY", *map(_atom, self.capabilities())))

    # -- errors --------------------------------------------------------------------------
    def refuse(self, exc: ParseError, out: Out) -> Outcome:
        """Send a parse or state error; the budget's last BAD also hangs up."""
        out.write(exc.response())
        if exc.status != "BAD":
            return DONE
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            out.write(status_line("*", "BYE", "Too many invalid commands"))
            self.result = "too many errors"
            return Outcome(close=True)
        return DONE

    def wake(self) -> None:
        """Folder watcher: another session or a delivery changed the selected mailbox."""
        self.woken.set()

    def tls_started(self) -> None:
        self.tls = True
        self.host.changed(self)

    # -- any state ----------------------------------------------------------------------
    async def capability(self, cmd: c.Capability, out: Out) -> Outcome:
        out.write(b"* CAPABILITY " + " ".join(self.capabilities()).encode("ascii") + b"\r\n")
        return self.ok(cmd, out, "CAPABILITY completed")

    async def noop(self, cmd: c.Command, out: Out) -> Outcome:
        if self.selection is not None:
            await self.look()
        return self.ok(cmd, out, f"{type(cmd).__name__.upper()} completed")

    async def logout(self, cmd: c.Logout, out: Out) -> Outcome:
        self.unselect()
        out.write(status_line("*", "BYE", "Logging out"))
        self.state = State.LOGOUT
        self.result = self.result or "logout"
        self.ok(cmd, out, "LOGOUT completed")
        return Outcome(close=True)

    async def id(self, cmd: c.Id, out: Out) -> Outcome:
        out.write(b'* ID ("name" "mailtui" "vendor" "mailtui")\r\n')
        return self.ok(cmd, out, "ID completed")

    async def enable(self, cmd: c.Enable, out: Out) -> Outcome:
        out.write(b"* ENABLED\r\n")           # nothing we offer needs enabling
        return self.ok(cmd, out, "ENABLE completed")

    # -- NOT AUTHENTICATED ---------------------------------------------------------------
    async def starttls(self, cmd: c.StartTls, out: Out) -> Outcome:
        if self.tls or not self.host.tls_available:
            raise ParseError("TLS is already active" if self.tls else "STARTTLS is not available", cmd.tag)
        self.ok(cmd, out, "Begin TLS negotiation now")
        return Outcome(starttls=True)

    async def login_cmd(self, cmd: c.Login, out: Out) -> Outcome:
        if not self.plaintext_ok:
            return self.no(cmd, out, "Plaintext authentication disallowed on non-secure connections",
                           "PRIVACYREQUIRED")
        return await self._login(cmd.tag, cmd.user, cmd.password, out)

    async def authenticate(self, cmd: c.Authenticate, out: Out) -> Outcome:
        if cmd.mechanism != "PLAIN":
            return self.no(cmd, out, "Unsupported authentication mechanism", "CANNOT")
        if not self.plaintext_ok:
            return self.no(cmd, out, "Plaintext authentication disallowed on non-secure connections",
                           "PRIVACYREQUIRED")
        if cmd.initial_response is None:
            self._sasl_tag = cmd.tag
            out.write(continuation())
            return Outcome(sasl=True)
        return await self._plain(cmd.tag, cmd.initial_response, out)

    async def sasl_line(self, line: bytes, out: Out) -> Outcome:
        """The client's answer to our ``+`` during AUTHENTICATE (RFC 3501 §6.2.2)."""
        tag, self._sasl_tag = self._sasl_tag or "*", None
        line = line.rstrip(b"\r\n")
        if line == b"*":
            return self.refuse(ParseError("Authentication cancelled", tag), out)
        try:
            data = base64.b64decode(line, validate=True) if line != b"=" else b""
        except (binascii.Error, ValueError):
            return self.refuse(ParseError("Invalid base64 in SASL response", tag), out)
        return await self._plain(tag, data, out)

    async def _plain(self, tag: str, data: bytes, out: Out) -> Outcome:
        """RFC 4616: ``authzid NUL authcid NUL password``; no logging in as someone else."""
        parts = data.split(b"\0")
        if len(parts) != 3:
            return self.refuse(ParseError("Malformed PLAIN response", tag), out)
        try:
            authzid, authcid = parts[0].decode("utf-8"), parts[1].decode("utf-8")
        except UnicodeDecodeError:
            return self.refuse(ParseError("Malformed PLAIN response", tag), out)
        if authzid and authzid.strip().lower() != authcid.strip().lower():
            return await self._failed(tag, authcid, out)
        return await self._login(tag, authcid, parts[2], out)

    async def _login(self, tag: str, login: str, password: str | bytes, out: Out) -> Outcome:
        login = login.strip().lower()
        self.login = login
        key = await self.host.verify(self, login, password)
        if key is None:
            return await self._failed(tag, login, out)
        self.key = key
        self.login = key
        if not self.host.logged_in(self):
            self.key = None
            out.write(status_line(tag, "NO", "Too many sessions for this user", Code.of("LIMIT")))
            return DONE
        self.state = State.AUTHENTICATED
        try:
            await self.host.store.run(self.host.store.user(key).ensure_special)
        except OSError:
            log.exception("cannot create the special folders of %s", key)
        self.host.changed(self)
        out.write(status_line(tag, "OK", "Logged in", Code.of("CAPABILITY", *map(_atom, self.capabilities()))))
        return DONE

    async def _failed(self, tag: str, login: str, out: Out) -> Outcome:
        self.auth_failures += 1
        self.host.login_failed(self, login)
        out.write(status_line(tag, "NO", "Authentication failed", Code.of("AUTHENTICATIONFAILED")))
        if self.auth_failures >= MAX_AUTH_FAILURES:
            out.write(status_line("*", "BYE", "Too many failed logins"))
            self.result = "too many failed logins"
            return Outcome(close=True)
        return DONE

    # -- selected-state plumbing ------------------------------------------------------------
    async def look(self) -> None:
        """Take in what changed on disk (NOOP, CHECK, IDLE): new mail gets its UIDs here."""
        assert self.selection is not None
        await self.selection.folder.refresh()

    def sync(self, out: Out, *, expunges: bool = True) -> None:
        if self.selection is not None:
            self.selection.sync(out, expunges=expunges)

    def unselect(self) -> None:
        if self.selection is not None:
            folder = self.selection.folder
            folder.unwatch(self)
            self.host.store.release(folder, self.key or "")
            self.selection = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def close(self) -> None:
        """The connection is gone: let go of the folder."""
        self.unselect()

    # -- completions ---------------------------------------------------------------------------
    def ok(self, cmd: c.Command, out: Out, text: str, code: str | Code | None = None) -> Outcome:
        return self._complete(cmd, out, "OK", text, code)

    def no(self, cmd: c.Command, out: Out, text: str, code: str | Code | None = None) -> Outcome:
        return self._complete(cmd, out, "NO", text, code)

    def _complete(self, cmd: c.Command, out: Out, status: str, text: str, code: str | Code | None) -> Outcome:
        """The tagged response, preceded by the updates the RFC allows at this point (§7.4.1)."""
        if self.selection is not None:
            fetchlike = isinstance(cmd, (c.Fetch, c.Store, c.Search)) and not cmd.uid
            self.selection.sync(out, expunges=not fetchlike)
        out.write(status_line(cmd.tag, status, text, Code.of(code) if isinstance(code, str) else code))
        return DONE


def _atom(text: str) -> Atom:
    return Atom(text)
