"""What a recipient domain's MTA-STS policy (RFC 8461 section 5) makes of one delivery.

Pure, and tested in tables; the policy comes from
:class:`mailtui.mailauth.mtasts.MtaSts`, and the courier keeps the TLS
requirement (:mod:`mailtui.send.smtp_courier`):

* no policy, or mode ``none``: the MX hosts as they are, opportunistic TLS;
* ``enforce``: only the MX hosts the policy lists, only over STARTTLS with a
  certificate valid for the MX name. With none listed the recipients are
  deferred with the policy's refusal: temporary, since a corrected policy or
  MX record lets the mail go (and the DSN says why if it never does);
* ``testing``: every MX host, verified TLS where it works and the usual
  opportunistic TLS where it does not; what enforce would have refused
  becomes a notice (:func:`testing_report`).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from ..dns.resolver import MailHost
from ..mailauth.mtasts import refusal
from ..mailauth.stspolicy import Policy, mx_allowed
from .courier import Outcome

NOT_LISTED_STATUS = "4.7.0"


@dataclass(frozen=True)
class Route:
    """The hosts to try and the TLS to require or prefer; ``refused``: try none, this is the outcome."""

    hosts: list[MailHost]
    policy: Policy | None = None
    require_tls: ssl.SSLContext | None = None
    verify_tls: ssl.SSLContext | None = None
    refused: Outcome | None = None

    @property
    def mode(self) -> str:
        """The MTA-STS mode the delivery follows: "enforce", "testing", or "" (none)."""
        return self.policy.mode if self.policy is not None and self.policy.mode != "none" else ""


def route(policy: Policy | None, hosts: list[MailHost], context: ssl.SSLContext) -> Route:
    """The route for mail to ``policy``'s domain over ``hosts``; ``context`` verifies MX certificates."""
    if policy is None or policy.mode == "none":
        return Route(hosts)
    if not policy.enforced:
        return Route(hosts, policy, verify_tls=context)
    allowed = [h for h in hosts if mx_allowed(policy, h.name)]
    if allowed:
        return Route(allowed, policy, require_tls=context)
    text = refusal(policy, ", ".join(h.name for h in hosts)) or ""
    return Route([], policy, refused=Outcome(ok=False, permanent=False, code=0, status=NOT_LISTED_STATUS,
                                             text=text, remote_mta="", tls=False))


def testing_report(policy: Policy, outcomes: Iterable[Outcome]) -> str | None:
    """What enforce mode would have refused of a delivery made in testing mode (a notice), or None."""
    problems: dict[str, str] = {}
    for outcome in outcomes:
        host = outcome.remote_mta
        if not outcome.ok or not host:
            continue
        if not mx_allowed(policy, host):
            problems[host] = "is not listed in the policy"
        elif not outcome.verified:
            problems[host] = "has no valid certificate for its name" if outcome.tls else "was reached without TLS"
    if not problems:
        return None
    return (f"MTA-STS testing: enforce mode would have refused mail for {policy.domain}: "
            + "; ".join(f"{host} {why}" for host, why in problems.items()))
