"""SPF (RFC 7208) with pyspf, its DNS questions answered by mailtui's resolver.

pyspf is synchronous, so an evaluation runs in a small thread pool of its
own; each DNS question it asks is handed to the event loop's resolver
(``run_coroutine_threadsafe``) and the thread waits for the answer, so the
lookups are cached, logged with purpose ``SPF`` and bounded by the resolver's
timeout like every other. pyspf enforces RFC 7208 4.6.4's limits itself (10
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
from ..dns.resolver import DnsError, PermanentDnsError, Resolver
from ..wire import printable

WORKERS = 8                     # evaluations at once; each mostly waits on the DNS
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mailtui-spf")
_local = threading.local()


@dataclass(frozen=True)
class SpfResult:
    result: str             # none, neutral, pass, fail, softfail, temperror, permerror
    identity: str = "mailfrom"   # which identity was checked: "mailfrom" or "helo"
    domain: str = ""        # the domain whose policy was asked
    sender: str = ""        # the identity as checked (MAIL FROM, or postmaster@HELO)
    reason: str = ""


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
        if qtype in ("TXT", "SPF"):
            return [((name, qtype), (value,)) for value in answer.values]
        return [((name, qtype), value) for value in answer.values]


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNS hook: this module's threads ask the loop's resolver, anyone else pyspf's own lookup."""
    bridge: _Bridge | None = getattr(_local, "bridge", None)
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


def _evaluate(bridge: _Bridge, ip: str, sender: str, helo: str, receiver: str) -> tuple[str, str]:
    _local.bridge = bridge
    try:
        query = spf.query(i=ip, s=sender, h=helo, receiver=receiver or None,
                          querytime=max(0.1, bridge.deadline - time.monotonic()))
        result, _code, explanation = query.check()
        return result, explanation
    except (spf.TempError, spf.PermError) as exc:
        return ("temperror" if isinstance(exc, spf.TempError) else "permerror"), str(exc)
    except Exception as exc:                   # pyspf on input it never expected: a result, not a crash
        return "permerror", f"SPF evaluation failed ({type(exc).__name__})"
    finally:
        _local.bridge = None


async def check_spf(ip: str, helo: str, mail_from: str, resolver: Resolver, *,
                    timeout: float = 20.0, receiver: str = "") -> SpfResult:
    """The SPF result for a client at ``ip`` sending as ``mail_from`` (or, for <>, as its HELO name)."""
    identity, sender, domain = identity_of(mail_from, helo)
    if not domain or _is_literal(domain):
        return SpfResult("none", identity, domain, sender, "no domain to check")
    loop = asyncio.get_running_loop()
    bridge = _Bridge(loop, resolver, time.monotonic() + timeout)
    try:
        result, explanation = await asyncio.wait_for(
            loop.run_in_executor(_pool, _evaluate, bridge, ip, sender, helo, receiver), timeout + 1)
    except asyncio.TimeoutError:
        result, explanation = "temperror", "SPF evaluation timed out"
    if result == "ambiguous":                  # only in pyspf's "harsh" mode, which is not used
        result = "neutral"
    return SpfResult(result, identity, domain, sender, printable(explanation)[:200])


def _is_literal(domain: str) -> bool:
    try:
        return literal_ip(domain) is not None or domain.replace(".", "").isdigit()
    except AddressError:
        return True
