"""What a listener's sessions allow: the rules an SMTP session applies, as one object.

The session (``smtp.py``) speaks the protocol; *which* senders and
recipients it takes, whether AUTH needs TLS first and which checks a message
must pass at the end of DATA are the rules of the service it serves, given
to it in :class:`~mailtui.receive.smtp.SmtpContext`.

:class:`InboundRules` is port 25: registered clients relay, and with
``accept_unregistered_for_local`` anyone may write to a local mailbox (the
relay policy of ``policy.py``). Submission (ports 587/465) is
:class:`~mailtui.receive.submission.SubmissionRules` — AUTH before MAIL even
from registered networks (530 5.7.0), the envelope sender owned by the login
(553 5.7.1), any recipient — and no session subclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..addresses import Address
from ..replies import SmtpReply
from .message import MessageCheck
from .policy import Peer, Policy


class SessionRules(Protocol):
    """The rules of one SMTP service; every method is a pure decision."""

    auth_requires_tls: bool                 # AUTH is offered only after STARTTLS (when TLS is configured)
    trusts_networks: bool                   # a registered network makes a peer registered (port 25 only)
    message_checks: Sequence[MessageCheck]  # run at the end of DATA, after the protocol checks

    def check_sender(self, peer: Peer, sender: Address | None) -> SmtpReply | None:
        """MAIL FROM: the refusal, or None to accept ``sender`` (None = the null sender)."""

    def check_recipient(self, peer: Peer, rcpt: Address) -> tuple[SmtpReply | None, str | None]:
        """RCPT TO: (refusal or None, local mailbox key or None for a remote recipient)."""


class InboundRules:
    """Port 25: mail for local mailboxes, and relaying for registered clients."""

    trusts_networks = True

    def __init__(self, policy: Policy, *, auth_requires_tls: bool,
                 message_checks: Sequence[MessageCheck] = ()):
        self.policy = policy
        self.auth_requires_tls = auth_requires_tls
        self.message_checks = tuple(message_checks)

    def check_sender(self, peer: Peer, sender: Address | None) -> SmtpReply | None:
        return self.policy.check_sender(peer, sender)

    def check_recipient(self, peer: Peer, rcpt: Address) -> tuple[SmtpReply | None, str | None]:
        return self.policy.check_recipient(peer, rcpt)
