"""The DSN a sender gets for failed recipients (RFC 3464): a pure function of the queue entry."""

from __future__ import annotations

import email
import email.policy
import email.utils

from delivery_harness import BODY

from mailtui.send.dsn import build_dsn, xtext_address
from mailtui.store.queue import QueueItem, RecipientState
from mailtui.wire import header_section


def _failed_item() -> tuple[QueueItem, list[RecipientState]]:
    r1 = RecipientState("bob@mx.test", state="failed", attempts=1, status="5.1.1",
                        last_error="host mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user "
                                   "(in reply to RCPT TO command)",
                        diagnostic="smtp; 550 5.1.1 no such user", remote_mta="dns; mx2.mx.test",
                        updated=1_700_000_100.0)
    r2 = RecipientState("carol@nowhere.test", state="failed", attempts=1, status="5.1.2",
                        last_error="domain nowhere.test does not exist", updated=1_700_000_100.0)
    r3 = RecipientState("dave@mx.test", state="delivered")
    item = QueueItem(id="0123456789ABCDEF", sender="alice@local.test", recipients=[r1, r2, r3],
                     arrival=1_700_000_000.0, next_attempt=0.0)
    return item, [r1, r2]


def test_dsn_structure():
    item, failed = _failed_item()
    headers = header_section("X-Note: ünïcode\n".encode() + BODY)
    raw = build_dsn(item, failed, reporting_mta="mail.local.test",
                    original_headers=headers, now=1_700_000_200.0)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.local.test"
    assert msg["To"] == "alice@local.test"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    text, status, original = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert "<bob@mx.test>: host mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user" in " ".join(body.split())
    assert "carol@nowhere.test" in body and "does not exist" in body
    assert "dave@mx.test" not in body

    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.local.test"
    assert per_message["Arrival-Date"] == email.utils.formatdate(item.arrival, localtime=True)
    assert len(per_rcpt) == 2
    bob, carol = per_rcpt
    assert bob["Final-Recipient"] == "rfc822; bob@mx.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx2.mx.test"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert bob["Last-Attempt-Date"]
    assert carol["Final-Recipient"] == "rfc822; carol@nowhere.test"
    assert carol["Status"] == "5.1.2"
    assert carol["Remote-MTA"] is None and carol["Diagnostic-Code"] is None

    assert original.get_content_type() == "text/rfc822-headers"
    returned = original.get_content()
    assert "Subject: remote delivery" in returned
    assert "X-Note: ünïcode" in returned
    assert "Hello Bob" not in returned


def test_dsn_header_section_and_utf8_address():
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == b"A: 1\r\nB: 2"
    assert header_section(b"A: 1\nB: 2\n") == b"A: 1\nB: 2"
    assert xtext_address("bob@mx.test") == "rfc822; bob@mx.test"
    assert xtext_address("bøb@mx.test") == "utf-8; b\\x{F8}b@mx.test"

