"""MAIL, RCPT and DATA decisions without sockets (mailtui.receive.transaction), in tables."""

from __future__ import annotations

import pytest

from mailtui.addresses import Address, parse_path
from mailtui.receive.transaction import (
    DATA_SYNTAX,
    NEED_MAIL,
    NEEDS_EHLO,
    NESTED_MAIL,
    NO_RECIPIENTS,
    NUL_IN_COMMAND,
    TOO_BIG,
    TOO_MANY_RECIPIENTS,
    Transaction,
    data_refusal,
    mail_from,
    rcpt_to,
    strip_keyword,
)
from mailtui.replies import SmtpReply

MAX = 1000


def mail(arg, *, extended=True, tx=None):
    return mail_from(tx or Transaction(), arg, extended=extended, max_size=MAX)


def started(arg="FROM:<a@example.org>") -> Transaction:
    tx = mail(arg)
    assert isinstance(tx, Transaction)
    return tx


def rcpt(arg, tx=None, *, extended=True, max_recipients=3):
    return rcpt_to(tx or started(), arg, extended=extended, postmaster_domain="localhost",
                   max_recipients=max_recipients)


@pytest.mark.parametrize("arg, sender, smtputf8, body_8bit", [
    ("FROM:<a@example.org>", "a@example.org", False, False),
    ("from:<a@example.org>", "a@example.org", False, False),
    ("FROM: <a@example.org>", "a@example.org", False, False),
    ("FROM:<>", None, False, False),
    ("FROM:<a@example.org> SIZE=1000", "a@example.org", False, False),
    ("FROM:<a@example.org> BODY=8BITMIME", "a@example.org", False, True),
    ("FROM:<a@example.org> body=7bit", "a@example.org", False, False),
    ("FROM:<jörg@example.org> SMTPUTF8", "jörg@example.org", True, False),
    ("FROM:<a@example.org> SMTPUTF8 BODY=8BITMIME SIZE=5", "a@example.org", True, True),
])
def test_mail_from_accepts(arg, sender, smtputf8, body_8bit):
    tx = mail(arg)
    assert isinstance(tx, Transaction) and tx.has_sender
    assert (str(tx.sender) if tx.sender else None, tx.smtputf8, tx.body_8bit) == (sender, smtputf8, body_8bit)
    assert tx.count == 0


@pytest.mark.parametrize("arg, extended, reply", [
    (None, True, "501 5.5.4 Syntax: FROM: <address>"),
    ("TO:<a@example.org>", True, "501 5.5.4 Syntax: FROM: <address>"),
    ("FROM:<a@exa\x00mple.org>", True, str(NUL_IN_COMMAND)),
    ("FROM:a@example.org", True, "501 5.1.7 address must be enclosed in <>"),
    ("FROM:<a@example.org", True, "501 5.1.7 unterminated <address>"),
    ("FROM:<a@example.org>SIZE=5", True, "501 5.5.4 expected space after address"),
    ("FROM:<a@example.org> SIZE=5", False, str(NEEDS_EHLO)),
    ("FROM:<a@example.org> SIZE=5 SIZE=6", True, "501 5.5.4 duplicate parameter"),
    ("FROM:<@relay.test:a@example.org>", True, "553 5.1.3 source routes are not accepted"),
    ("FROM:<jörg@example.org>", True, "553 5.6.7 non-ASCII address requires SMTPUTF8"),
    ("FROM:<a@example.org> SIZE", True, "501 5.5.4 SIZE needs a number"),
    ("FROM:<a@example.org> SIZE=-1", True, "501 5.5.4 SIZE needs a number"),
    ("FROM:<a@example.org> SIZE=" + "9" * 21, True, "501 5.5.4 SIZE needs a number"),
    ("FROM:<a@example.org> SIZE=1001", True, str(TOO_BIG)),
    ("FROM:<a@example.org> SIZE=1001 BODY=BINARYMIME", True, str(TOO_BIG)),    # in the order given
    ("FROM:<a@example.org> BODY=BINARYMIME SIZE=1001", True, "501 5.5.4 BODY must be 7BIT or 8BITMIME"),
    ("FROM:<a@example.org> BODY", True, "501 5.5.4 BODY must be 7BIT or 8BITMIME"),
    ("FROM:<a@example.org> SMTPUTF8=yes", True, "501 5.5.4 SMTPUTF8 takes no value"),
    ("FROM:<a@example.org> RET=FULL", True, "555 5.5.4 MAIL parameter RET not supported"),
])
def test_mail_from_refuses(arg, extended, reply):
    result = mail(arg, extended=extended)
    assert isinstance(result, SmtpReply), result
    assert str(result) == reply


def test_mail_from_inside_a_transaction_is_nested():
    assert mail("FROM:<b@example.org>", tx=started()) == NESTED_MAIL


@pytest.mark.parametrize("arg, expected", [
    ("TO:<bob@localhost>", "bob@localhost"),
    ("to: <Bob@Example.org>", "Bob@example.org"),
    ("TO:<Postmaster>", "postmaster@localhost"),
])
def test_rcpt_to_accepts(arg, expected):
    result = rcpt(arg)
    assert isinstance(result, Address) and str(result) == expected


@pytest.mark.parametrize("arg, extended, reply", [
    (None, True, "501 5.5.4 Syntax: TO: <address>"),
    ("FROM:<bob@localhost>", True, "501 5.5.4 Syntax: TO: <address>"),
    ("TO:<>", True, "501 5.1.3 empty recipient address"),
    ("TO:<bob@localhost> NOTIFY=NEVER", True, "555 5.5.4 RCPT parameter NOTIFY not supported"),
    ("TO:<bob@localhost> NOTIFY=NEVER", False, str(NEEDS_EHLO)),
    ("TO:<zoë@remote.test>", True, "553 5.6.7 non-ASCII address requires SMTPUTF8"),
])
def test_rcpt_to_refuses(arg, extended, reply):
    result = rcpt(arg, extended=extended)
    assert isinstance(result, SmtpReply), result
    assert str(result) == reply


def test_rcpt_to_needs_mail_first_and_counts_recipients():
    assert rcpt("TO:<bob@localhost>", Transaction()) == NEED_MAIL
    utf8 = started("FROM:<a@example.org> SMTPUTF8")
    assert str(rcpt("TO:<zoë@remote.test>", utf8)) == "zoë@remote.test"
    tx = started()
    for n in range(3):
        tx.add(parse_path(f"<r{n}@remote.test>", null_ok=False), None)
    assert rcpt("TO:<r4@remote.test>", tx) == TOO_MANY_RECIPIENTS


def test_transaction_adds_each_recipient_once_local_or_remote():
    tx = started()
    bob = parse_path("<bob@localhost>", null_ok=False)
    tx.add(bob, "bob@localhost")
    tx.add(parse_path("<BOB@localhost>", null_ok=False), "bob@localhost")
    tx.add(parse_path("<far@remote.test>", null_ok=False), None)
    assert tx.count == 2
    assert tx.local == {"bob@localhost": ["bob@localhost"]} and tx.remote == ["far@remote.test"]
    assert tx.recipients == ["far@remote.test", "bob@localhost"]


@pytest.mark.parametrize("tx, arg, reply", [
    (Transaction(), None, NEED_MAIL),
    (started(), None, NO_RECIPIENTS),
])
def test_data_refusal(tx, arg, reply):
    assert data_refusal(tx, arg) == reply


def test_data_with_recipients():
    tx = started()
    tx.add(parse_path("<far@remote.test>", null_ok=False), None)
    assert data_refusal(tx, None) is None
    assert data_refusal(tx, "now") == DATA_SYNTAX


@pytest.mark.parametrize("arg, keyword, rest", [
    ("FROM:<a@b>", "FROM:", "<a@b>"),
    ("from: <a@b> ", "FROM:", "<a@b>"),
    ("FROM<a@b>", "FROM:", None),
    ("TO:<a@b>", "FROM:", None),
])
def test_strip_keyword(arg, keyword, rest):
    assert strip_keyword(arg, keyword) == rest
