"""One frozen dataclass per IMAP command: what :func:`parser.parse_command` returns.

Every command has its ``tag``. Mailbox names are as sent on the wire
(modified UTF-7, see :mod:`mutf7`), except that INBOX is always ``"INBOX"``.
Flags are canonical: system flags capitalised (``\\Seen``), keywords as sent.
The session layer dispatches on the class.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .fetchspec import FetchAttribute
from .searchkeys import SearchProgram
from .sequence import SequenceSet


@dataclass(frozen=True)
class Command:
    tag: str


# -- any state -------------------------------------------------------------
@dataclass(frozen=True)
class Capability(Command):
    pass


@dataclass(frozen=True)
class Noop(Command):
    pass


@dataclass(frozen=True)
class Logout(Command):
    pass


@dataclass(frozen=True)
class Id(Command):
    """RFC 2971; ``params`` is None for ``ID NIL``."""
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class Enable(Command):
    """RFC 5161; capability names upper-cased."""
    capabilities: tuple[str, ...]


# -- not authenticated -------------------------------------------------------
@dataclass(frozen=True)
class StartTls(Command):
    pass


@dataclass(frozen=True)
class Login(Command):
    user: str
    password: str


@dataclass(frozen=True)
class Authenticate(Command):
    """``initial_response`` is the decoded SASL-IR (RFC 4959): None if absent, b"" for ``=``."""
    mechanism: str
    initial_response: bytes | None


# -- authenticated -------------------------------------------------------------
@dataclass(frozen=True)
class Select(Command):
    mailbox: str
    condstore: bool = False


@dataclass(frozen=True)
class Examine(Select):
    """SELECT, read-only."""


@dataclass(frozen=True)
class Create(Command):
    mailbox: str


@dataclass(frozen=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True)
class Rename(Command):
    mailbox: str
    new_name: str


@dataclass(frozen=True)
class Subscribe(Command):
    mailbox: str


@dataclass(frozen=True)
class Unsubscribe(Command):
    mailbox: str


@dataclass(frozen=True)
class List(Command):
    """LIST with LIST-EXTENDED (RFC 5258) options, upper-cased.

    ``selection`` holds e.g. ``SUBSCRIBED``, ``SPECIAL-USE``,
    ``RECURSIVEMATCH``; ``returns`` e.g. ``CHILDREN``, ``SPECIAL-USE``,
    ``SUBSCRIBED``; ``status_items`` is set by ``RETURN (STATUS (...))``.
    """
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lsub(Command):
    reference: str
    pattern: str


@dataclass(frozen=True)
class Namespace(Command):
    pass


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    date_time: dt.datetime | None
    message: bytes


@dataclass(frozen=True)
class Idle(Command):
    """The I/O layer then waits for the ``DONE`` line itself."""


# -- selected --------------------------------------------------------------------
@dataclass(frozen=True)
class Check(Command):
    pass


@dataclass(frozen=True)
class Close(Command):
    pass


@dataclass(frozen=True)
class Unselect(Command):
    pass


@dataclass(frozen=True)
class Expunge(Command):
    """``uids`` is set for UID EXPUNGE (UIDPLUS): expunge only these UIDs."""
    uids: SequenceSet | None = None


@dataclass(frozen=True)
class Search(Command):
    program: SearchProgram
    uid: bool = False


@dataclass(frozen=True)
class Fetch(Command):
    """``attributes`` has macros expanded; UID FETCH has ``UID`` added first if missing."""
    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False


@dataclass(frozen=True)
class Store(Command):
    """``mode`` is ``"replace"`` (FLAGS), ``"add"`` (+FLAGS) or ``"remove"`` (-FLAGS)."""
    sequence: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False


@dataclass(frozen=True)
class Copy(Command):
    sequence: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True)
class Move(Copy):
    """RFC 6851; same arguments as COPY."""
