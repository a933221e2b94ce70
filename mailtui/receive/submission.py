"""Message submission (RFC 6409, RFC 8314): the rules of the ports mail clients send through.

A mail client (Thunderbird, K-9, neomutt ...) sends through port 587 with
STARTTLS or port 465 with implicit TLS, logged in as its user. What differs
from port 25 is only what is allowed, so submission is a
:class:`~mailtui.receive.rules.SessionRules` and the session is port 25's:

* AUTH before MAIL, from registered networks too (530 5.7.0): on this port a
  network proves nothing, a login does (RFC 6409 section 4.3);
* AUTH only inside TLS (``auth_requires_tls``); on an implicit-TLS listener
  the whole session is inside TLS;
* the envelope sender is the login's own address, or one delivered to the
  same mailbox (``postmaster@`` for the postmaster); anything else, and the
  null sender, is 553 5.7.1 at MAIL (RFC 6409 section 6.1: the sender must
  be authorized by the authentication used);
* any recipient, local or remote: an existing local mailbox, else the queue.
  Port 25's MX-role checks (unregistered senders in local domains, HELO
  names) are not for authenticated users.

Everything after RCPT — bare-LF and smuggling protection, size and loop
limits, the intake, a Received header saying ESMTPSA — is the session's, the
same as on port 25.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..addresses import Address
from ..replies import SmtpReply
from .message import MessageCheck
from .policy import Peer, Policy

AUTH_REQUIRED = SmtpReply(530, "5.7.0", "Authentication required")
NULL_SENDER = SmtpReply(553, "5.7.1", "The null sender <> is for bounces: send as your own address")


class SubmissionRules:
    """Ports 587/465: a logged-in user sends as themselves, to anyone."""

    auth_requires_tls = True
    trusts_networks = False

    def __init__(self, policy: Policy, *, message_checks: Sequence[MessageCheck] = ()):
        self.policy = policy
        self.message_checks = tuple(message_checks)

    def check_sender(self, peer: Peer, sender: Address | None) -> SmtpReply | None:
        if not peer.login:
            return AUTH_REQUIRED
        if sender is None:
            return NULL_SENDER
        if not self.policy.owns(peer.login, sender):
            return SmtpReply(553, "5.7.1", f"Sender <{sender}> is not owned by {peer.login}")
        return None

    def check_recipient(self, peer: Peer, rcpt: Address) -> tuple[SmtpReply | None, str | None]:
        if not peer.login:   # not reached after a refused MAIL, but a rule must not depend on that
            return AUTH_REQUIRED, None
        key = self.policy.local_key(rcpt)
        if key == "":
            return SmtpReply(550, "5.1.1", f"<{rcpt}>: no such user here"), None
        return None, key
