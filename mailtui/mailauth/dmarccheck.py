"""DMARC (RFC 7489): find the From domain's policy, check alignment, say what to do.

Policy discovery (6.6.3) asks mailtui's resolver (purpose ``DMARC``) for
``_dmarc.<From domain>``, then for ``_dmarc.<organizational domain>``; the
organizational domain comes from the Public Suffix List shipped in the
``publicsuffixlist`` package (no download at run time). The record is parsed
and the SPF/DKIM identifiers' alignment (relaxed or strict, ``aspf``/``adkim``)
evaluated by the ``dmarc`` library; ``pct`` sampling (6.6.4) is done here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import dmarc as dmarclib
from publicsuffixlist import PublicSuffixList

from ..dns.resolver import DnsError, Resolver
from ..wire import printable
from .dkimverify import DkimResult
from .spfcheck import SpfResult

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcResult:
    result: str                 # none (no policy), pass, fail, temperror, permerror
    domain: str = ""            # the RFC5322.From domain (header.from)
    policy: str = "none"        # what the domain asks for this message: none, quarantine, reject
    published: str = ""         # p= or sp= as published, before pct sampling
    record_domain: str = ""     # where the record was found
    reason: str = ""


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registered domain above ``domain`` (RFC 7489 3.2): ``a.b.example.co.uk`` -> ``example.co.uk``."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


class _OrgDomains:
    """What the dmarc library asks its ``publicsuffix`` argument for."""

    @staticmethod
    def get_public_suffix(domain: str) -> str:
        return organizational_domain(domain)


@dataclass(frozen=True)
class _Found:
    record: str
    at: str                     # the domain whose _dmarc record it is


async def find_policy(domain: str, resolver: Resolver) -> _Found | None:
    """The DMARC record that governs ``domain``; None if there is none. DnsError if DNS fails now."""
    for candidate in dict.fromkeys((domain, organizational_domain(domain))):
        records = [r.decode("utf-8", "replace") for r in await resolver.txt(f"_dmarc.{candidate}", purpose="DMARC")]
        records = [r for r in records if r.replace(" ", "").startswith("v=DMARC1")]
        if len(records) == 1:
            return _Found(records[0], candidate)
        if len(records) > 1:
            return None        # several records: no policy (6.6.3 step 2)
    return None


def downgrade(policy: str) -> str:
    """The next less strict policy, for a message ``pct`` sampling left out (6.6.4)."""
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


async def check_dmarc(from_domain: str, spf: SpfResult | None, dkim: list[DkimResult], resolver: Resolver, *,
                      rng: random.Random | None = None) -> DmarcResult:
    """The DMARC result for a message whose From domain is ``from_domain``."""
    from_domain = from_domain.lower().rstrip(".")
    if not from_domain:
        return DmarcResult("none", reason="no From domain")
    try:
        found = await find_policy(from_domain, resolver)
    except DnsError as exc:
        return DmarcResult("temperror", from_domain, reason=exc.text)
    if found is None:
        return DmarcResult("none", from_domain, reason="no DMARC record")
    return evaluate(found.record, found.at, from_domain, spf, dkim, rng or random)


def evaluate(record: str, record_domain: str, from_domain: str, spf: SpfResult | None,
             dkim: list[DkimResult], rng: random.Random) -> DmarcResult:
    """Alignment and disposition for one record (pure: no DNS)."""
    below = record_domain != from_domain          # found at the organizational domain: sp= applies
    try:
        policy = dmarclib.Policy("DMARC1", from_domain, record_domain if below else None)
        policy.parse_record(record, strict=False)
    except dmarclib.RecordSyntaxError as exc:
        return DmarcResult("permerror", from_domain, record_domain=record_domain,
                           reason=f"bad DMARC record ({printable(str(exc))[:120]})")
    results = dmarclib.AuthResults(
        spf=dmarclib.SPFAuthResult(spf.domain, dmarclib.SPFResult(spf.result)) if spf and spf.domain else None,
        dkim=[dmarclib.DKIMAuthResult(d.domain, dmarclib.DKIMResult(d.result)) for d in dkim if d.domain] or None)
    outcome = dmarclib.DMARC(_OrgDomains()).get_result(policy, auth_results=results)
    published = (policy.sp if below and policy.sp is not dmarclib.DMARCDisposition.UNSPECIFIED
                 else policy.p).value
    if outcome.result is dmarclib.DMARCResult.PASS:
        aligned = "DKIM" if outcome.dkim is dmarclib.DMARCResult.PASS else "SPF"
        return DmarcResult("pass", from_domain, "none", published, record_domain, f"aligned {aligned}")
    unsure = [name for name, result in [("SPF", spf.result if spf else "")] + [("DKIM", d.result) for d in dkim]
              if result == "temperror"]
    if unsure:          # a DNS hiccup must not look like a forgery (RFC 7489 6.6.2)
        return DmarcResult("temperror", from_domain, "none", published, record_domain,
                           f"{' and '.join(dict.fromkeys(unsure))} could not be checked now")
    applied = published if rng.random() * 100 < policy.pct else downgrade(published)
    reason = "no aligned SPF or DKIM pass" + ("" if applied == published else f", pct={policy.pct} sampled out")
    return DmarcResult("fail", from_domain, applied, published, record_domain, reason)
