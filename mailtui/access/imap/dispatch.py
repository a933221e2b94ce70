"""Which command runs in which state, and the one entry point the I/O layer calls.

:func:`handle` answers one parsed command: a command not valid in the
session's state gets BAD (RFC 3501 §6: "Not logged in", "No mailbox
selected"), any other client mistake a tagged BAD or NO; an unexpected
failure of ours becomes ``NO [SERVERBUG]``, never a traceback on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ...store.folder import FolderGone
from ...store.mailflags import TooManyKeywords
from . import commands as c
from . import mailboxcmds as mb
from . import messagecmds as mc
from .errors import ParseError
from .response import Code, continuation, status_line
from .session import DONE, ImapSession, Out, Outcome, State

log = logging.getLogger(__name__)
Handler = Callable[[ImapSession, c.Command, Out], Awaitable[Outcome]]

_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_PRE = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SEL = frozenset({State.SELECTED})


async def _idle(session: ImapSession, cmd: c.Idle, out: Out) -> Outcome:
    session.idle_command = cmd
    session.woken.clear()
    session.sync(out)                 # anything already pending goes first
    out.write(continuation("idling"))
    return Outcome(idle=True)


TABLE: dict[type, tuple[frozenset[State], Handler]] = {
    c.Capability: (_ANY, ImapSession.capability),
    c.Noop: (_ANY, ImapSession.noop),
    c.Logout: (_ANY, ImapSession.logout),
    c.Id: (_ANY, ImapSession.id),
    c.StartTls: (_PRE, ImapSession.starttls),
    c.Login: (_PRE, ImapSession.login_cmd),
    c.Authenticate: (_PRE, ImapSession.authenticate),
    c.Enable: (_AUTH, ImapSession.enable),
    c.Select: (_AUTH, mb.select),
    c.Examine: (_AUTH, mb.select),
    c.Create: (_AUTH, mb.create),
    c.Delete: (_AUTH, mb.delete),
    c.Rename: (_AUTH, mb.rename),
    c.Subscribe: (_AUTH, mb.subscribe),
    c.Unsubscribe: (_AUTH, mb.subscribe),
    c.List: (_AUTH, mb.list_cmd),
    c.Lsub: (_AUTH, mb.list_cmd),
    c.Namespace: (_AUTH, mb.namespace),
    c.Status: (_AUTH, mb.status),
    c.Append: (_AUTH, mb.append),
    c.Idle: (_AUTH, _idle),
    c.Check: (_SEL, mc.check),
    c.Close: (_SEL, mc.close),
    c.Unselect: (_SEL, mc.close),
    c.Expunge: (_SEL, mc.expunge),
    c.Search: (_SEL, mc.search),
    c.Fetch: (_SEL, mc.fetch),
    c.Store: (_SEL, mc.store),
    c.Copy: (_SEL, mc.copy),
    c.Move: (_SEL, mc.copy),
}


async def handle(session: ImapSession, command: c.Command, out: Out) -> Outcome:
    """Answer one command; see the module docstring."""
    states, handler = TABLE[type(command)]
    try:
        if session.state not in states:
            raise _wrong_state(command, session.state)
        return await handler(session, command, out)
    except ParseError as exc:
        return session.refuse(exc, out)
    except TooManyKeywords as exc:
        out.write(status_line(command.tag, "NO", str(exc), Code.of("LIMIT")))
        return DONE
    except FolderGone:                       # the selected mailbox was deleted by another session
        out.write(status_line("*", "BYE", "The selected mailbox no longer exists"))
        session.result = "mailbox deleted"
        return Outcome(close=True)
    except OSError:
        log.exception("IMAP %s: %s failed", session.id, type(command).__name__)
        out.write(status_line(command.tag, "NO", "Server error, try again later", Code.of("SERVERBUG")))
        return DONE


async def idle_update(session: ImapSession, out: Out) -> None:
    """IDLE woke up: push what changed (RFC 2177 allows EXPUNGE here)."""
    session.woken.clear()
    session.sync(out)


def idle_done(session: ImapSession, line: bytes, out: Out) -> Outcome:
    """The line that ends IDLE: ``DONE``, anything else is BAD (the client is confused)."""
    cmd, session.idle_command = session.idle_command, None
    if line.rstrip(b"\r\n").upper() != b"DONE":
        return session.refuse(ParseError("Expected DONE to end IDLE", cmd.tag if cmd else "*"), out)
    return session.ok(cmd, out, "IDLE terminated")


def _wrong_state(cmd: c.Command, state: State) -> ParseError:
    if state is State.NOT_AUTHENTICATED:
        return ParseError("Not logged in", cmd.tag)
    if state is State.AUTHENTICATED and TABLE[type(cmd)][0] is _SEL:
        return ParseError("No mailbox selected", cmd.tag)
    return ParseError("Command not valid in this state", cmd.tag)
