"""MTA-STS for outbound mail (RFC 8461): a recipient domain's policy, discovered, fetched and cached.

``await MtaSts.policy_for(domain)`` follows section 5.1:

* the ``_mta-sts.<domain>`` TXT record (purpose ``MTA-STS``) gives the
  policy id; with no valid record the domain has no policy - unless a
  cached one has not expired yet, which is used;
* a cached policy is used while its ``max_age`` lasts and the id has not
  changed; otherwise the policy file is fetched over HTTPS
  (:mod:`.stsfetch`) and cached;
* if that fetch fails, a cached policy that has not expired still counts;
  with none, the domain is treated as having no policy.

The cache is one JSON file per domain under ``data_dir/mta-sts/``, written
atomically, so policies survive restarts (a restart must not downgrade a
domain to "no policy"). Concurrent deliveries to one domain share one fetch.

What delivery does with a policy (:mod:`mailtui.send.stsroute`): in
``enforce`` mode, try only the MX hosts for which
:func:`~.stspolicy.mx_allowed` holds, require STARTTLS with
:meth:`MtaSts.tls_context` and ``server_hostname`` = the MX name, and defer
(with :func:`refusal`'s text) when no allowed MX can be reached that way; in
``testing`` mode deliver as usual and publish a notice of what enforce would
have refused. DANE (RFC 7672) is not checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..dns.resolver import DnsError, Resolver
from ..store.safeio import atomic_write
from .stsfetch import FetchError, client_context, fetch_policy
from .stspolicy import Policy, PolicyError, mx_allowed, parse_policy, parse_txt

log = logging.getLogger(__name__)


class MtaSts:
    def __init__(self, resolver: Resolver, data_dir: Path, *, ca_file: str = "", fetch_timeout: float = 10.0,
                 https_port: int = 443, clock: Callable[[], float] = time.time):
        self.resolver = resolver
        self.folder = Path(data_dir) / "mta-sts"
        self.fetch_timeout = fetch_timeout
        self.https_port = https_port
        self._context = client_context(ca_file)
        self._clock = clock
        self._cache: dict[str, Policy | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.last_problem: dict[str, str] = {}     # domain -> why its policy could not be had (for logs)

    def tls_context(self) -> ssl.SSLContext:
        """For enforced delivery: the certificate must chain to the trusted CAs and name the MX."""
        return self._context

    async def policy_for(self, domain: str) -> Policy | None:
        """The policy that applies to mail for ``domain`` now, or None."""
        domain = domain.lower().rstrip(".")
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            return await self._policy_for(domain)

    async def _policy_for(self, domain: str) -> Policy | None:
        now = self._clock()
        cached = self._cached(domain)
        if cached is not None and cached.expires <= now:
            cached = None
        try:
            policy_id = parse_txt(await self.resolver.txt(f"_mta-sts.{domain}", purpose="MTA-STS"))
        except DnsError as exc:
            self._problem(domain, f"TXT lookup failed: {exc.text}")
            return cached
        if policy_id is None:
            return cached
        if cached is not None and cached.id == policy_id:
            return cached
        try:
            addresses = await self.resolver.addresses(f"mta-sts.{domain}", purpose="MTA-STS")
            text = await fetch_policy(f"mta-sts.{domain}", addresses, self._context, port=self.https_port,
                                      timeout=self.fetch_timeout)
            policy = parse_policy(text, domain, policy_id, now)
        except (DnsError, FetchError, PolicyError) as exc:
            self._problem(domain, str(getattr(exc, "text", exc)))
            return cached
        await self._store(policy)
        self.last_problem.pop(domain, None)
        return policy

    def _problem(self, domain: str, text: str) -> None:
        self.last_problem[domain] = text
        log.info("MTA-STS policy of %s: %s", domain, text)

    # -- the durable cache --------------------------------------------------------------

    def _path(self, domain: str) -> Path:
        return self.folder / f"{domain}.json"

    def _cached(self, domain: str) -> Policy | None:
        if domain not in self._cache:
            self._cache[domain] = self._read(domain)
        return self._cache[domain]

    def _read(self, domain: str) -> Policy | None:
        try:
            data = json.loads(self._path(domain).read_text())
            return Policy(domain, str(data["id"]), str(data["mode"]), tuple(map(str, data["mx"])),
                          int(data["max_age"]), float(data["fetched_at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the damaged MTA-STS cache entry %s: %s", self._path(domain), exc)
            return None

    async def _store(self, policy: Policy) -> None:
        self._cache[policy.domain] = policy
        await asyncio.get_running_loop().run_in_executor(None, self._write, policy)

    def _write(self, policy: Policy) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self._path(policy.domain), json.dumps(asdict(policy)).encode())


def refusal(policy: Policy, mx_host: str) -> str | None:
    """Why enforce mode forbids delivering to ``mx_host`` (the deferral text), or None if it may."""
    if not policy.enforced or mx_allowed(policy, mx_host):
        return None
    return (f"MTA-STS policy of {policy.domain} (mode enforce) does not list {mx_host} "
            f"(allowed: {', '.join(policy.mx)})")
