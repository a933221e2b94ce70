"""Sender-authentication loads: DKIM signing on relay, SPF+DKIM+DMARC checks in the MX role.

    python bench/run.py --auth [--quick] [--rounds R] [--messages N]

Two comparisons; every variant runs once a round (so the two halves of a
comparison see the same machine), each on a fresh data_dir, and the ratio
is of the medians:

* ``relay-dkim`` / ``relay-plain``: smtp-source (10 sessions, 4 KiB, one
  connection a message) from the registered network as ``bench@example.org``
  - example.org is a local domain here - to ``rcpt@sink.test``: MX from
  dnsmasq, then smtp-sink on 127.0.0.2; done when the sink has every message
  and the spool is empty. The only difference: ``[dkim] sign`` (every message
  signed once, when it enters the queue). Target: >= 0.85.
* ``mx-checks`` / ``mx-plain``: mailtui in its MX role
  (``accept_unregistered_for_local``, no registered network), 10 sessions
  from 127.0.0.1 of an asyncio client (one connection a message, commands
  pipelined) sending one 4 KiB message DKIM-signed by sender.test (2048-bit
  RSA, relaxed/relaxed) as ``alice@sender.test`` to ``rcpt@localhost``.
  dnsmasq publishes sender.test's SPF (``ip4:127.0.0.1``), DKIM key and
  DMARC ``p=reject`` with a TTL of an hour: the first messages' questions
  go to dnsmasq, the rest are answered from mailtui's cache, as for a sender
  that writes often. The only difference: ``[auth] check_inbound``.
  Target: >= 0.7. ``mx-checks-ttl0`` is the worst case beside it: TTL 0,
  nothing cached, three DNS questions over UDP for every message.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from common import log, settle_disk
from loads import SENDER, Dnsmasq, Sample, Sink, maildir_reached, measure_smtp
from targets import MAILBOX, PASSWORD, SINK_DOMAIN, MailtuiTarget, mailtui_cli

KiB = 1024
MX_SENDER = "alice@sender.test"
SELECTOR = "bench"


MX_ROLE = "[policy]\naccept_unregistered_for_local = true\n[auth]\ncheck_inbound = {}\n"


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    kind: str                 # relay | mx
    toml: str                 # appended to the target's config
    baseline: str = ""        # the variant this one is a ratio of
    target: float = 0.0       # the target for that ratio (0: none)
    ttl: int = 3600           # TTL of sender.test's records (mx)


VARIANTS = (
    Variant("relay-plain", "relay 10×4 KiB, not signed", "relay", "[dkim]\nsign = false\n"),
    Variant("relay-dkim", "relay 10×4 KiB, DKIM-signed at intake", "relay", "[dkim]\nsign = true\n",
            "relay-plain", 0.85),
    Variant("mx-plain", "MX intake 10×4 KiB, no checks", "mx", MX_ROLE.format("false")),
    Variant("mx-checks", "MX intake 10×4 KiB, SPF+DKIM+DMARC", "mx", MX_ROLE.format("true"), "mx-plain", 0.7),
    Variant("mx-checks-ttl0", "  the same, records with TTL 0 (no cache)", "mx", MX_ROLE.format("true"),
            "mx-plain", ttl=0),
)


def selected(only: str | None) -> list[Variant]:
    """The variants ``--only`` names (comma-separated keys), each with its baseline; all by default."""
    if not only:
        return list(VARIANTS)
    keys = set(only.split(","))
    keys |= {v.baseline for v in VARIANTS if v.key in keys and v.baseline}
    return [v for v in VARIANTS if v.key in keys]


class AuthTarget(MailtuiTarget):
    """``mailtui serve`` with more local domains and extra config sections."""

    def __init__(self, workdir: Path, registry_state: Path, *, local_domains: list[str], toml: str, **kw):
        super().__init__(workdir, registry_state, **kw)
        text = self.config.read_text()
        plain = 'local_domains = ["localhost"]\n'
        assert plain in text, "targets.MailtuiTarget's config changed: update bench/authloads.py"
        domains = ", ".join(f'"{d}"' for d in local_domains)
        self.config.write_text(text.replace(plain, f"local_domains = [{domains}]\n") + toml)


# -- the MX role's sender: a signed message, its DNS, a client --------------------------------------

def signed_message(size: int) -> tuple[bytes, str]:
    """A message from sender.test of about ``size`` bytes, DKIM-signed; and its key's TXT record."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    head = (f"From: Alice <{MX_SENDER}>\r\nTo: <{MAILBOX}>\r\nSubject: bench\r\n"
            "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@sender.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode()
    line = b"x" * 70 + b"\r\n"
    raw = head + line * max(1, (size - len(head)) // len(line))
    signature = dkim.sign(raw, SELECTOR.encode(), b"sender.test", pem, canonicalize=(b"relaxed", b"relaxed"))
    return signature + raw, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def sender_dns(key_record: str, ttl: int) -> Dnsmasq:
    """dnsmasq with sender.test's SPF, DKIM and DMARC records (TTL 0: mailtui caches nothing)."""
    return Dnsmasq(ttl=ttl, extra=(
        "--txt-record=sender.test,v=spf1 ip4:127.0.0.1 -all",
        f"--txt-record={SELECTOR}._domainkey.sender.test,{key_record}",
        "--txt-record=_dmarc.sender.test,v=DMARC1; p=reject")).start()


async def _reply(reader: asyncio.StreamReader, code: bytes) -> None:
    while True:
        line = await reader.readline()
        if not line.startswith(code):
            raise RuntimeError(f"expected {code.decode()}, got {line[:200]!r}")
        if line[3:4] != b"-":
            return


async def _session(port: int, message: bytes, count: int) -> None:
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _reply(reader, b"220")
            writer.write(b"EHLO client.bench.test\r\n")
            await _reply(reader, b"250")
            writer.write(f"MAIL FROM:<{MX_SENDER}>\r\nRCPT TO:<{MAILBOX}>\r\nDATA\r\n".encode())
            for code in (b"250", b"250", b"354"):
                await _reply(reader, code)
            writer.write(message + b".\r\nQUIT\r\n")
            await _reply(reader, b"250")
            await _reply(reader, b"221")
        finally:
            writer.close()


async def send_all(port: int, message: bytes, messages: int, sessions: int) -> None:
    share, extra = divmod(messages, sessions)
    await asyncio.gather(*(_session(port, message, share + (i < extra)) for i in range(sessions)))


def measure_client(target: AuthTarget, message: bytes, *, messages: int, sessions: int,
                   timeout: float) -> Sample:
    """As ``loads.measure_smtp``, with the asyncio client instead of smtp-source."""
    cpu0, loop0, t0 = target.cpu(), target.loop_cpu(), time.perf_counter()
    error = ""
    try:
        asyncio.run(asyncio.wait_for(send_all(target.smtp_port, message, messages, sessions), timeout))
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
        error = f"client: {exc!r}"[:300]
    done = maildir_reached(target.maildir_new, messages)
    while not error and not done():
        if time.perf_counter() - t0 > timeout:
            error = "timeout waiting for delivery"
        time.sleep(0.01)
    t1 = time.perf_counter()
    return Sample(messages, t1 - t0, target.cpu() - cpu0, target.peak_rss_kib(), error,
                  {"loop_busy": (target.loop_cpu() - loop0) / (t1 - t0)})


# -- running the variants ---------------------------------------------------------------------------

def mx_registry_template(folder: Path) -> Path:
    """The mailbox only, no registered network: every session is from outside."""
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "template.toml"
    config.write_text(f'[server]\nhostname = "mail.bench.test"\ndata_dir = "{data}"\nlocal_domains = ["localhost"]\n')
    mailtui_cli(config, "mailbox", "add", MAILBOX, "--password-stdin", stdin=PASSWORD + "\n")
    return data / "state.json"


class AuthBench:
    def __init__(self, args, base: Path):
        from targets import make_registry_template
        self.args = args
        self.base = base
        self.relay_state = make_registry_template(base / "relay-template")
        self.mx_state = mx_registry_template(base / "mx-template")
        self.message, key_record = signed_message(4 * KiB)
        assert b"\r\n." not in self.message               # sent as it is: nothing to dot-stuff
        self.dns = {"relay": Dnsmasq().start()}
        for ttl in sorted({v.ttl for v in VARIANTS if v.kind == "mx"}):
            self.dns[ttl] = sender_dns(key_record, ttl)
        self.samples: dict[str, list[Sample]] = {}

    def close(self) -> None:
        for server in self.dns.values():
            server.stop()

    def run_one(self, variant: Variant, rnd: int) -> Sample:
        n = self.args.messages
        wd = self.base / f"{variant.key}-r{rnd}"
        wd.mkdir(parents=True)
        relay = variant.kind == "relay"
        sink = Sink(wd).start() if relay else None
        target = AuthTarget(wd / "server", self.relay_state if relay else self.mx_state,
                            local_domains=["localhost", SENDER.rpartition("@")[2]] if relay else ["localhost"],
                            toml=variant.toml, dns_port=self.dns["relay" if relay else variant.ttl].port,
                            sink_port=sink.port if sink else None, loop=self.args.loop)
        try:
            settle_disk()
            target.start(timeout=300)
            time.sleep(0.5)
            timeout = max(180.0, n / 15)
            if relay:
                sample = measure_smtp(target, messages=n, sessions=10, size=4 * KiB, rcpt=f"rcpt@{SINK_DOMAIN}",
                                      done=lambda: sink.count() >= n and target.queued() == 0,
                                      timeout=timeout, reuse=self.args.reuse, poll=0.02)
            else:
                sample = measure_client(target, self.message, messages=n, sessions=10, timeout=timeout)
            if sample.error:
                sample.error += " | " + target.error_output()[-300:].replace("\n", " ")
        finally:
            target.stop()
            if sink is not None:
                sink.stop()
        return sample

    def run(self, variants: list[Variant]) -> None:
        """Round by round, every variant once a round: a pair's two halves see the same machine."""
        for rnd in range(1, self.args.rounds + 1):
            for variant in variants:
                sample = self.run_one(variant, rnd)
                self.samples.setdefault(variant.key, []).append(sample)
                log(f"{variant.key} round {rnd}: " + (f"ERROR {sample.error}" if sample.error else
                    f"{sample.rate:,.0f} msg/s, {sample.cpu_ms:.2f} ms CPU/msg, "
                    f"loop {sample.extra['loop_busy']:.0%} busy"))


def _median(samples: list[Sample]) -> dict | None:
    good = [s for s in samples if not s.error]
    if not good:
        return None
    rate = statistics.median(s.rate for s in good)
    return {"rate": rate, "cpu_ms": statistics.median(s.cpu_ms for s in good),
            "loop": statistics.median(s.extra["loop_busy"] for s in good),
            "spread": f"±{(max(s.rate for s in good) - min(s.rate for s in good)) / rate / 2:.0%}"
            if len(good) > 1 else "1 run"}


def table(bench: AuthBench, variants: list[Variant]):
    from rich.table import Table
    out = Table(title="mailtui sender-authentication benchmark", title_justify="left")
    for name in ("load", "msg/s", "CPU ms/msg", "loop busy", "spread", "ratio", "target"):
        out.add_column(name, justify="left" if name == "load" else "right")
    medians = {v.key: _median(bench.samples.get(v.key, [])) for v in variants}
    for variant in variants:
        row, base = medians[variant.key], medians.get(variant.baseline)
        if row is None:
            out.add_row(variant.label, "[red]error[/red]")
            continue
        ratio = target = ""
        if base is not None:
            value = row["rate"] / base["rate"]
            ratio = f"{value:.2f}× {variant.baseline}"
            if variant.target:
                ok = value >= variant.target
                target = f"[{'green' if ok else 'red'}]≥ {variant.target:.2f}× {'✓' if ok else '✗'}[/]"
        out.add_row(variant.label, f"{row['rate']:,.0f}", f"{row['cpu_ms']:.2f}", f"{row['loop']:.0%}",
                    row["spread"], ratio, target)
    return out


def main(args, base: Path) -> int:
    """Run the variants (``--only relay-dkim,mx-checks`` picks some), print the table; 1 if any sample failed."""
    import os

    from rich.console import Console
    variants = selected(args.only)
    start = os.getloadavg()[0]
    bench = AuthBench(args, base)
    try:
        bench.run(variants)
    except KeyboardInterrupt:
        log("interrupted; printing what was measured")
    finally:
        bench.close()
        if not args.keep and not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    console = Console(width=200)
    console.print(table(bench, variants))
    console.print(f"  {os.cpu_count()} cores; {args.messages:,} messages a load, median of {args.rounds} round(s), "
                  f"every variant once a round; load average (1 min) {start:.2f} at start, "
                  f"{os.getloadavg()[0]:.2f} at end; code {args.code_state}.", style="dim", markup=False)
    errors = [f"{k}: {s.error}" for k, v in bench.samples.items() for s in v if s.error]
    for error in errors:
        console.print(f"  {error}", style="red", markup=False)
    return 1 if errors else 0
