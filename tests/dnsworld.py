"""A small Internet on 127.0.0.0/8 for delivery tests: real DNS, fake mail hosts.

* :class:`DnsWorld` runs ``dnsmasq`` on 127.0.0.1 and a free port with the
  records given: MX, A/AAAA (with their PTR), TXT, PTR, CNAME, SRV; all
  names under ``.test`` (and ``127.in-addr.arpa``) not listed answer
  NXDOMAIN, and names under a ``silent`` zone are forwarded to a socket that
  never answers (a DNS timeout);
* :class:`FakeMX` serves aiosmtpd's SMTP protocol on one loopback address
  (127.0.0.2, 127.0.0.3 ...), accepting, deferring or rejecting recipients
  by their local part, and records what it received (and counts connections);
  its STARTTLS uses a self-signed certificate or the server context given;
* :func:`busy_server` answers every connection with a 4xx greeting.

Nothing here touches anything outside the loopback network.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import dns.exception
import dns.message
import dns.query
import dns.rcode
from aiosmtpd.smtp import SMTP as SMTPProtocol

from mailtui.config import Endpoint
from mailtui.events import Event, EventBus
from mailtui.server.tls import make_self_signed

DNSMASQ = shutil.which("dnsmasq") or next(
    (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if Path(p).exists()), None)

# The standard world of the delivery tests.
MX_HOST_1 = "127.0.0.2"      # mx1.mx.test, preference 10 (usually down)
MX_HOST_2 = "127.0.0.3"      # mx2.mx.test, preference 20
A_ONLY_HOST = "127.0.0.4"    # aonly.test: no MX, an A record
STANDARD_MX = (("mx.test", "mx1.mx.test", 10), ("mx.test", "mx2.mx.test", 20))
STANDARD_HOSTS = (("mx1.mx.test", MX_HOST_1), ("mx2.mx.test", MX_HOST_2),
                  ("aonly.test", A_ONLY_HOST))
STANDARD_NULL_MX = ("nullmx.test",)


# -- ports -------------------------------------------------------------------

def port_is_free(port: int, hosts: tuple[str, ...] = ("127.0.0.1",), udp: bool = False) -> bool:
    for host in hosts:
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return True


def free_port(hosts: tuple[str, ...] = ("127.0.0.1",), udp: bool = False) -> int:
    """A port free (TCP, and UDP if asked) on every one of ``hosts``."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if port_is_free(port, hosts, udp):
            return port
    raise RuntimeError("no free port found")


# -- DNS ---------------------------------------------------------------------

TxtValue = str | tuple[str, ...]   # one TXT record: a string (dnsmasq splits it at 255) or its parts


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class DnsWorld:
    """dnsmasq answering for ``.test`` (and only that); stop() when done.

    ``hosts`` entries are ``(name, address)`` (IPv4 or IPv6; a name listed
    twice gets both); each also answers the address's PTR with the name.
    ``txt`` entries are ``(name, value)``, one TXT record each; ``ptr``
    ``(reverse name, target)``; ``cname`` ``(alias, target)``; ``srv``
    ``(_service._proto.domain, target, port, priority, weight)``.
    """

    mx: tuple[tuple[str, str, int], ...] = STANDARD_MX
    hosts: tuple[tuple[str, str], ...] = STANDARD_HOSTS
    null_mx: tuple[str, ...] = STANDARD_NULL_MX
    txt: tuple[tuple[str, TxtValue], ...] = ()
    ptr: tuple[tuple[str, str], ...] = ()
    cname: tuple[tuple[str, str], ...] = ()
    srv: tuple[tuple[str, str, int, int, int], ...] = ()
    silent: tuple[str, ...] = ()
    zone: str = "test"
    ttl: int = 60
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    def args(self) -> list[str]:
        args = [DNSMASQ or "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                f"--conf-file={self._conf_file()}", "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--port={self.port}", f"--local=/{self.zone}/", "--local=/127.in-addr.arpa/",
                f"--local-ttl={self.ttl}", "--cache-size=0", "--pid-file="]
        args += [f"--mx-host={domain},{host},{pref}" for domain, host, pref in self.mx]
        args += [f"--mx-host={domain},.,0" for domain in self.null_mx]
        args += [f"--host-record={name},{address}" for name, address in self.hosts]
        args += [f"--txt-record={name},{value}" for name, value in self._plain_txt()]
        args += [f"--ptr-record={name},{target}" for name, target in self.ptr]
        args += [f"--cname={alias},{target}" for alias, target in self.cname]
        args += [f"--srv-host={name},{target},{port},{prio},{weight}"
                 for name, target, port, prio, weight in self.srv]
        if self.silent:
            args += [f"--server=/{zone}/127.0.0.1#{self._silent_port}" for zone in self.silent]
        return args

    def _plain_txt(self) -> list[tuple[str, str]]:
        """TXT records of one string with no quote, comma or backslash: these go on the command line,
        which (unlike dnsmasq's config file) takes lines of any length."""
        return [(name, value) for name, value in self.txt
                if isinstance(value, str) and not any(c in value for c in ',"\\')]

    def _conf_file(self) -> str:
        """Other TXT records go in a config file: only there does dnsmasq read quoted strings."""
        if getattr(self, "_conf", None) is None:
            lines = []
            plain = self._plain_txt()
            for name, value in self.txt:
                if (name, value) in plain:
                    continue
                parts = (value,) if isinstance(value, str) else value
                lines.append(f"txt-record={name}," + ",".join(_quoted(p) for p in parts))
            self._conf = tempfile.NamedTemporaryFile("w", prefix="dnsworld-", suffix=".conf")
            self._conf.write("\n".join(lines) + "\n")
            self._conf.flush()
        return self._conf.name

    def start(self, timeout: float = 5.0) -> "DnsWorld":
        if DNSMASQ is None:
            raise RuntimeError("dnsmasq is not installed")
        last = ""
        if self.silent and getattr(self, "_silent_socket", None) is None:
            self._silent_socket = silent_udp_socket()
            self._silent_port = self._silent_socket.getsockname()[1]
        for _ in range(3):  # the free port may be taken before dnsmasq binds it
            self.port = free_port(udp=True)
            self._log = tempfile.TemporaryFile()
            self.process = subprocess.Popen(self.args(), stdout=self._log, stderr=self._log)
            if self._wait_ready(timeout):
                return self
            self.stop()
            last = self.output()
            self._log.close()
        raise RuntimeError(f"dnsmasq did not start: {last}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        query = dns.message.make_query(f"probe.{self.zone}", "A")
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
            except (OSError, dns.exception.Timeout):
                time.sleep(0.02)
                continue
            return response.rcode() == dns.rcode.NXDOMAIN
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def output(self) -> str:
        """What dnsmasq has written so far (for failure messages)."""
        log = getattr(self, "_log", None)
        if log is None or log.closed:
            return ""
        log.seek(0)
        return log.read().decode(errors="replace")

    def close(self) -> None:
        self.stop()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
        silent = getattr(self, "_silent_socket", None)
        if silent is not None:
            silent.close()
            self._silent_socket = None
        conf = getattr(self, "_conf", None)
        if conf is not None:
            conf.close()
            self._conf = None

    def __enter__(self) -> "DnsWorld":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def silent_udp_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound UDP socket nobody reads: a nameserver that never answers (close it when done)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


# -- fake mail hosts ---------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool
    server: str


DEFAULT_RULES = {
    "bad": "550 5.1.1 no such user",
    "later": "451 4.2.0 mailbox busy, try again later",
}


class Recorder:
    """An aiosmtpd handler: rules by local-part prefix (for MAIL FROM and RCPT TO),
    messages recorded, DATA answered with ``data_reply``."""

    def __init__(self, name: str, rules: dict[str, str] | None = None,
                 data_reply: str = "250 2.0.0 queued", data_delay: float = 0.0):
        self.name = name
        self.rules = DEFAULT_RULES if rules is None else rules
        self.data_reply = data_reply
        self.data_delay = data_delay
        self.hold: asyncio.Event | None = None   # when set up, DATA waits for it
        self.messages: list[Received] = []
        self.sessions = 0
        self.concurrent = 0
        self.max_concurrent = 0

    def reply_for(self, address: str) -> str | None:
        local = address.partition("@")[0].lower()
        for prefix, reply in self.rules.items():
            if local.startswith(prefix):
                return reply
        return None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.reply_for(address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.reply_for(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
            if self.hold is not None:
                await asyncio.wait_for(self.hold.wait(), 10)
            self.messages.append(Received(
                mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.original_content or envelope.content,
                mail_options=list(envelope.mail_options), tls=session.ssl is not None,
                server=self.name))
        finally:
            self.concurrent -= 1
        return self.data_reply


class FakeMX:
    """An SMTP server on ``host:port`` speaking aiosmtpd's protocol.

    ``tls``: offer STARTTLS, with a self-signed certificate (True) or this
    server context (say, one of tests/tlsworld.py's ``TestCA``).
    """

    def __init__(self, host: str, port: int, *, name: str | None = None,
                 rules: dict[str, str] | None = None, smtputf8: bool = True,
                 tls: bool | ssl.SSLContext = False, size_limit: int = 33554432, data_delay: float = 0.0):
        self.host = host
        self.port = port
        self.handler = Recorder(name or host, rules, data_delay=data_delay)
        self.smtputf8 = smtputf8
        self.tls_context = tls if isinstance(tls, ssl.SSLContext) else server_tls_context() if tls else None
        self.size_limit = size_limit
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def _protocol(self) -> SMTPProtocol:
        self.connections += 1
        return SMTPProtocol(self.handler, hostname=self.handler.name,
                            enable_SMTPUTF8=self.smtputf8, tls_context=self.tls_context,
                            data_size_limit=self.size_limit, timeout=10,
                            loop=asyncio.get_running_loop())

    async def start(self) -> "FakeMX":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, self.host, self.port,
                                               reuse_address=True)
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def __aenter__(self) -> "FakeMX":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def busy_server(host: str, port: int, greeting: bytes = b"421 4.3.2 too busy, come back later\r\n"):
    """A server that greets with ``greeting`` and hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, host, port, reuse_address=True)
    try:
        yield server
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


@lru_cache(maxsize=1)
def _self_signed_files() -> tuple[str, str]:
    cert, key = make_self_signed("mx.test")
    folder = Path(tempfile.mkdtemp(prefix="mailtui-tls-"))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return str(cert_path), str(key_path)


def server_tls_context() -> ssl.SSLContext:
    cert, key = _self_signed_files()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# -- events ------------------------------------------------------------------

class EventLog:
    """Every event published on a bus, and a way to wait for one."""

    def __init__(self, bus: EventBus):
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        bus.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate: Callable[[Event], bool], *, count: int = 1,
                       timeout: float = 10.0) -> list[Event]:
        """Wait until ``count`` events match; returns them."""
        async def wait() -> list[Event]:
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(wait(), timeout)
