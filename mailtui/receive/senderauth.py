"""Sender authentication on port 25: the :class:`~.message.MessageCheck` for mail from outside.

"From outside" is a peer that is neither on a registered network nor
authenticated, loopback included. For such mail, at the end of DATA:

* any ``Authentication-Results`` field claiming our hostname is removed
  (RFC 8601 section 5: a border MTA must delete them before adding its own),
  whether the checks are on or not: a reader that trusts our results must
  never find a stranger's copy of them;
* with ``auth.check_inbound`` on, SPF, DKIM and DMARC are checked on the
  message as it arrived (:func:`~mailtui.mailauth.verdict.check_message`,
  bounded by ``auth.check_timeout``: a DNS that stalls gives temperror) and
  the result goes on top in our own Authentication-Results field; a DMARC
  failure the policy rejects gets its ``550 5.7.1``, one it quarantines is
  tagged and marked for the Junk folder (the intake files it there).

Registered clients and authenticated users are not checked and get no
Authentication-Results field: they are inside the trust boundary.
"""

from __future__ import annotations

from ..dns.resolver import Resolver
from ..mailauth.authresults import strip_ours
from ..mailauth.verdict import AuthPolicy, check_message
from .message import Arrival, Verdict


class SenderAuth:
    """SPF, DKIM and DMARC for mail from outside, through the one resolver."""

    def __init__(self, resolver: Resolver, hostname: str, policy: AuthPolicy, *, check: bool = True):
        self.resolver = resolver
        self.hostname = hostname
        self.policy = policy
        self.check = check

    async def __call__(self, message: Arrival) -> Verdict:
        peer = message.peer
        if peer.registered:
            return Verdict()
        body = strip_ours(message.body, self.hostname)
        rewritten = body if body is not message.body else None
        if not self.check:
            return Verdict(body=rewritten)
        # The message as it arrived: a signature may cover what is stripped above.
        verdict = await check_message(peer.ip, peer.helo, message.sender, message.body, self.resolver,
                                      self.policy, receiver=self.hostname)
        if verdict.action == "reject":
            return Verdict(refusal=verdict.reply)
        return Verdict(header=verdict.headers(self.hostname), body=rewritten,
                       quarantine=verdict.action == "quarantine")
