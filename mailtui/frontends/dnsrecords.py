"""``mailtui dns`` and ``mailtui dkim rotate``: the records to publish, printed as zone-file lines.

A thin printer over :mod:`mailtui.mailauth.records`. Lines are printed as
plain text, never through rich (which would wrap them at the terminal's
width): each record is one line a zone file or a DNS provider's form takes
as it is. Both commands work with the server stopped (they hold the data
directory's lock meanwhile, like the other admin commands) and while it
runs: DKIM key files are only ever created whole and exactly once, so the
command and the server may read, and make, them side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Iterator

from ..config import Config
from ..dns.resolver import Resolver
from ..mailauth.dkimkeys import DkimKey, DkimKeyError, DkimKeys
from ..mailauth.dkimsign import signable
from ..mailauth.records import Check, DomainReport, Record, domain_report
from ..server.core import DataDirLock
from .errors import CliError


@contextlib.contextmanager
def data_dir_access(config: Config) -> Iterator[None]:
    """Hold the data directory's lock while the server is not running (so it cannot start meanwhile)."""
    lock = DataDirLock(config.server.data_dir)
    held = lock.acquire()
    try:
        yield
    finally:
        if held:
            lock.release()


def domains_of(config: Config, domain: str | None) -> list[str]:
    if domain is not None:
        domain = domain.strip().rstrip(".").lower()
        if not config.is_local_domain(domain):
            raise CliError(f"{domain} is not a local domain (server.local_domains: "
                           f"{', '.join(config.server.local_domains)})")
        return [domain]
    domains = [d for d in config.server.local_domains if signable(d)]
    if not domains:
        raise CliError("no domain to publish records for: server.local_domains lists only localhost")
    return domains


def load_keys(config: Config, domains: list[str]) -> dict[str, tuple[list[DkimKey], str]]:
    """Each domain's keys and active selector, its first key made now if it has none (blocking)."""
    keys = DkimKeys(config.server.data_dir, config.dkim.selector)
    try:
        active = {d: keys.active(d).selector for d in domains}
        return {d: (keys.keys(d), active[d]) for d in domains}
    except (DkimKeyError, OSError) as exc:
        raise CliError(f"DKIM key: {exc}") from None


async def reports(config: Config, keys: dict[str, tuple[list[DkimKey], str]],
                  resolver: Resolver) -> list[DomainReport]:
    """The report of each domain in ``keys``, checked side by side through ``resolver``."""
    return list(await asyncio.gather(*(
        domain_report(config, d, d_keys, active, resolver, fetch_timeout=config.mta_sts.fetch_timeout)
        for d, (d_keys, active) in keys.items())))


def run_dns(config: Config, domain: str | None, *, as_json: bool) -> None:
    domains = domains_of(config, domain)
    with data_dir_access(config):
        keys = load_keys(config, domains)
    found = asyncio.run(reports(config, keys, Resolver(config.dns.nameservers, config.dns.timeout)))
    if as_json:
        print(json.dumps([r.as_dict() for r in found], indent=2))
        return
    print("\n".join(all_lines(found)))


def all_lines(found: list[DomainReport]) -> list[str]:
    """Every report's lines, a blank line between two domains."""
    lines: list[str] = []
    for n, report in enumerate(found):
        lines += [""] if n else []
        lines += report_lines(report)
    return lines


def report_lines(report: DomainReport) -> list[str]:
    lines = [f"; {report.domain}: the records to publish, each checked against the DNS now",
             f"; (mail host {report.hostname}; statuses: present, missing, different)"]
    for check in report.checks:
        lines += check_lines(check)
    lines += ["", f"; the mail host {report.hostname}: its addresses, and their reverse DNS (PTR)"]
    for check in report.host_checks:
        lines += check_lines(check)
    policy = report.policy_check
    lines += ["", f"; the MTA-STS policy file: serve it at {report.policy_url}",
              f";   (over HTTPS with a certificate for mta-sts.{report.domain}; mailtui does not serve HTTPS)"
              + (f" - {status_text(policy)}" if policy else "")]
    lines += [f";   {line}" for line in report.policy_file.splitlines()]
    return lines


def check_lines(check: Check) -> list[str]:
    record = check.record
    if record.value == "?":
        return [f"; {record.name} {record.rtype}: {status_text(check)}"]
    lines = [f"{record.zone_line()}\t; {status_text(check)}" + (f" - {record.note}" if record.note else "")]
    lines += [f";   the DNS has: {Record(record.name, record.rtype, found).rdata()}" for found in check.found]
    return lines


def status_text(check: Check) -> str:
    return check.status + (f": {check.note}" if check.note else "")


def run_rotate(config: Config, domain: str) -> None:
    [domain] = domains_of(config, domain)
    with data_dir_access(config):
        try:
            key: DkimKey = DkimKeys(config.server.data_dir, config.dkim.selector).rotate(domain)
        except (DkimKeyError, OSError) as exc:
            raise CliError(f"DKIM key: {exc}") from None
    print(f"; {domain} now signs with selector {key.selector}: publish this record now")
    print("; (keep the old selectors' records until mail signed with them has arrived; see mailtui dns)")
    print(Record(key.record_name, "TXT", key.record).zone_line())
