"""The inbound verdict: SPF, DKIM and DMARC for one message, what to do with it, and its header.

``check_message`` runs SPF (on MAIL FROM, or HELO for the null sender) and
DKIM side by side, then DMARC for the From domain, all through mailtui's
resolver and within one deadline. The :class:`Verdict` says what to do:

* ``reject`` - answer ``550 5.7.1`` at the end of DATA (``verdict.reply``);
* ``quarantine`` - accept, marked with an ``X-Mailtui-Quarantine`` header
  (and the mailbox's Junk folder, if it has one);
* ``accept`` - everything else: an SPF fail alone is only recorded, and a
  DNS that cannot answer (temperror) never costs a message.

The DMARC actions are configurable (``[auth] dmarc_reject`` and
``dmarc_quarantine``); ``verdict.headers(hostname)`` gives the
Authentication-Results field (and the quarantine mark) to put on top.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from email.utils import getaddresses

from ..config import AuthConfig
from ..dns.resolver import Resolver
from ..replies import SmtpReply
from ..wire import header_section, printable
from . import authresults
from .authresults import comment, quote_value
from .dkimverify import DkimResult, dkim_from_cache, verify_dkim
from .dmarccheck import DmarcResult, check_dmarc, organizational_domain
from .fields import field_values
from .spfcheck import SpfResult, check_spf, spf_from_cache

QUARANTINE_HEADER = "X-Mailtui-Quarantine"
MAX_FROM_DOMAINS = 5
_ACTION_RANK = {"reject": 2, "quarantine": 1, "accept": 0}
_RESULT_RANK = {"fail": 4, "temperror": 3, "permerror": 2, "none": 1, "pass": 0}


@dataclass(frozen=True)
class AuthPolicy:
    """What a DMARC failure gets: ``reject``, ``quarantine`` or ``accept`` for each published policy."""

    dmarc_reject: str = "reject"
    dmarc_quarantine: str = "quarantine"
    timeout: float = 20.0

    @classmethod
    def from_config(cls, auth: AuthConfig) -> "AuthPolicy":
        return cls(auth.dmarc_reject, auth.dmarc_quarantine, auth.check_timeout)

    def action_for(self, dmarc: DmarcResult) -> str:
        if dmarc.result != "fail":
            return "accept"
        return {"reject": self.dmarc_reject, "quarantine": self.dmarc_quarantine}.get(dmarc.policy, "accept")


@dataclass(frozen=True)
class Verdict:
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    action: str = "accept"             # accept, quarantine, reject
    reply: SmtpReply | None = None     # the 550 5.7.1 to give when the action is reject

    def results(self) -> list[str]:
        """The resinfo parts of the Authentication-Results field: spf, each dkim, dmarc."""
        spf = self.spf
        prop = "smtp.helo" if spf.identity == "helo" else "smtp.mailfrom"
        ident = spf.domain if spf.identity == "helo" else spf.sender
        parts = [f"spf={spf.result}{_why(spf.reason, spf.result)} {prop}={quote_value(ident or '<>')}"]
        for d in self.dkim or (DkimResult("none"),):
            where = f" header.d={quote_value(d.domain)} header.s={quote_value(d.selector)}" if d.domain else ""
            parts.append(f"dkim={d.result}{_why(d.reason, d.result)}{where}")
        dm = self.dmarc
        policy = f" (p={dm.published} dis={dm.policy})" if dm.published else ""
        where = f" header.from={quote_value(dm.domain)}" if dm.domain else ""
        parts.append(f"dmarc={dm.result}{policy}{where}")
        return parts

    def headers(self, authserv_id: str) -> bytes:
        """The fields to put on top of the message: Authentication-Results, and the quarantine mark."""
        fields = authresults.render(authserv_id, self.results())
        if self.action == "quarantine":
            fields += (f"{QUARANTINE_HEADER}: dmarc={self.dmarc.result} policy={self.dmarc.policy} "
                       f"header.from={quote_value(self.dmarc.domain)}\r\n").encode()
        return fields


def _why(reason: str, result: str) -> str:
    return f" {comment(reason)}" if reason and result not in ("pass", "none") else ""


def from_domains(message: bytes) -> list[str]:
    """The domains of the addresses in the From field(s), in order, without repeats."""
    values = [value.decode("utf-8", "replace")
              for value in field_values(header_section(message) + b"\r\n", b"from")]
    domains = [address.rpartition("@")[2].strip().lower().rstrip(".")
               for _, address in getaddresses(values) if "@" in address]
    return list(dict.fromkeys(d for d in domains if d))[:MAX_FROM_DOMAINS]


async def check_message(ip: str, helo: str, mail_from: str, message: bytes, resolver: Resolver,
                        policy: AuthPolicy = AuthPolicy(), *, receiver: str = "",
                        rng: random.Random | None = None) -> Verdict:
    """SPF, DKIM and DMARC for a message from ``ip``, within ``policy.timeout``; never raises for what the peer sent.

    One deadline for the whole: SPF and DKIM run side by side, DMARC gets
    what is left. A part still waiting when the deadline passes is
    ``temperror``; the parts that finished keep their results. When the
    sender's records are all cached, nothing waits and nothing is handed
    off: every step runs here and now (on a busy server each hand-off to
    the loop costs a turn of it, a millisecond or so).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.timeout
    spf = spf_from_cache(ip, helo, mail_from, resolver, receiver=receiver)
    dkim = dkim_from_cache(message, resolver)
    if spf is None or dkim is None:
        spf, dkim = await _spf_and_dkim(ip, helo, mail_from, message, resolver, policy.timeout, receiver,
                                        spf, dkim)
    domains = from_domains(message)
    if not domains:
        dmarc = DmarcResult("none", reason="no From domain")
    else:
        # Several From domains (RFC 7489 6.6.1): each is checked, the strictest outcome decides.
        if all(resolver.cached(name, "TXT") is not None for name in dmarc_names(domains)):
            results = [await check_dmarc(d, spf, dkim, resolver, rng=rng) for d in domains]   # never waits
        else:
            checks = asyncio.gather(*(check_dmarc(d, spf, dkim, resolver, rng=rng) for d in domains))
            await asyncio.wait((checks,), timeout=max(0.0, deadline - loop.time()))
            results = _result_of(checks, [DmarcResult("temperror", domain=domains[0], reason=TIMED_OUT)])
        dmarc = max(results, key=lambda r: (_ACTION_RANK[policy.action_for(r)], _RESULT_RANK[r.result]))
    action = policy.action_for(dmarc)
    reply = None
    if action == "reject":
        reply = SmtpReply(550, "5.7.1", printable(
            f"Message rejected: the DMARC policy of {dmarc.domain} says reject ({dmarc.reason})")[:400])
    return Verdict(spf, tuple(dkim), dmarc, action, reply)


async def _spf_and_dkim(ip: str, helo: str, mail_from: str, message: bytes, resolver: Resolver, timeout: float,
                        receiver: str, spf: SpfResult | None, dkim: list[DkimResult] | None):
    """SPF and DKIM side by side, those not had from the cache; late ones are temperror."""
    spf_task = None if spf is not None else asyncio.ensure_future(
        check_spf(ip, helo, mail_from, resolver, timeout=timeout, receiver=receiver))
    dkim_task = None if dkim is not None else asyncio.ensure_future(verify_dkim(message, resolver, timeout=timeout))
    await asyncio.wait([t for t in (spf_task, dkim_task) if t is not None], timeout=timeout)
    if spf_task is not None:
        spf = _result_of(spf_task, SpfResult("temperror", sender=mail_from, reason=TIMED_OUT))
    if dkim_task is not None:
        dkim = _result_of(dkim_task, [DkimResult("temperror", reason=TIMED_OUT)])
    return spf, dkim


def dmarc_names(domains: list[str]) -> set[str]:
    """Every name a DMARC check of ``domains`` may ask: each one's ``_dmarc`` and its organizational domain's."""
    return {f"_dmarc.{name}" for domain in domains for name in (domain, organizational_domain(domain))}


TIMED_OUT = "authentication checks timed out"


def _result_of(task: asyncio.Future, late):
    """The task's result, or ``late`` when it has not finished (it is cancelled)."""
    if task.done():
        return task.result()
    task.cancel()
    return late
