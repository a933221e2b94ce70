"""MAIL, RCPT and DATA as pure decisions, and the transaction they build.

Each function takes a command's argument and the transaction so far, and
returns what the command means or the :class:`~mailtui.replies.SmtpReply`
that refuses it; nothing here touches a socket. Syntax and limits are
decided here; who may send and who may receive is the business of the
session's rules (``rules.py``), asked by the session after these.
Addresses go through the one strict parser of ``mailtui.addresses``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..addresses import Address, AddressError, parse_params, parse_path, split_path
from ..replies import SmtpReply

MAX_SIZE_DIGITS = 20
NESTED_MAIL = SmtpReply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = SmtpReply(503, "5.5.1", "Need MAIL command first")
NO_RECIPIENTS = SmtpReply(554, "5.5.1", "No valid recipients")
DATA_SYNTAX = SmtpReply(501, "5.5.4", "Syntax: DATA")
TOO_BIG = SmtpReply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RECIPIENTS = SmtpReply(452, "4.5.3", "Too many recipients")
NEEDS_SMTPUTF8 = SmtpReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
NEEDS_EHLO = SmtpReply(501, "5.5.4", "Parameters need EHLO")
NUL_IN_COMMAND = SmtpReply(501, "5.5.2", "NUL byte in command")


@dataclass
class Transaction:
    """One mail transaction: the sender, then the recipients, local and remote."""

    sender: Address | None = None          # None with has_sender: the null sender <>
    has_sender: bool = False
    local: dict[str, list[str]] = field(default_factory=dict)   # mailbox key -> addresses
    remote: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)                 # recipients, lower-cased
    smtputf8: bool = False
    body_8bit: bool = False

    @property
    def count(self) -> int:
        return len(self.seen)

    @property
    def recipients(self) -> list[str]:
        """Every recipient: the remote ones first, as the Received header names them."""
        return self.remote + [a for addrs in self.local.values() for a in addrs]

    def add(self, rcpt: Address, key: str | None) -> None:
        """Add an accepted recipient, once; ``key`` is its local mailbox, None if remote."""
        text = str(rcpt)
        if text.lower() in self.seen:
            return
        self.seen.add(text.lower())
        if key is not None:
            self.local.setdefault(key, []).append(text)
        else:
            self.remote.append(text)


def strip_keyword(arg: str, keyword: str) -> str | None:
    """``arg`` without its leading ``FROM:``/``TO:`` (any case), or None if it lacks it."""
    if arg[:len(keyword)].upper() == keyword:
        return arg[len(keyword):].strip()
    return None


def _parse(arg: str | None, keyword: str, *, extended: bool, null_ok: bool, smtputf8: bool | None = None,
           postmaster_domain: str | None = None) -> tuple[Address | None, dict] | SmtpReply:
    """``FROM:<path> params`` -> (address, ESMTP parameters); SMTPUTF8 from them if ``smtputf8`` is None."""
    syntax = SmtpReply(501, "5.5.4", f"Syntax: {keyword} <address>")
    if arg is None:
        return syntax
    rest = strip_keyword(arg, keyword)
    if rest is None:
        return syntax
    if "\x00" in rest:
        return NUL_IN_COMMAND
    try:
        path, param_text = split_path(rest)
        if param_text and not extended:
            return NEEDS_EHLO
        params = parse_params(param_text, smtputf8=True)
        if smtputf8 is None:
            smtputf8 = "SMTPUTF8" in params
        addr = parse_path(path, null_ok=null_ok, smtputf8=smtputf8, postmaster_domain=postmaster_domain)
    except AddressError as exc:
        code, status, text = exc.reply.split(" ", 2)
        return SmtpReply(int(code), status, text)
    return addr, params


def mail_from(tx: Transaction, arg: str | None, *, extended: bool, max_size: int) -> Transaction | SmtpReply:
    """MAIL FROM: a new transaction with its sender, or the reply refusing the command.

    The parameters are checked in the order given; :data:`TOO_BIG` (SIZE over
    ``max_size``) is a refusal rather than a syntax error.
    """
    if tx.has_sender:
        return NESTED_MAIL
    parsed = _parse(arg, "FROM:", extended=extended, null_ok=True)
    if isinstance(parsed, SmtpReply):
        return parsed
    sender, params = parsed
    new = Transaction(sender=sender, has_sender=True)
    for key, value in params.items():
        problem = _mail_parameter(new, key, value, max_size)
        if problem is not None:
            return problem
    return new


def _mail_parameter(tx: Transaction, key: str, value: str | None, max_size: int) -> SmtpReply | None:
    """Apply one MAIL parameter (SIZE, BODY, SMTPUTF8) to ``tx``; the reply if it is refused."""
    if key == "SIZE":
        if value is None or not value.isdigit() or len(value) > MAX_SIZE_DIGITS:
            return SmtpReply(501, "5.5.4", "SIZE needs a number")
        if int(value) > max_size:
            return TOO_BIG
    elif key == "BODY":
        if (value or "").upper() not in ("7BIT", "8BITMIME"):
            return SmtpReply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
        tx.body_8bit = value.upper() == "8BITMIME"
    elif key == "SMTPUTF8":
        if value is not None:
            return SmtpReply(501, "5.5.4", "SMTPUTF8 takes no value")
        tx.smtputf8 = True
    else:
        return SmtpReply(555, "5.5.4", f"MAIL parameter {key} not supported")
    return None


def rcpt_to(tx: Transaction, arg: str | None, *, extended: bool, postmaster_domain: str,
            max_recipients: int) -> Address | SmtpReply:
    """RCPT TO: the recipient, or the reply refusing it (order, syntax, SMTPUTF8, count).

    ``<Postmaster>`` without a domain means postmaster at ``postmaster_domain``.
    """
    if not tx.has_sender:
        return NEED_MAIL
    parsed = _parse(arg, "TO:", extended=extended, null_ok=False, smtputf8=tx.smtputf8,
                    postmaster_domain=postmaster_domain)
    if isinstance(parsed, SmtpReply):
        return parsed
    rcpt, params = parsed
    if params:
        return SmtpReply(555, "5.5.4", f"RCPT parameter {next(iter(params))} not supported")
    if rcpt.needs_smtputf8 and not tx.smtputf8:
        return NEEDS_SMTPUTF8
    if tx.count >= max_recipients:
        return TOO_MANY_RECIPIENTS
    return rcpt


def data_refusal(tx: Transaction, arg: str | None) -> SmtpReply | None:
    """Why DATA cannot start now, or None: the 354 may be sent."""
    if not tx.has_sender:
        return NEED_MAIL
    if not tx.seen:
        return NO_RECIPIENTS
    if arg:
        return DATA_SYNTAX
    return None
