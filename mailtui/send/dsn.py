"""Delivery Status Notifications: the bounce a sender gets (RFC 3464, RFC 3462).

A DSN is a ``multipart/report; report-type=delivery-status`` message with
three parts: an explanation for people, the machine-readable
``message/delivery-status`` (one block for the message, one per failed
recipient), and the headers of the message that failed.
"""

from __future__ import annotations

import email.charset
import email.policy
import email.utils
import io
import textwrap
import time
from email.generator import BytesGenerator
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from ..store.queue import QueueItem, RecipientState
from ..wire import normalize_crlf

SUBJECT = "Undelivered Mail Returned to Sender"
_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)


def xtext_address(address: str) -> str:
    """An address as an RFC 3464 address field: ``rfc822; a@b`` or RFC 6533 ``utf-8; ...``."""
    if address.isascii() and all(32 < ord(c) < 127 for c in address):
        return f"rfc822; {address}"
    encoded = "".join(
        c if 32 < ord(c) < 127 and c not in "\\+=" else "\\x{%X}" % ord(c) for c in address)
    return f"utf-8; {encoded}"


def _date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, localtime=True)


def _explanation(item: QueueItem, failed: list[RecipientState], reporting_mta: str) -> str:
    intro = (
        f"This is the mail system at host {reporting_mta}.\n\n"
        "I'm sorry to have to tell you that your message could not be delivered "
        f"to {'one or more recipients' if len(failed) != 1 else 'one recipient'}. "
        "The reason is given below for each of them, and the headers of your "
        "message are attached.\n\n"
        "If you need help, write to the postmaster of this system and include "
        "this report.\n"
    )
    lines = [textwrap.fill(p, 72) if p else "" for p in intro.split("\n")]
    lines.append(f"Your message (queue id {item.id}) arrived on {_date(item.arrival)}.")
    lines.append("")
    for rcpt in failed:
        reason = rcpt.last_error or "delivery failed"
        lines.append(textwrap.fill(f"<{rcpt.address}>: {reason}", 72, subsequent_indent="    ",
                                   break_long_words=False, break_on_hyphens=False))
        lines.append("")
    return "\n".join(lines)


def _field_block(fields: list[tuple[str, str]]) -> Message:
    block = Message(policy=_POLICY)
    for name, value in fields:
        block[name] = _clean(value)
    return block


def _clean(value: str) -> str:
    """One line of printable text (a diagnostic may quote anything a server said)."""
    value = " ".join(value.split())
    return "".join(c if c.isprintable() else "?" for c in value)


def build_dsn(item: QueueItem, failed: list[RecipientState], *, reporting_mta: str,
              original_headers: bytes, now: float | None = None) -> bytes:
    """The bounce for ``failed`` recipients of ``item``, as bytes with CRLF line endings."""
    now = time.time() if now is None else now
    report = MIMEMultipart("report", report_type="delivery-status", policy=_POLICY)
    content_type = report["Content-Type"]
    del report["Content-Type"], report["MIME-Version"]
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = item.sender
    report["Subject"] = SUBJECT
    report["Date"] = _date(now)
    report["Message-ID"] = email.utils.make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = content_type
    report.preamble = "This is a MIME-encapsulated message."

    explanation = _explanation(item, failed, reporting_mta)
    text = MIMEText(explanation, "plain", "us-ascii" if explanation.isascii() else "utf-8",
                    policy=_POLICY)
    text["Content-Description"] = "Notification"
    del text["MIME-Version"]
    report.attach(text)

    report.attach(_status_part(item, failed, reporting_mta, now))
    report.attach(_headers_part(original_headers))

    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(report)
    data = out.getvalue()
    # Bodies set as text keep "\n"; make every line end in CRLF.
    return normalize_crlf(data)


def _status_part(item: QueueItem, failed: list[RecipientState], reporting_mta: str,
                 now: float) -> MIMEBase:
    """The ``message/delivery-status`` part: one block for the message, one per failed recipient."""
    status = MIMEBase("message", "delivery-status", policy=_POLICY)
    status["Content-Description"] = "Delivery report"
    del status["MIME-Version"]
    blocks = [_field_block([
        ("Reporting-MTA", f"dns; {reporting_mta}"),
        ("X-Mailtui-Queue-ID", item.id),
        ("X-Mailtui-Sender", xtext_address(item.sender) if item.sender else "rfc822; <>"),
        ("Arrival-Date", _date(item.arrival)),
    ])]
    for rcpt in failed:
        fields = [
            ("Final-Recipient", xtext_address(rcpt.address)),
            ("Action", "failed"),
            ("Status", rcpt.status or "5.0.0"),
        ]
        if rcpt.remote_mta:
            fields.append(("Remote-MTA", rcpt.remote_mta))
        if rcpt.diagnostic:
            fields.append(("Diagnostic-Code", rcpt.diagnostic))
        fields.append(("Last-Attempt-Date", _date(rcpt.updated or now)))
        blocks.append(_field_block(fields))
    status.set_payload(blocks)
    return status


def _headers_part(original_headers: bytes) -> MIMEText:
    """The ``text/rfc822-headers`` part: the headers of the message that failed."""
    headers = original_headers.rstrip(b"\r\n")
    headers_text = headers.decode("utf-8", "replace").replace("\r\n", "\n") + "\n"
    if headers_text.isascii():
        original = MIMEText(headers_text, "rfc822-headers", "us-ascii", policy=_POLICY)
    else:
        charset = email.charset.Charset("utf-8")
        charset.body_encoding = email.charset.QP
        original = MIMEText(headers_text, "rfc822-headers", charset, policy=_POLICY)
    original["Content-Description"] = "Undelivered Message Headers"
    del original["MIME-Version"]
    return original
