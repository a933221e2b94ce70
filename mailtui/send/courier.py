"""The courier contract: carry one message to one domain's mail hosts, say what became of it.

The courier knows nothing of queues or retries: given the hosts to try (best
first), it reports an :class:`Outcome` per recipient. What to do with the
outcomes (deliver, defer, bounce) is :mod:`mailtui.send.attempt`'s business.
:class:`Courier` is that contract (chasquid's ``courier.Courier``);
:class:`mailtui.send.smtp_courier.SmtpCourier` keeps it over SMTP, and a
test can take its place.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Protocol

from ..dns.resolver import MailHost


@dataclass(frozen=True)
class Outcome:
    ok: bool
    permanent: bool
    code: int                      # SMTP reply code; 0 when no server answered
    status: str                    # RFC 3463, e.g. "5.1.1"
    text: str                      # plain words, for people and DSNs
    remote_mta: str                # host name of the server that answered ("" if none did)
    tls: bool
    reply: str = ""                # the server's reply, e.g. "550 5.1.1 no such user"
    reused: bool = False           # over a connection that had carried mail before
    verified: bool = False         # over TLS with a certificate checked for the MX name
    mta_sts: str = ""              # the MTA-STS mode it went under ("enforce", "testing"), "" if none

    @property
    def diagnostic(self) -> str:
        """RFC 3464 Diagnostic-Code value ("smtp; 550 5.1.1 ..."), "" if no reply."""
        return f"smtp; {self.reply}" if self.reply else ""


class Courier(Protocol):
    """Carries one message to one domain's mail hosts, and says what became of it.

    ``hosts`` come best first. The answer has an :class:`Outcome` for every
    recipient, and a failed one says whether the failure is permanent. A
    courier never waits to retry and never bounces: the attempt decides that.

    With ``require_tls`` (MTA-STS enforce) mail goes only over STARTTLS with
    that context, whose certificate checks must pass for the MX name; a host
    where that fails is skipped, never used in plaintext. With ``verify_tls``
    (MTA-STS testing) that is tried first, and the usual opportunistic TLS
    after; :attr:`Outcome.verified` says which it was.
    """

    async def deliver(self, hosts: list[MailHost], *, sender: str, recipients: list[str],
                      body: bytes, smtputf8: bool = False, body_8bit: bool = False,
                      require_tls: ssl.SSLContext | None = None,
                      verify_tls: ssl.SSLContext | None = None) -> dict[str, Outcome]: ...

    def close(self) -> None:
        """Let go of what is kept between deliveries (cached connections); at shutdown."""
