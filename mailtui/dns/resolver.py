"""The one resolver: every DNS question mailtui asks goes through it.

``Resolver.mail_hosts(domain)`` finds the mail hosts of a domain (RFC 5321
section 5.1, RFC 7505): the hosts to try, best first, each with its addresses
(IPv4 first), or a :class:`DnsError` whose ``status`` is the RFC 3463 code to
record: permanent (the domain does not exist, or says it takes no mail) or
temporary (the DNS could not answer now).

``Resolver.lookup(name, rtype, purpose=...)`` answers any other question
(TXT for SPF, DKIM, DMARC and MTA-STS; A/AAAA; PTR through ``reverse``) with
an :class:`Answer`: NXDOMAIN and "no records" are answers, not errors; only a
DNS that cannot answer now raises :class:`TemporaryDnsError`.

Every lookup, answered from the cache or not, is published as a
:class:`~mailtui.events.DnsLookup` event with its *purpose* (MX, SPF, DKIM,
DMARC, MTA-STS, CHECK ...) and logged in the store's ``dns`` table, so the
console can show what the server asked, why, and what it was told.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename

from ..addresses import AddressError, literal_ip
from ..config import Endpoint
from ..events import DnsLookup, EventBus
from ..store.db import Store

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
NEGATIVE_TTL_DEFAULT = 60          # NXDOMAIN/NODATA without an SOA to say how long
MAX_TTL = 24 * 3600


class DnsError(Exception):
    """A lookup that gave no usable answer; ``status`` is an RFC 3463 code."""

    permanent = False

    def __init__(self, status: str, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


class PermanentDnsError(DnsError):
    permanent = True


class TemporaryDnsError(DnsError):
    permanent = False


@dataclass
class MailHost:
    name: str                      # host name without the trailing dot, or "[literal]"
    preference: int
    addresses: list[str] = field(default_factory=list)


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random | None = None) -> list[tuple[int, str]]:
    """MX records in the order to try them (RFC 5321 section 5.1).

    Lowest preference first; hosts of equal preference in random order (to
    spread the load); a host listed twice keeps its best preference; names are
    lower-cased and lose their trailing dot.
    """
    rng = rng or random
    best: dict[str, int] = {}
    for preference, name in records:
        name = name.rstrip(".").lower()
        if name not in best or preference < best[name]:
            best[name] = preference
    groups: dict[int, list[str]] = {}
    for name, preference in best.items():
        groups.setdefault(preference, []).append(name)
    ordered: list[tuple[int, str]] = []
    for preference in sorted(groups):
        names = sorted(groups[preference])
        rng.shuffle(names)
        ordered.extend((preference, name) for name in names)
    return ordered


def parse_literal(domain: str) -> str | None:
    """The address in a domain literal, else None; a bad literal fails for good."""
    try:
        return literal_ip(domain)
    except AddressError:
        raise PermanentDnsError("5.1.2", f"bad address literal {domain}") from None


@dataclass(frozen=True)
class Answer:
    """One lookup's result, as cached.

    ``values`` holds the rdata in the form callers use: ``(preference, host)``
    for MX, the joined character-strings as bytes for TXT (RFC 7208 3.3,
    RFC 6376 3.6.2.2), a lower-case name without the final dot for PTR and
    CNAME, the address text for A and AAAA.
    """

    rcode: str                     # "NOERROR", "NXDOMAIN"
    records: tuple[str, ...]       # rdata in text form, as the DNS log shows it
    values: tuple = ()
    expires: float = 0.0


class Resolver:
    def __init__(self, nameservers: tuple[Endpoint, ...] = (), timeout: float = 5.0,
                 bus: EventBus | None = None, store: Store | None = None, *,
                 cache_size: int = CACHE_SIZE, rng: random.Random | None = None):
        self.timeout = timeout
        self._bus = bus
        self._store = store
        self._rng = rng or random.Random()
        self._cache: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._cache_size = cache_size
        self._config_error = ""
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ep.host, ep.port) for ep in nameservers]
        else:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                self._resolver = dns.asyncresolver.Resolver(configure=False)
                self._resolver.nameservers = []
                self._config_error = f"no nameservers configured ({exc})"
        self._resolver.search = []
        self._resolver.use_search_by_default = False
        self._resolver.cache = None
        self._resolver.lifetime = timeout
        # Each try may use the whole lifetime when there is one server; with
        # several, leave time to ask the next one.
        count = max(1, len(self._resolver.nameservers))
        self._resolver.timeout = max(0.2, timeout / count)

    # -- the RFC 5321 procedure --------------------------------------------------

    async def mail_hosts(self, domain: str, *, purpose: str = "MX") -> list[MailHost]:
        domain = domain.strip().rstrip(".").lower()
        literal = parse_literal(domain)
        if literal is not None:
            return [MailHost(domain, 0, [literal])]
        if not domain:
            raise PermanentDnsError("5.1.2", "empty domain name")

        mx = await self.lookup(domain, "MX", purpose=purpose)
        if mx.rcode == "NXDOMAIN":
            raise PermanentDnsError("5.1.2", f"domain {domain} does not exist (DNS says NXDOMAIN)")
        if mx.values:
            real = [(pref, name) for pref, name in mx.values if name not in ("", ".")]
            if not real:
                raise PermanentDnsError(
                    "5.1.10", f"domain {domain} does not accept mail (it publishes a null MX record)")
            hosts: list[MailHost] = []
            problems: list[str] = []
            ordered = order_mx(real, self._rng)
            results = await asyncio.gather(
                *(self._addresses(name, purpose) for _, name in ordered), return_exceptions=True)
            for (pref, name), result in zip(ordered, results):
                if isinstance(result, BaseException):
                    if not isinstance(result, DnsError):
                        raise result
                    problems.append(f"{name}: {result.text}")
                    continue
                hosts.append(MailHost(name, pref, result))
            if not hosts:
                raise TemporaryDnsError(
                    "4.4.3", f"no mail host of {domain} has an address ({'; '.join(problems)})")
            return hosts

        # No MX records: the domain itself is the implicit MX (RFC 5321 5.1).
        try:
            addresses = await self._addresses(domain, purpose)
        except PermanentDnsError as exc:
            raise PermanentDnsError(
                "5.4.4", f"domain {domain} has no MX and no address records ({exc.text})") from None
        return [MailHost(domain, 0, addresses)]

    async def addresses(self, name: str, *, purpose: str) -> list[str]:
        """A and AAAA of ``name`` (IPv4 first); raises if neither gives one."""
        return await self._addresses(name.strip().rstrip(".").lower(), purpose)

    async def _addresses(self, name: str, purpose: str) -> list[str]:
        answers = await asyncio.gather(self.lookup(name, "A", purpose=purpose),
                                       self.lookup(name, "AAAA", purpose=purpose),
                                       return_exceptions=True)
        addresses: list[str] = []
        temporary: DnsError | None = None
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, DnsError):
                    raise answer
                temporary = answer
                continue
            addresses.extend(answer.values)
        if addresses:
            return addresses
        if temporary is not None:
            raise temporary
        if all(isinstance(a, Answer) and a.rcode == "NXDOMAIN" for a in answers):
            raise PermanentDnsError("5.1.2", f"host {name} does not exist")
        raise PermanentDnsError("5.4.4", f"host {name} has no address records")

    # -- single lookups, cached ----------------------------------------------------

    async def lookup(self, name: str, rtype: str, *, purpose: str) -> Answer:
        """The records of one type at ``name``, from the cache while their TTL lasts.

        NXDOMAIN and NODATA are answers (``rcode``, no ``values``); a DNS that
        cannot answer now raises :class:`TemporaryDnsError`, a name that is
        not a valid domain name :class:`PermanentDnsError`.
        """
        name = name.strip().rstrip(".").lower()
        key = (name, rtype)
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None:
            if cached.expires > now:
                self._cache.move_to_end(key)
                self._record(name, rtype, cached.records, cached.rcode, 0.0, True, purpose)
                return cached
            del self._cache[key]

        start = time.monotonic()
        try:
            answer = await self._query(name, rtype)
        except DnsError as exc:
            rcode = getattr(exc, "rcode", "ERROR")
            self._record(name, rtype, (), rcode, time.monotonic() - start, False, purpose)
            raise
        self._record(name, rtype, answer.records, answer.rcode, time.monotonic() - start, False, purpose)
        self._remember(key, answer)
        return answer

    def cached(self, name: str, rtype: str) -> Answer | None:
        """The cached answer while its TTL lasts, else None; nothing is asked, nothing recorded."""
        cached = self._cache.get((name.strip().rstrip(".").lower(), rtype))
        return cached if cached is not None and cached.expires > time.time() else None

    def peek(self, name: str, rtype: str, *, purpose: str) -> Answer | None:
        """The cached answer (recorded as a cached lookup, like :meth:`lookup`'s), else None: nothing is asked.

        For synchronous code on the loop's thread that can use an answer now
        or not at all (checks of a sender whose records are cached).
        """
        name = name.strip().rstrip(".").lower()
        cached = self.cached(name, rtype)
        if cached is not None:
            self._cache.move_to_end((name, rtype))
            self._record(name, rtype, cached.records, cached.rcode, 0.0, True, purpose)
        return cached

    async def txt(self, name: str, *, purpose: str) -> list[bytes]:
        """The TXT records at ``name``, each as one string (its parts joined); [] if none."""
        return list((await self.lookup(name, "TXT", purpose=purpose)).values)

    async def reverse(self, address: str, *, purpose: str) -> Answer:
        """The PTR records of an IP address."""
        try:
            name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        except (dns.exception.SyntaxError, ValueError):
            raise PermanentDnsError("5.1.2", f"{address!r} is not an IP address") from None
        return await self.lookup(name, "PTR", purpose=purpose)

    async def _query(self, name: str, rtype: str) -> Answer:
        if self._config_error or not self._resolver.nameservers:
            raise _temporary("NONS", self._config_error or "no nameservers configured")
        try:
            if not name:
                raise ValueError("empty name")
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            raise PermanentDnsError("5.1.2", f"{name!r} is not a valid domain name ({exc})") from None
        try:
            result = await self._resolver.resolve(
                qname, rtype, raise_on_no_answer=False, search=False, lifetime=self.timeout)
        except dns.resolver.NXDOMAIN as exc:
            return Answer("NXDOMAIN", (), expires=time.time() + _negative_ttl(exc))
        except dns.resolver.LifetimeTimeout:
            raise _temporary("TIMEOUT", f"DNS lookup of {name} ({rtype}) timed out") from None
        except dns.resolver.NoNameservers as exc:
            rcode = _rcode_of(exc)
            raise _temporary(rcode, f"DNS lookup of {name} ({rtype}) failed: "
                             f"no nameserver could answer ({rcode})") from None
        except dns.resolver.YXDOMAIN:
            raise _temporary("YXDOMAIN", f"DNS lookup of {name} ({rtype}) failed (YXDOMAIN)") from None
        except dns.exception.DNSException as exc:
            raise _temporary("ERROR", f"DNS lookup of {name} ({rtype}) failed: {exc}") from None

        ttl = max(0.0, min(MAX_TTL, result.expiration - time.time()))
        records: list[str] = []
        values: list = []
        for rdata in result.rrset if result.rrset is not None else ():
            value = _value(rtype, rdata)
            values.append(value)
            records.append(f"{value[0]} {value[1]}" if rtype == "MX" else rdata.to_text())
        return Answer("NOERROR", tuple(records), tuple(values), expires=time.time() + ttl)

    def _remember(self, key: tuple[str, str], answer: Answer) -> None:
        if answer.expires <= time.time():
            return
        self._cache[key] = answer
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _record(self, name: str, rtype: str, answer: tuple[str, ...], rcode: str,
                duration: float, cached: bool, purpose: str) -> None:
        if self._bus is not None:
            self._bus.publish(DnsLookup(name=name, rtype=rtype, answer=answer, rcode=rcode,
                                        duration=duration, cached=cached, purpose=purpose))
        if self._store is not None:
            self._store.log("dns", {"at": time.time(), "name": name, "type": rtype,
                                    "answer": list(answer), "rcode": rcode,
                                    "duration": round(duration, 6), "cached": cached,
                                    "purpose": purpose})


def _value(rtype: str, rdata) -> object:
    """One rdata in the form :class:`Answer` callers use."""
    if rtype == "MX":
        return rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower() or "."
    if rtype == "TXT":
        return b"".join(rdata.strings)
    if rtype in ("PTR", "CNAME"):
        return rdata.target.to_text(omit_final_dot=True).lower()
    if rtype in ("A", "AAAA"):
        return rdata.address
    return rdata.to_text()


def _temporary(rcode: str, text: str) -> TemporaryDnsError:
    exc = TemporaryDnsError("4.4.3", text)
    exc.rcode = rcode  # type: ignore[attr-defined]
    return exc


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """How long to remember an NXDOMAIN: the SOA's negative TTL, else a default."""
    try:
        for response in exc.responses().values():
            return float(min(MAX_TTL, response.resolve_chaining().minimum_ttl))
    except Exception:  # a malformed response: fall back to the default
        pass
    return float(NEGATIVE_TTL_DEFAULT)


def _rcode_of(exc: dns.resolver.NoNameservers) -> str:
    """The rcode the servers gave (SERVFAIL, REFUSED ...), or ERROR if none answered."""
    for error in exc.kwargs.get("errors", []) or []:
        response = error[-1] if isinstance(error, tuple) and error else None
        if response is not None and hasattr(response, "rcode"):
            return dns.rcode.to_text(response.rcode())
    return "ERROR"
