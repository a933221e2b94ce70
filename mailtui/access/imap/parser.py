"""``parse_command(pieces)`` → a :mod:`commands` dataclass, or :class:`ParseError`.

Pure: no I/O, no state. Whether a command is allowed in the current state
(LOGIN after authentication, FETCH without a selected mailbox) is the
session layer's call; this layer only checks the grammar. Nothing but
:class:`ParseError` escapes, whatever the input (a property test holds it to
that).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence

from . import commands as c
from .dates import parse_date_time
from .errors import ParseError
from .fetchspec import FetchAttribute, parse_fetch_attributes
from .literals import tag_of
from .reader import Reader
from .searchkeys import parse_search

SYSTEM_FLAGS = {name.lower(): name for name in
                ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
LIST_SELECTION = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
LIST_RETURN = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS")
ID_MAX_PAIRS, ID_MAX_FIELD, ID_MAX_VALUE = 30, 30, 1024     # RFC 2971 §3.3


def parse_command(pieces: Sequence[bytes]) -> c.Command:
    """Parse one command: ``pieces`` are its lines (without CRLF) and the literals between."""
    tag = tag_of(pieces[0]) if pieces else "*"
    try:
        return _parse(pieces, tag)
    except ParseError:
        raise
    except (ValueError, IndexError, TypeError, UnicodeError, RecursionError) as exc:
        # A safety net: these mean a bug here, but the client still gets BAD.
        raise ParseError(f"Invalid command ({type(exc).__name__})", tag) from exc


def _parse(pieces: Sequence[bytes], tag: str) -> c.Command:
    if not pieces or not pieces[0].strip():
        raise ParseError("Empty command", "*")
    if any(b"\x00" in piece for piece in pieces):
        raise ParseError("NUL octets are not allowed", tag)
    if tag == "*" or tag == "+" or tag.startswith("+"):
        raise ParseError("Invalid tag", "*")
    reader = Reader(pieces, tag)
    reader.pos = len(tag)
    reader.sp()
    name = reader.keyword()
    uid = False
    if name == "UID":
        reader.sp()
        name, uid = reader.keyword(), True
        if name not in _UID_COMMANDS:
            reader.fail(f"UID {name} is not a command")
    handler = _COMMANDS.get(name)
    if handler is None:
        reader.fail(f"Unknown command {name[:40]}")
    command = handler(reader, uid) if name in _UID_COMMANDS else handler(reader)
    reader.end()
    return command


def _no_arguments(kind: type[c.Command]) -> Callable[[Reader], c.Command]:
    return lambda reader: kind(reader.tag)


def _flag(reader: Reader) -> str:
    """A settable flag: system flag (canonical case) or keyword."""
    if reader.peek() == b"\\":
        reader.pos += 1
        name = "\\" + reader.atom()
        if name.lower() not in SYSTEM_FLAGS:
            reader.fail(f"Flag {name} cannot be set")
        return SYSTEM_FLAGS[name.lower()]
    return reader.atom()


def _flag_list(reader: Reader) -> tuple[str, ...]:
    return tuple(reader.list_of(lambda: _flag(reader), allow_empty=True))


def _one_mailbox(kind: type[c.Command]) -> Callable[[Reader], c.Command]:
    def parse(reader: Reader) -> c.Command:
        reader.sp()
        return kind(reader.tag, reader.mailbox())
    return parse


def _login(reader: Reader) -> c.Login:
    reader.sp()
    user = reader.text(reader.astring(allow_8bit=True), "user name")
    reader.sp()
    return c.Login(reader.tag, user, reader.text(reader.astring(allow_8bit=True), "password"))


def _authenticate(reader: Reader) -> c.Authenticate:
    reader.sp()
    mechanism = reader.keyword()
    initial = None
    if reader.peek() == b" ":
        reader.pos += 1
        raw = reader.match(_BASE64, "a base64 initial response")
        try:
            initial = b"" if raw == b"=" else base64.b64decode(raw, validate=True)
        except binascii.Error:
            reader.fail("Invalid base64 initial response")
    return c.Authenticate(reader.tag, mechanism, initial)


def _select(kind: type[c.Select]) -> Callable[[Reader], c.Select]:
    def parse(reader: Reader) -> c.Select:
        reader.sp()
        mailbox = reader.mailbox()
        condstore = False
        if reader.peek() == b" ":
            reader.pos += 1
            params = reader.list_of(reader.keyword, allow_empty=True)
            if any(param != "CONDSTORE" for param in params):
                reader.fail("Unknown SELECT parameter")
            condstore = bool(params)
        return kind(reader.tag, mailbox, condstore)
    return parse


def _rename(reader: Reader) -> c.Rename:
    reader.sp()
    old = reader.mailbox()
    reader.sp()
    return c.Rename(reader.tag, old, reader.mailbox())


def _list(reader: Reader) -> c.List:
    reader.sp()
    selection: list[str] = []
    if reader.peek() == b"(":
        selection = reader.list_of(reader.keyword, allow_empty=True)
        if any(option not in LIST_SELECTION for option in selection):
            reader.fail("Unknown LIST selection option")
        reader.sp()
    reference = reader.text(reader.astring(), "reference")
    reader.sp()
    if reader.peek() == b"(":
        patterns = tuple(reader.list_of(reader.list_mailbox))
    else:
        patterns = (reader.list_mailbox(),)
    returns, status_items = _list_returns(reader)
    return c.List(reader.tag, reference, patterns, frozenset(selection), returns, status_items)


def _list_returns(reader: Reader) -> tuple[frozenset[str], tuple[str, ...]]:
    if reader.peek() != b" ":
        return frozenset(), ()
    reader.sp()
    if reader.keyword() != "RETURN":
        reader.fail("Expected RETURN")
    reader.sp()
    status_items: list[tuple[str, ...]] = []

    def option() -> str:
        word = reader.keyword()
        if word not in LIST_RETURN:
            reader.fail("Unknown LIST return option")
        if word == "STATUS":
            reader.sp()
            status_items.append(_status_items(reader))
        return word
    returns = frozenset(reader.list_of(option, allow_empty=True))
    return returns, status_items[0] if status_items else ()


def _lsub(reader: Reader) -> c.Lsub:
    reader.sp()
    reference = reader.text(reader.astring(), "reference")
    reader.sp()
    return c.Lsub(reader.tag, reference, reader.list_mailbox())


def _status_items(reader: Reader) -> tuple[str, ...]:
    items = tuple(reader.list_of(reader.keyword))
    if any(item not in STATUS_ITEMS for item in items):
        reader.fail("Unknown STATUS item")
    return items


def _status(reader: Reader) -> c.Status:
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    return c.Status(reader.tag, mailbox, _status_items(reader))


def _append(reader: Reader) -> c.Append:
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    flags: tuple[str, ...] = ()
    if reader.peek() == b"(":
        flags = _flag_list(reader)
        reader.sp()
    when = None
    if reader.peek() == b'"':
        try:
            when = parse_date_time(reader.quoted().decode("ascii"))
        except ValueError:
            reader.fail("Invalid date-time")
        reader.sp()
    if reader.peek() != b"{":
        reader.fail("The message must be a literal")
    return c.Append(reader.tag, mailbox, flags, when, reader.literal())


def _enable(reader: Reader) -> c.Enable:
    names = []
    while reader.peek() == b" " or not names:
        reader.sp()
        names.append(reader.keyword())
    return c.Enable(reader.tag, tuple(names))


def _id(reader: Reader) -> c.Id:
    reader.sp()
    if reader.peek() != b"(":
        if reader.keyword() != "NIL":
            reader.fail("ID takes NIL or a list")
        return c.Id(reader.tag, None)
    items = reader.list_of(lambda: reader.nstring(allow_8bit=True), allow_empty=True)
    if len(items) % 2 or len(items) > 2 * ID_MAX_PAIRS:
        reader.fail("ID takes up to 30 field-value pairs")
    pairs = []
    for field, value in zip(items[0::2], items[1::2]):
        if field is None or len(field) > ID_MAX_FIELD or (value is not None and len(value) > ID_MAX_VALUE):
            reader.fail("Invalid ID field")
        pairs.append((reader.text(field, "ID field"), None if value is None else reader.text(value, "ID value")))
    return c.Id(reader.tag, tuple(pairs))


def _fetch(reader: Reader, uid: bool) -> c.Fetch:
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    attributes = parse_fetch_attributes(reader)
    if uid and not any(attr.name == "UID" for attr in attributes):
        attributes = (FetchAttribute("UID"), *attributes)
    return c.Fetch(reader.tag, sequence, attributes, uid)


def _store(reader: Reader, uid: bool) -> c.Store:
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    word = reader.match(_STORE_ITEM, "+FLAGS, -FLAGS or FLAGS").decode("ascii").upper()
    mode = {"+": "add", "-": "remove"}.get(word[0], "replace")
    base = word.lstrip("+-")
    if base not in ("FLAGS", "FLAGS.SILENT"):
        reader.fail("Expected FLAGS, +FLAGS or -FLAGS")
    reader.sp()
    if reader.peek() == b"(":
        flags = _flag_list(reader)
    else:
        found = [_flag(reader)]
        while reader.peek() == b" ":
            reader.pos += 1
            found.append(_flag(reader))
        flags = tuple(found)
    return c.Store(reader.tag, sequence, mode, base.endswith(".SILENT"), flags, uid)


def _copy(kind: type[c.Copy]) -> Callable[[Reader, bool], c.Copy]:
    def parse(reader: Reader, uid: bool) -> c.Copy:
        reader.sp()
        sequence = reader.sequence_set()
        reader.sp()
        return kind(reader.tag, sequence, reader.mailbox(), uid)
    return parse


def _search(reader: Reader, uid: bool) -> c.Search:
    reader.sp()
    return c.Search(reader.tag, parse_search(reader), uid)


def _expunge(reader: Reader, uid: bool) -> c.Expunge:
    if not uid:
        return c.Expunge(reader.tag)
    reader.sp()
    return c.Expunge(reader.tag, reader.sequence_set())


_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}|=")
_STORE_ITEM = re.compile(rb"[+-]?[A-Za-z.]+")

_UID_COMMANDS = {"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"}
_COMMANDS: dict[str, Callable] = {
    "CAPABILITY": _no_arguments(c.Capability), "NOOP": _no_arguments(c.Noop),
    "LOGOUT": _no_arguments(c.Logout), "STARTTLS": _no_arguments(c.StartTls),
    "NAMESPACE": _no_arguments(c.Namespace), "IDLE": _no_arguments(c.Idle),
    "CHECK": _no_arguments(c.Check), "CLOSE": _no_arguments(c.Close),
    "UNSELECT": _no_arguments(c.Unselect),
    "LOGIN": _login, "AUTHENTICATE": _authenticate,
    "SELECT": _select(c.Select), "EXAMINE": _select(c.Examine),
    "CREATE": _one_mailbox(c.Create), "DELETE": _one_mailbox(c.Delete),
    "SUBSCRIBE": _one_mailbox(c.Subscribe), "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "RENAME": _rename, "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "ENABLE": _enable, "ID": _id,
    "FETCH": _fetch, "STORE": _store, "COPY": _copy(c.Copy), "MOVE": _copy(c.Move),
    "SEARCH": _search, "EXPUNGE": _expunge,
}
