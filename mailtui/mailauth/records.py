"""The DNS records a local domain should publish, and whether the DNS has them now.

``await domain_report(...)`` lists, for one domain: the MX (-> the server's
hostname), the SPF TXT, each DKIM key's ``<selector>._domainkey`` TXT, the
``_dmarc`` TXT, the RFC 6186 / RFC 8314 SRV records for submission, IMAP
and POP3, the ``_mta-sts`` TXT (and the policy file to serve); then the
hostname's A/AAAA records and the PTR of each address. Each gets a check
against what mailtui's resolver answers now (purpose ``CHECK``):

* ``present`` - the DNS has it, or something that does the same job (an
  SPF record that passes for the hostname's addresses, any valid DMARC
  record, a PTR that names the hostname ...);
* ``missing`` - nothing there;
* ``different`` - something there that does not do the job (the note says
  what and why); ``error`` - the DNS could not answer.

The CLI (``mailtui dns``) prints the report as zone-file lines; the console
can show the same report.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field

import dmarc as dmarclib
import dns.reversename

from ..config import Config
from ..dns.resolver import DnsError, Resolver
from .dkimkeys import DkimKey
from .spfcheck import check_spf
from .stsfetch import FetchError, client_context, fetch_policy
from .stspolicy import PolicyError, mx_allowed, parse_policy, parse_txt, policy_text

TTL = 3600
STS_MAX_AGE = 604_800            # a week; RFC 8461 suggests weeks once the policy is stable
SPF_RECORD = "v=spf1 mx -all"
DMARC_RECORD = "v=DMARC1; p=quarantine"
PURPOSE = "CHECK"
# (service, port, the config key that gives the port, or None for "standard port")
SERVICES = (("_submission._tcp", 587, "submission.listen"), ("_submissions._tcp", 465, "submission.tls_listen"),
            ("_imap._tcp", 143, None), ("_imaps._tcp", 993, None), ("_pop3._tcp", 110, "pop3.listen"),
            ("_pop3s._tcp", 995, None))


@dataclass(frozen=True)
class Record:
    name: str                      # the owner name, without the final dot
    rtype: str                     # MX, TXT, SRV, A, AAAA, PTR
    value: str                     # MX "10 host", SRV "0 1 587 host", TXT the text unquoted, A the address
    note: str = ""                 # what it is for, printed as a comment
    kind: str = ""                 # which check applies: spf, dkim, dmarc, mta-sts (TXT records)

    def rdata(self) -> str:
        """The value as a zone file writes it (a TXT value as quoted strings of at most 255 bytes)."""
        if self.rtype == "TXT":
            return txt_strings(self.value)
        return self.value + "." if self.rtype in ("MX", "SRV", "PTR", "CNAME") else self.value

    def zone_line(self) -> str:
        return f"{self.name}.\t{TTL}\tIN\t{self.rtype}\t{self.rdata()}"


@dataclass(frozen=True)
class Check:
    record: Record
    status: str                    # present, missing, different, error
    found: tuple[str, ...] = ()    # what the DNS has, when it differs
    note: str = ""


@dataclass
class DomainReport:
    domain: str
    hostname: str
    checks: list[Check] = field(default_factory=list)
    host_checks: list[Check] = field(default_factory=list)
    policy_url: str = ""
    policy_file: str = ""
    policy_check: Check | None = None

    def as_dict(self) -> dict:
        def row(check: Check) -> dict:
            r = check.record
            return {"name": r.name, "type": r.rtype, "value": r.value, "zone": r.zone_line(), "note": r.note,
                    "status": check.status, "found": list(check.found), "detail": check.note}
        return {"domain": self.domain, "hostname": self.hostname, "records": [row(c) for c in self.checks],
                "host": [row(c) for c in self.host_checks],
                "mta_sts_policy": {"url": self.policy_url, "file": self.policy_file,
                                   "status": self.policy_check.status if self.policy_check else "",
                                   "detail": self.policy_check.note if self.policy_check else ""}}


def txt_strings(text: str) -> str:
    """``text`` as quoted character-strings of at most 255 bytes each, on one line (RFC 1035 3.3.14).

    Cut between characters, never inside one; quotes and backslashes escaped.
    """
    chunks, chunk, size = [], [], 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > 255:
            chunks.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    chunks.append("".join(chunk))
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def sts_policy(hostname: str) -> tuple[str, str]:
    """The MTA-STS policy file to serve and its id (which changes whenever the file does)."""
    text = policy_text("testing", [hostname], STS_MAX_AGE)
    return text, hashlib.sha256(text.encode()).hexdigest()[:20]


def expected(config: Config, domain: str, keys: list[DkimKey], active: str) -> list[Record]:
    """Every record ``domain`` should publish, in the order they are printed."""
    host = config.server.hostname
    records = [Record(domain, "MX", f"10 {host}", "mail for the domain goes to this server"),
               Record(domain, "TXT", SPF_RECORD, "SPF: the domain's MX hosts may send its mail", "spf")]
    for key in keys:
        note = "DKIM key that signs now" if key.selector == active else \
            "DKIM key rotated out: keep it until mail signed with it has arrived"
        records.append(Record(key.record_name, "TXT", key.record, note, "dkim"))
    records.append(Record(f"_dmarc.{domain}", "TXT", DMARC_RECORD, "DMARC: receivers quarantine mail that fails",
                          "dmarc"))
    for service, port, key_name in SERVICES:
        port, source = _port(config, port, key_name)
        records.append(Record(f"{service}.{domain}", "SRV", f"0 1 {port} {host}", f"RFC 6186/8314, {source}"))
    _, sts_id = sts_policy(host)
    records.append(Record(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={sts_id}",
                          "MTA-STS: senders must use TLS to this server", "mta-sts"))
    return records


def _port(config: Config, standard: int, key_name: str | None) -> tuple[int, str]:
    if key_name is None:
        return standard, "standard port (mailtui has no setting for it yet)"
    section, name = key_name.split(".")
    listen = getattr(getattr(config, section), name)
    if listen:
        return listen[0].port, f"port from {key_name}"
    return standard, f"standard port ({key_name} is off)"


async def domain_report(config: Config, domain: str, keys: list[DkimKey], active: str, resolver: Resolver, *,
                        https_port: int = 443, fetch_timeout: float = 10.0) -> DomainReport:
    """The records of ``domain`` and what the DNS says of each, now."""
    host = config.server.hostname
    report = DomainReport(domain, host)
    addresses, report.host_checks = await check_host(host, resolver)
    records = expected(config, domain, keys, active)
    report.checks = list(await asyncio.gather(*(check_record(r, resolver, addresses) for r in records)))
    report.policy_file, _ = sts_policy(host)
    report.policy_url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    report.policy_check = await check_policy_file(domain, host, resolver, client_context(config.mta_sts.ca_file),
                                                  https_port, fetch_timeout)
    return report


async def check_host(hostname: str, resolver: Resolver) -> tuple[list[str], list[Check]]:
    """The hostname's addresses, and checks of its A/AAAA records and of each address's PTR."""
    checks: list[Check] = []
    addresses: list[str] = []
    for rtype in ("A", "AAAA"):
        try:
            answer = await resolver.lookup(hostname, rtype, purpose=PURPOSE)
        except DnsError as exc:
            checks.append(Check(Record(hostname, rtype, "?"), "error", note=exc.text))
            continue
        addresses += answer.values
        checks += [Check(Record(hostname, rtype, a, "the mail host's address"), "present") for a in answer.values]
    if not addresses and not any(c.status == "error" for c in checks):
        checks.insert(0, Check(Record(hostname, "A", "?", "the mail host's address"), "missing",
                               note="the mail host has no A or AAAA record"))
    for address in addresses:
        checks.append(await _check_ptr(hostname, address, resolver))
    return addresses, checks


async def _check_ptr(hostname: str, address: str, resolver: Resolver) -> Check:
    try:
        answer = await resolver.reverse(address, purpose=PURPOSE)
    except DnsError as exc:
        return Check(Record(address, "PTR", hostname), "error", note=exc.text)
    name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    record = Record(name, "PTR", hostname, f"reverse DNS of {address}: set by whoever owns the address")
    if hostname in answer.values:
        return Check(record, "present")
    if answer.values:
        return Check(record, "different", answer.values, f"{address} points back to another name")
    return Check(record, "missing")


async def check_record(record: Record, resolver: Resolver, addresses: list[str]) -> Check:
    try:
        if record.rtype == "MX":
            return await _check_mx(record, resolver)
        if record.rtype == "SRV":
            return await _check_srv(record, resolver)
        return await _check_txt(record, resolver, addresses)
    except DnsError as exc:
        return Check(record, "error", note=exc.text)


async def _check_mx(record: Record, resolver: Resolver) -> Check:
    answer = await resolver.lookup(record.name, "MX", purpose=PURPOSE)
    host = record.value.split()[1]
    found = tuple(f"{pref} {name}" for pref, name in answer.values)
    if any(name == host for _, name in answer.values):
        return Check(record, "present")
    return Check(record, "different", found, "mail for the domain goes elsewhere") if found else \
        Check(record, "missing")


async def _check_srv(record: Record, resolver: Resolver) -> Check:
    answer = await resolver.lookup(record.name, "SRV", purpose=PURPOSE)
    port, host = record.value.split()[2:]
    found = tuple(v.rstrip(".") for v in answer.values)
    if any(v.split()[2:] == [port, host] for v in found):
        return Check(record, "present")
    return Check(record, "different", found) if found else Check(record, "missing")


_VERSION_TAG = {"spf": "v=spf1", "dkim": "v=dkim1", "dmarc": "v=dmarc1", "mta-sts": "v=stsv1"}


async def _check_txt(record: Record, resolver: Resolver, addresses: list[str]) -> Check:
    texts = [t.decode("utf-8", "replace") for t in await resolver.txt(record.name, purpose=PURPOSE)]
    tag = _VERSION_TAG[record.kind]
    mine = [t for t in texts if t.replace(" ", "").lower().startswith(tag)]
    if not mine:
        return Check(record, "missing", tuple(texts))
    if record.kind == "spf":
        return await _judge_spf(record, mine, addresses, resolver)
    if record.kind == "dkim":
        key = _tag(record.value, "p")
        ok = any(_tag(t, "p") == key for t in mine)
        return Check(record, "present") if ok else Check(record, "different", tuple(mine), "another key")
    if len(mine) > 1:
        return Check(record, "different", tuple(mine), "several records: receivers use none of them")
    if record.kind == "dmarc":
        return _judge_dmarc(record, mine[0])
    valid = parse_txt([mine[0].encode()]) is not None
    return Check(record, "present", note=mine[0]) if valid else \
        Check(record, "different", tuple(mine), "not a valid MTA-STS record")


async def _judge_spf(record: Record, found: list[str], addresses: list[str], resolver: Resolver) -> Check:
    if len(found) > 1:
        return Check(record, "different", tuple(found), "several SPF records: SPF gives permerror")
    if not addresses:
        same = found[0].strip() == record.value
        return Check(record, "present" if same else "different", () if same else tuple(found),
                     "cannot test it: the mail host has no address")
    domain = record.name
    results = await asyncio.gather(*(check_spf(a, domain, f"postmaster@{domain}", resolver) for a in addresses))
    failing = [f"{r.result} for {a}" for a, r in zip(addresses, results) if r.result != "pass"]
    if not failing:
        return Check(record, "present", note=found[0])
    return Check(record, "different", tuple(found), "it does not authorise this server: " + ", ".join(failing))


def _judge_dmarc(record: Record, text: str) -> Check:
    try:
        policy = dmarclib.Policy("DMARC1", record.name.removeprefix("_dmarc."))
        policy.parse_record(text, strict=False)
    except dmarclib.RecordSyntaxError as exc:
        return Check(record, "different", (text,), f"not a valid DMARC record ({exc})")
    return Check(record, "present", note=f"p={policy.p.value}")


def _tag(text: str, name: str) -> str:
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip() == name:
            return "".join(value.split())
    return ""


async def check_policy_file(domain: str, hostname: str, resolver: Resolver, context: ssl.SSLContext,
                            port: int, timeout: float) -> Check:
    """Whether ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` serves a policy that allows us."""
    host = f"mta-sts.{domain}"
    record = Record(host, "A", "?", "serve the policy file here over HTTPS (mailtui does not serve HTTPS)")
    try:
        addresses = await resolver.addresses(host, purpose=PURPOSE)
        policy = parse_policy(await fetch_policy(host, addresses, context, port=port, timeout=timeout), domain, "")
    except DnsError as exc:
        return Check(record, "missing", note=exc.text)
    except (FetchError, PolicyError) as exc:
        return Check(record, "missing", note=str(exc))
    if policy.mode != "none" and not mx_allowed(policy, hostname):
        return Check(record, "different", policy.mx, f"the policy does not list {hostname}")
    return Check(record, "present", note=f"mode {policy.mode}")
