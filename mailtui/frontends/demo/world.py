"""A small Internet on 127.0.0.0/8 for ``mailtui demo``: nothing leaves the machine.

* a DNS server (dnspython messages over asyncio UDP and TCP on 127.0.0.1)
  that answers for ``.test`` only: MX domains whose mail hosts live on
  127.0.0.2 (accepts), 127.0.0.3 (defers with 451) and 127.0.0.4 (rejects
  with 550); a domain whose first MX is down; a null-MX domain; and NXDOMAIN
  for everything else;
* fake remote mail hosts speaking aiosmtpd's SMTP protocol on those addresses
  and one shared port (the server's ``delivery.remote_port``);
* a mailtui config on free loopback ports, with short retry intervals so a
  deferred message bounces within a minute, a registered client ("office",
  127.0.0.1/32) and two mailboxes;
* a traffic generator: the office sending local and remote mail, a laptop
  logging in from 127.0.0.7, a stranger on 127.0.0.5 being refused, and a
  POP3 reader now and then.

Where the system only routes 127.0.0.1 (some BSDs and macOS), every fake host
shares 127.0.0.1 and behaves by recipient domain instead; the stranger and
the laptop then cannot be told apart by address and are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import poplib
import random
import shutil
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Awaitable, Callable

import aiosmtplib
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiosmtpd.smtp import SMTP as SMTPProtocol

from ...config import Config, from_mapping

DOMAIN = "demo.test"
PASSWORD = "demo password 1"
MAILBOXES = ("alice@demo.test", "bob@demo.test")
OFFICE = "127.0.0.1"        # registered as the client "office"
STRANGER = "127.0.0.5"      # not registered: refused
LAPTOP = "127.0.0.7"        # not registered either, but logs in as bob
ACCEPT_HOST, DEFER_HOST, REJECT_HOST, DOWN_HOST = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6"
TTL = 20

REPLIES = {
    "accept": None,
    "defer": "451 4.2.0 mailbox busy, try again later",
    "reject": "550 5.1.1 no such user here",
}
BEHAVIOUR_BY_DOMAIN = {"partner.test": "accept", "backup.test": "accept", "busy.test": "defer",
                       "strict.test": "reject"}


# -- DNS ------------------------------------------------------------------------------------

def demo_records(hosts: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """name -> type -> rdata texts; ``hosts`` maps accept/defer/reject/down to an address."""
    return {
        "partner.test": {"MX": ["10 mx.partner.test."]},
        "mx.partner.test": {"A": [hosts["accept"]]},
        "busy.test": {"MX": ["10 mx.busy.test."]},
        "mx.busy.test": {"A": [hosts["defer"]]},
        "strict.test": {"MX": ["10 mx.strict.test."]},
        "mx.strict.test": {"A": [hosts["reject"]]},
        "backup.test": {"MX": ["10 mx1.backup.test.", "20 mx2.backup.test."]},
        "mx1.backup.test": {"A": [hosts["down"]]},
        "mx2.backup.test": {"A": [hosts["accept"]]},
        "nullmx.test": {"MX": ["0 ."]},
        DOMAIN: {"MX": ["10 mail.demo.test."]},
        "mail.demo.test": {"A": ["127.0.0.1"]},
    }


class DemoZone:
    """Authoritative answers for ``.test``; REFUSED for any other name."""

    SOA = "ns.demo.test. hostmaster.demo.test. 1 3600 600 86400 30"

    def __init__(self, records: dict[str, dict[str, list[str]]], ttl: int = TTL):
        self.records = records
        self.ttl = ttl

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        if not (name == "test" or name.endswith(".test")):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        rtype = dns.rdatatype.to_text(question.rdtype)
        found = self.records.get(name)
        if found is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if found and found.get(rtype):
            response.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", rtype, *found[rtype]))
        else:  # NXDOMAIN or no data: the SOA says how long to remember that
            response.authority.append(dns.rrset.from_text("test.", self.ttl, "IN", "SOA", self.SOA))
        return response.to_wire()


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, zone: DemoZone):
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.zone.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DemoDns:
    """The zone served over UDP and TCP on one loopback port."""

    def __init__(self, zone: DemoZone, host: str = "127.0.0.1"):
        self.zone = zone
        self.host = host
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self) -> "DemoDns":
        loop = asyncio.get_running_loop()
        for _ in range(20):  # a port free for both UDP and TCP
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _DnsUdp(self.zone),
                                                               local_addr=(self.host, 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
                return self
            except OSError:
                self._udp.close()
        raise OSError("no free port for the demo DNS server")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = self.zone.answer(await reader.readexactly(size))
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)


# -- remote mail hosts ------------------------------------------------------------------------

class RemoteHost:
    """An aiosmtpd handler: accept, defer or reject every recipient (or decide by domain)."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour   # accept, defer, reject, or "by-domain"

    def reply_for(self, address: str) -> str | None:
        behaviour = self.behaviour
        if behaviour == "by-domain":
            behaviour = BEHAVIOUR_BY_DOMAIN.get(address.rpartition("@")[2].lower(), "accept")
        return REPLIES[behaviour]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.reply_for(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 queued as demo"


def can_bind(host: str, port: int = 0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(hosts: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A TCP port free on every one of ``hosts``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((hosts[0], 0))
            port = sock.getsockname()[1]
        if all(can_bind(host, port) for host in hosts):
            return port
    raise OSError("no free port on the loopback addresses")


# -- the world ---------------------------------------------------------------------------------

@dataclass
class DemoWorld:
    """Start with ``async with DemoWorld() as world``; ``world.config`` runs a server in it."""

    data_dir: Path | None = None
    interval: tuple[float, float] = (1.0, 2.0)   # seconds between two messages
    seed: int | None = None
    spread_out: bool = True                       # False: only 127.0.0.1 (set when the others fail)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._owns_dir = self.data_dir is None
        self.data_dir = Path(self.data_dir or tempfile.mkdtemp(prefix="mailtui-demo-"))
        self.rng = random.Random(self.seed)
        self.dns: DemoDns | None = None
        self.hosts: list[asyncio.AbstractServer] = []
        self.sent = 0
        self._tasks: list[asyncio.Task] = []
        self.shown_all = asyncio.Event()     # every kind of traffic sent once

    # -- set up --------------------------------------------------------------------------

    async def __aenter__(self) -> "DemoWorld":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        self.spread_out = self.spread_out and all(
            can_bind(h) for h in (ACCEPT_HOST, DEFER_HOST, REJECT_HOST, STRANGER, LAPTOP))
        if not self.spread_out:
            self.notes.append("127.0.0.2 and up cannot be used here: every demo host shares 127.0.0.1, "
                              "and no client is refused for its address")
        mx_hosts = (ACCEPT_HOST, DEFER_HOST, REJECT_HOST) if self.spread_out else (OFFICE,)
        self.remote_port = free_port(mx_hosts)
        loop = asyncio.get_running_loop()
        if self.spread_out:
            behaviours = {ACCEPT_HOST: "accept", DEFER_HOST: "defer", REJECT_HOST: "reject"}
            addresses = {"accept": ACCEPT_HOST, "defer": DEFER_HOST, "reject": REJECT_HOST, "down": DOWN_HOST}
        else:
            behaviours = {OFFICE: "by-domain"}
            addresses = {"accept": OFFICE, "defer": OFFICE, "reject": OFFICE, "down": OFFICE}
        for host, behaviour in behaviours.items():
            handler = RemoteHost(behaviour)
            self.hosts.append(await loop.create_server(
                lambda handler=handler, host=host: SMTPProtocol(handler, hostname=f"mx-{host}", timeout=30,
                                                                enable_SMTPUTF8=True),
                host, self.remote_port, reuse_address=True))
        self.dns = await DemoDns(DemoZone(demo_records(addresses))).start()
        self.smtp_port = free_port()
        self.pop3_port = free_port()
        self.config = self.make_config()
        await asyncio.to_thread(self.seed_registry)

    def make_config(self) -> Config:
        return from_mapping({
            "server": {"hostname": "mail.demo.test", "data_dir": str(self.data_dir), "local_domains": [DOMAIN]},
            "smtp": {"listen": [f"127.0.0.1:{self.smtp_port}"], "auth_failure_delay": 0.2},
            "pop3": {"listen": [f"127.0.0.1:{self.pop3_port}"], "auth_failure_delay": 0.2},
            "imap": {"listen": ["127.0.0.1:0"], "auth_failure_delay": 0.2},
            "dns": {"nameservers": [f"127.0.0.1:{self.dns.port}"], "timeout": 2.0},
            "delivery": {"remote_port": self.remote_port, "retry_intervals": [10, 20, 30], "max_attempts": 3,
                         "connect_timeout": 3.0, "command_timeout": 10.0},
            "logs": {"flush_interval": 1.0},
        }, source="mailtui demo")

    def seed_registry(self) -> None:
        """Register the office and the mailboxes before the server starts."""
        from ...server.core import open_state

        store, registry, maildirs, _queue, _ = open_state(self.config)
        try:
            registry.add_client("office", [f"{OFFICE}/32"], "the demo's registered client")
            for address in MAILBOXES:
                registry.add_mailbox(address, PASSWORD)
                maildirs.ensure(address)
        finally:
            store.close()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self.hosts:
            server.close()
        for server in self.hosts:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)
        if self.dns is not None:
            await self.dns.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def hint(self) -> str:
        """One line for a newcomer."""
        if self.spread_out:
            return "Demo: 127.0.0.5 is refused. Select one of its sessions and press r to register it."
        return "Demo: every panel fills within seconds. Press ? for the keys."

    def describe(self) -> str:
        hosts = "127.0.0.2 (accepts), .3 (defers) and .4 (rejects)" if self.spread_out else "127.0.0.1"
        clients = "the office 127.0.0.1 is registered, 127.0.0.5 is not" if self.spread_out \
            else "the office 127.0.0.1 is registered"
        return (f"Demo world: DNS on 127.0.0.1:{self.dns.port}, remote mail hosts on {hosts} port "
                f"{self.remote_port}; {clients}; data in {self.data_dir} (removed on exit).")

    # -- traffic -------------------------------------------------------------------------

    def start_traffic(self, ready: Callable[[], Awaitable[object]] | None = None) -> asyncio.Task:
        task = asyncio.create_task(self.traffic(ready), name="demo-traffic")
        self._tasks.append(task)
        return task

    async def traffic(self, ready: Callable[[], Awaitable[object]] | None = None) -> None:
        """Send a message every ``interval`` seconds until cancelled; every kind once first."""
        if ready is not None:
            await ready()
        else:
            await self._wait_listening()
        weights = {"local": 4, "partner": 5, "busy": 2, "stranger": 3, "strict": 1, "laptop": 2, "backup": 2,
                   "nowhere": 1, "nullmx": 1, "pop3": 2}
        if not self.spread_out:  # without their own addresses, these two cannot be told from the office
            del weights["stranger"], weights["laptop"]
        for kind in weights:     # every kind once, quickly: each panel has something to show
            await self._send_quietly(kind)
            await asyncio.sleep(0.2)
        self.shown_all.set()
        while True:
            await self._send_quietly(self.rng.choices(list(weights), weights=list(weights.values()))[0])
            await asyncio.sleep(self.rng.uniform(*self.interval))

    async def _send_quietly(self, kind: str) -> None:
        with contextlib.suppress(Exception):  # a demo client's trouble is the demo's business
            await self.send(kind)

    async def _wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.smtp_port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    def _message(self, sender: str, recipient: str, subject: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=DOMAIN)
        msg.set_content(f"{subject}\n\nThis message was sent by the mailtui demo. Nothing leaves this machine.\n")
        return msg

    async def send(self, kind: str) -> None:
        n = self.sent = self.sent + 1
        if kind == "pop3":
            await asyncio.to_thread(self._fetch, self.rng.choice(MAILBOXES))
            return
        sender = self.rng.choice(MAILBOXES)
        recipient, source, login, helo = {
            "local": (self.rng.choice(MAILBOXES), OFFICE, "", "office.demo.test"),
            "partner": (f"sam{n}@partner.test", OFFICE, "", "office.demo.test"),
            "busy": (f"kim{n}@busy.test", OFFICE, "", "office.demo.test"),
            "strict": (f"lee{n}@strict.test", OFFICE, "", "office.demo.test"),
            "backup": (f"max{n}@backup.test", OFFICE, "", "office.demo.test"),
            "nowhere": (f"pat{n}@nowhere.test", OFFICE, "", "office.demo.test"),
            "nullmx": (f"ana{n}@nullmx.test", OFFICE, "", "office.demo.test"),
            "laptop": (f"joe{n}@partner.test", LAPTOP, "bob@demo.test", "laptop.example"),
            "stranger": (f"someone{n}@partner.test", STRANGER, "", "stranger.example"),
        }[kind]
        if login:
            sender = login
        if kind == "stranger":
            sender = f"spam{n}@stranger.example"
        message = self._message(sender, recipient, f"Demo message {n} ({kind})")
        tls = bool(login) or (kind != "stranger" and self.rng.random() < 0.4)
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, local_hostname=helo,
                                 source_address=(source, 0) if self.spread_out else None,
                                 start_tls=tls, validate_certs=False, timeout=10)
        try:
            await client.connect()
            if login:
                await client.login(login, PASSWORD)
            await client.send_message(message, sender=sender, recipients=[recipient])
        except aiosmtplib.SMTPException:
            pass   # refusals are part of the show
        finally:
            with contextlib.suppress(Exception):
                await client.quit()

    def _fetch(self, mailbox: str) -> None:
        """A POP3 reader: STLS, log in, retrieve and delete a few messages."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        pop = poplib.POP3("127.0.0.1", self.pop3_port, timeout=10)
        try:
            pop.stls(context)
            pop.user(mailbox)
            pop.pass_(PASSWORD)
            count, _ = pop.stat()
            for number in range(1, min(count, 5) + 1):
                pop.retr(number)
                pop.dele(number)
        finally:
            with contextlib.suppress(Exception):
                pop.quit()
