"""SPF (RFC 7208) with pyspf, its DNS questions answered by mailtui's resolver.

pyspf is synchronous. When every answer an evaluation needs is in the
resolver's cache (the sender wrote before), it runs on the loop's thread
from the cache (:meth:`Resolver.peek`); otherwise it runs in a small thread
pool of its own, each DNS question it asks handed to the event loop's
resolver (``run_coroutine_threadsafe``) while the thread waits for the
answer. Either way the lookups are cached, logged with purpose ``SPF`` and
bounded by the resolver's timeout like every other. pyspf enforces RFC 7208 4.6.4's limits itself (10
DNS-querying terms, 2 void lookups, 10 MX/PTR names); the whole evaluation
has a deadline too: a DNS that stalls gives ``temperror`` when it passes,
never a stalled session.

pyspf asks DNS through its module-level ``spf.DNSLookup`` (its test suite
replaces it the same way); :func:`_lookup` takes its place, answering for
the threads this module runs and leaving every other caller on pyspf's own
lookup. A test (tests/test_mailauth.py) fails if pyspf stops asking there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass

import spf

from ..addresses import AddressError, literal_ip
from ..dns.resolver import Answer, DnsError, PermanentDnsError, Resolver
from ..wire import printable

WORKERS = 8                     # evaluations at once; each mostly waits on the DNS
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mailtui-spf")
_local = threading.local()
INLINE_MAX = 2048               # octets of one answer evaluated on the loop's thread; more go to a thread


@dataclass(frozen=True)
class SpfResult:
    result: str             # none, neutral, pass, fail, softfail, temperror, permerror
    identity: str = "mailfrom"   # which identity was checked: "mailfrom" or "helo"
    domain: str = ""        # the domain whose policy was asked
    sender: str = ""        # the identity as checked (MAIL FROM, or postmaster@HELO)
    reason: str = ""


def _pyspf_answer(name: str, qtype: str, answer: Answer) -> list:
    """An answer as pyspf's DNS hook returns it."""
    if qtype in ("TXT", "SPF"):
        return [((name, qtype), (value,)) for value in answer.values]
    return [((name, qtype), value) for value in answer.values]


class _NotCached(BaseException):
    """An answer the cache does not have: the evaluation on the loop stops (BaseException: pyspf lets it through)."""


class _CacheOnly:
    """Answers one evaluation's DNS questions from the resolver's cache only, on the loop's thread."""

    def __init__(self, resolver: Resolver):
        self.resolver = resolver
        self.missed = False          # also set where pyspf swallows the exception (its bare excepts)

    def lookup(self, name: str, qtype: str) -> list:
        answer = self.resolver.peek(name, qtype, purpose="SPF")
        if answer is None or sum(map(len, answer.records)) > INLINE_MAX:
            self.missed = True
            raise _NotCached
        return _pyspf_answer(name, qtype, answer)


class _Bridge:
    """Carries one evaluation's DNS questions from its thread to the loop's resolver."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resolver: Resolver, deadline: float):
        self.loop = loop
        self.resolver = resolver
        self.deadline = deadline

    def lookup(self, name: str, qtype: str) -> list:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise spf.TempError("DNS: SPF evaluation took too long")
        future = asyncio.run_coroutine_threadsafe(
            self.resolver.lookup(name, qtype, purpose="SPF"), self.loop)
        try:
            answer = future.result(remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise spf.TempError(f"DNS: lookup of {name} ({qtype}) took too long") from None
        except PermanentDnsError:
            return []                                  # not a valid name: no data
        except DnsError as exc:
            raise spf.TempError(f"DNS: {exc.text}") from None
        return _pyspf_answer(name, qtype, answer)


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNS hook: this module's evaluations ask mailtui's resolver, anyone else pyspf's own lookup."""
    bridge: _Bridge | _CacheOnly | None = getattr(_local, "bridge", None)
    if bridge is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    return bridge.lookup(str(name).rstrip("."), qtype)


_pyspf_lookup = spf.DNSLookup
spf.DNSLookup = _lookup


def identity_of(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(identity, sender, domain) to check: MAIL FROM, or postmaster@HELO for the null sender."""
    if mail_from:
        return "mailfrom", mail_from, mail_from.rpartition("@")[2].lower()
    helo = helo.strip().lower()
    return "helo", f"postmaster@{helo}", helo


def _evaluate(bridge: _Bridge | _CacheOnly, ip: str, sender: str, helo: str, receiver: str,
              querytime: float) -> tuple[str, str]:
    _local.bridge = bridge
    try:
        query = spf.query(i=ip, s=sender, h=helo, receiver=receiver or None, querytime=querytime)
        result, _code, explanation = query.check()
        return result, explanation
    except (spf.TempError, spf.PermError) as exc:
        return ("temperror" if isinstance(exc, spf.TempError) else "permerror"), str(exc)
    except Exception as exc:                   # pyspf on input it never expected: a result, not a crash
        return "permerror", f"SPF evaluation failed ({type(exc).__name__})"
    finally:
        _local.bridge = None


def spf_from_cache(ip: str, helo: str, mail_from: str, resolver: Resolver, *,
                   receiver: str = "") -> SpfResult | None:
    """The SPF result if every answer it needs is cached (evaluated here, on the loop's thread), else None."""
    identity, sender, domain = identity_of(mail_from, helo)
    if not domain or _is_literal(domain):
        return SpfResult("none", identity, domain, sender, "no domain to check")
    result, explanation = _from_cache(resolver, ip, sender, helo, receiver)
    return _result(result, identity, domain, sender, explanation) if result else None


async def check_spf(ip: str, helo: str, mail_from: str, resolver: Resolver, *,
                    timeout: float = 20.0, receiver: str = "") -> SpfResult:
    """The SPF result for a client at ``ip`` sending as ``mail_from`` (or, for <>, as its HELO name)."""
    cached = spf_from_cache(ip, helo, mail_from, resolver, receiver=receiver)
    if cached is not None:
        return cached
    identity, sender, domain = identity_of(mail_from, helo)
    loop = asyncio.get_running_loop()
    bridge = _Bridge(loop, resolver, time.monotonic() + timeout)
    try:
        result, explanation = await asyncio.wait_for(
            loop.run_in_executor(_pool, _evaluate, bridge, ip, sender, helo, receiver, timeout), timeout + 1)
    except asyncio.TimeoutError:
        result, explanation = "temperror", "SPF evaluation timed out"
    return _result(result, identity, domain, sender, explanation)


def _result(result: str, identity: str, domain: str, sender: str, explanation: str) -> SpfResult:
    if result == "ambiguous":                  # only in pyspf's "harsh" mode, which is not used
        result = "neutral"
    return SpfResult(result, identity, domain, sender, printable(explanation)[:200])


def _from_cache(resolver: Resolver, ip: str, sender: str, helo: str, receiver: str) -> tuple[str, str]:
    """The evaluation on the loop's thread when every answer it needs is cached, else ("", "").

    pyspf's own work takes 20 us; handing it to a thread, and each of its
    questions back to the loop, costs ten times that. When the DNS must be
    asked, the evaluation starts again in a thread.
    """
    cache_only = _CacheOnly(resolver)
    try:
        outcome = _evaluate(cache_only, ip, sender, helo, receiver, 1.0)
    except _NotCached:
        return "", ""
    return ("", "") if cache_only.missed else outcome


def _is_literal(domain: str) -> bool:
    try:
        return literal_ip(domain) is not None or domain.replace(".", "").isdigit()
    except AddressError:
        return True
