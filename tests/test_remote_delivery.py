"""Remote delivery: resolver, retry rules, courier, DSNs and the delivery agent.

Real DNS (dnsmasq on 127.0.0.1) and real SMTP servers (aiosmtpd on 127.0.0.2
and up); see tests/dnsworld.py for the world they make up.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dnsworld import (
    A_ONLY_HOST,
    MX_HOST_1,
    MX_HOST_2,
    EventLog,
    FakeMX,
    busy_server,
    free_port,
)

from mailtui.config import Config, Endpoint
from mailtui.dns.resolver import (
    MailHost,
    PermanentDnsError,
    Resolver,
    TemporaryDnsError,
    order_mx,
    parse_literal,
)
from mailtui.events import (
    Bounced,
    Deferred,
    DeliveredRemote,
    DeliveryAttempt,
    DnsLookup,
    EventBus,
    Notice,
)
from mailtui.send import courier, retry
from mailtui.send.delivery import DeliveryAgent, without_self
from mailtui.send.dsn import build_dsn, xtext_address
from mailtui.store.db import Store
from mailtui.store.queue import Queue, QueueItem, RecipientState
from mailtui.wire import header_section

pytestmark = pytest.mark.timeout(30)

BODY = (b"From: Alice <alice@local.test>\n"
        b"To: Bob <bob@mx.test>\n"
        b"Subject: remote delivery\n"
        b"Message-ID: <1@local.test>\n"
        b"\n"
        b"Hello Bob.\n"
        b".a line starting with a dot\n"
        b".\n"
        b"bye\n")
WIRE_BODY = BODY.replace(b"\n", b"\r\n")
LOOPBACKS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


# -- fixtures ----------------------------------------------------------------

@pytest.fixture
def smtp_port() -> int:
    return free_port(LOOPBACKS)


class Dsns:
    """A ``submit`` that records DSNs (or fails, when told to)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.error: Exception | None = None

    async def submit(self, sender: str, recipients: list[str], body: bytes) -> str:
        if self.error is not None:
            raise self.error
        self.sent.append((sender, recipients, body))
        return f"DSN{len(self.sent)}"

    def parsed(self, index: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.sent[index][2], policy=email.policy.default)


def make_config(tmp_path: Path, nameservers: tuple[Endpoint, ...], smtp_port: int,
                dns_timeout: float = 1.0, **delivery) -> Config:
    settings = {"remote_port": smtp_port, "retry_intervals": (0.2, 0.2), "max_attempts": 3,
                "retry_jitter": 0.0, "connect_timeout": 1.0, "command_timeout": 3.0,
                "max_concurrency": 4, "max_per_domain": 2} | delivery
    # dataclasses.replace, not config.with_overrides: these are typed values, not TOML.
    base = Config()
    return replace(
        base,
        server=replace(base.server, hostname="mail.local.test", data_dir=tmp_path,
                       local_domains=("local.test",)),
        dns=replace(base.dns, nameservers=nameservers, timeout=dns_timeout),
        delivery=replace(base.delivery, **settings))


class Harness:
    """Queue + resolver + agent over one spool directory, the agent running."""

    def __init__(self, tmp_path: Path, config: Config, dsns: Dsns | None = None):
        self.tmp_path = tmp_path
        self.config = config
        self.bus = EventBus()
        self.events = EventLog(self.bus)
        self.store = Store(tmp_path / "db")
        self.queue = Queue(tmp_path / "spool", store=self.store)
        self.queue.load()
        self.resolver = Resolver(config.dns.nameservers, config.dns.timeout, self.bus, self.store)
        self.dsns = dsns or Dsns()
        self.agent = DeliveryAgent(config=config, queue=self.queue, resolver=self.resolver,
                                   bus=self.bus, submit=self.dsns.submit, store=self.store,
                                   rng=random.Random(7), stop_grace=1.0)
        self.task: asyncio.Task | None = None

    def start(self) -> "Harness":
        self.task = asyncio.create_task(self.agent.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            await asyncio.wait_for(self.agent.stop(), 5)
            await asyncio.wait_for(self.task, 5)
            self.task = None

    async def enqueue(self, recipients: list[str], sender: str = "alice@local.test",
                      body: bytes = BODY, **kw) -> QueueItem:
        return await self.queue.enqueue(sender, recipients, body, **kw)

    async def wait_settled(self, msg_id: str, timeout: float = 10.0) -> None:
        """Wait until the message has left the queue and its spool files are gone."""
        files = [self.queue.body_path(msg_id), self.queue.body_path(msg_id).with_suffix(".json")]

        async def gone() -> None:
            while self.queue.get(msg_id) is not None or any(f.exists() for f in files):
                await asyncio.sleep(0.02)
        await asyncio.wait_for(gone(), timeout)


@pytest.fixture
async def harnesses():
    made: list[Harness] = []

    def make(tmp_path: Path, config: Config, dsns: Dsns | None = None) -> Harness:
        h = Harness(tmp_path, config, dsns)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.stop()


async def until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def spool_files(tmp_path: Path) -> list[str]:
    # dot-files are atomic_write's temporaries of a save in progress
    return sorted(p.name for p in (tmp_path / "spool").iterdir() if p.is_file() and not p.name.startswith("."))


# -- pure rules --------------------------------------------------------------

@pytest.mark.parametrize("records, expected_groups", [
    ([], []),
    ([(10, "a.test.")], [[(10, "a.test")]]),
    ([(20, "b.test"), (10, "A.TEST.")], [[(10, "a.test")], [(20, "b.test")]]),
    ([(10, "a.test"), (10, "b.test"), (5, "c.test")],
     [[(5, "c.test")], [(10, "a.test"), (10, "b.test")]]),
    ([(10, "a.test"), (30, "a.test"), (20, "b.test")], [[(10, "a.test")], [(20, "b.test")]]),
    ([(0, "x.test"), (65535, "y.test")], [[(0, "x.test")], [(65535, "y.test")]]),
])
def test_order_mx(records, expected_groups):
    for seed in range(5):
        ordered = order_mx(records, random.Random(seed))
        position = 0
        for group in expected_groups:
            chunk = ordered[position:position + len(group)]
            assert sorted(chunk) == sorted(group)
            position += len(group)
        assert position == len(ordered)


def test_order_mx_shuffles_equal_preferences():
    records = [(10, f"mx{i}.test") for i in range(4)] + [(5, "first.test")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(40)}
    assert len(orders) > 1
    assert all(order[0] == (5, "first.test") for order in orders)


@pytest.mark.parametrize("attempts, intervals, expected", [
    (1, (300, 900, 1800), 300),
    (2, (300, 900, 1800), 900),
    (3, (300, 900, 1800), 1800),
    (4, (300, 900, 1800), 1800),
    (99, (300, 900, 1800), 1800),
    (0, (300, 900), 300),
    (1, (0.2,), 0.2),
])
def test_next_delay(attempts, intervals, expected):
    assert retry.next_delay(attempts, intervals, 0.0) == pytest.approx(expected)


@pytest.mark.parametrize("jitter", [0.1, 0.5])
def test_next_delay_jitter_stays_in_bounds(jitter):
    rng = random.Random(1)
    delays = [retry.next_delay(1, (100,), jitter, rng) for _ in range(200)]
    assert all(100 * (1 - jitter) <= d <= 100 * (1 + jitter) for d in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize("attempts, age, max_attempts, max_lifetime, words", [
    (1, 10, 3, 3600, None),
    (2, 10, 3, 3600, None),
    (3, 10, 3, 3600, "gave up after 3 delivery attempts"),
    (1, 10, 1, 3600, "gave up after 1 delivery attempt"),
    (2, 3600, 35, 3600, "in the queue for 1 hour"),
    (2, 5 * 86400 + 60, 35, 5 * 86400, "5 days 1 minute"),
    (2, 3599, 35, 3600, None),
])
def test_give_up(attempts, age, max_attempts, max_lifetime, words):
    now = 1_000_000.0
    reason = retry.give_up(attempts, now - age, now, max_attempts, max_lifetime)
    if words is None:
        assert reason is None
    else:
        assert words in reason


@pytest.mark.parametrize("domain, expected", [
    ("example.test", None),
    ("[127.0.0.1]", "127.0.0.1"),
    ("[IPv6:::1]", "::1"),
    ("[ipv6:2001:db8::1]", "2001:db8::1"),
])
def test_parse_literal(domain, expected):
    assert parse_literal(domain) == expected


@pytest.mark.parametrize("domain", ["[::1]", "[IPv6:127.0.0.1]", "[300.1.1.1]", "[x]"])
def test_parse_literal_rejects(domain):
    with pytest.raises(PermanentDnsError) as info:
        parse_literal(domain)
    assert info.value.status == "5.1.2"


def test_without_self():
    hosts = [MailHost("mx1.test", 10, ["127.0.0.2"]), MailHost("mail.local.test", 20, ["127.0.0.9"]),
             MailHost("mx3.test", 30, ["127.0.0.3"])]
    assert [h.name for h in without_self("d.test", hosts, "MAIL.local.test")] == ["mx1.test"]
    assert without_self("d.test", hosts, "other.test") == hosts
    with pytest.raises(PermanentDnsError) as info:
        without_self("d.test", hosts[1:], "mail.local.test")
    assert info.value.status == "5.4.6"


# -- DSN ---------------------------------------------------------------------

def _failed_item() -> tuple[QueueItem, list[RecipientState]]:
    r1 = RecipientState("bob@mx.test", state="failed", attempts=1, status="5.1.1",
                        last_error="host mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user "
                                   "(in reply to RCPT TO command)",
                        diagnostic="smtp; 550 5.1.1 no such user", remote_mta="dns; mx2.mx.test",
                        updated=1_700_000_100.0)
    r2 = RecipientState("carol@nowhere.test", state="failed", attempts=1, status="5.1.2",
                        last_error="domain nowhere.test does not exist", updated=1_700_000_100.0)
    r3 = RecipientState("dave@mx.test", state="delivered")
    item = QueueItem(id="0123456789ABCDEF", sender="alice@local.test", recipients=[r1, r2, r3],
                     arrival=1_700_000_000.0, next_attempt=0.0)
    return item, [r1, r2]


def test_dsn_structure():
    item, failed = _failed_item()
    headers = header_section("X-Note: ünïcode\n".encode() + BODY)
    raw = build_dsn(item, failed, reporting_mta="mail.local.test",
                    original_headers=headers, now=1_700_000_200.0)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.local.test"
    assert msg["To"] == "alice@local.test"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    text, status, original = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert "<bob@mx.test>: host mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user" in " ".join(body.split())
    assert "carol@nowhere.test" in body and "does not exist" in body
    assert "dave@mx.test" not in body

    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.local.test"
    assert per_message["Arrival-Date"] == email.utils.formatdate(item.arrival, localtime=True)
    assert len(per_rcpt) == 2
    bob, carol = per_rcpt
    assert bob["Final-Recipient"] == "rfc822; bob@mx.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx2.mx.test"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert bob["Last-Attempt-Date"]
    assert carol["Final-Recipient"] == "rfc822; carol@nowhere.test"
    assert carol["Status"] == "5.1.2"
    assert carol["Remote-MTA"] is None and carol["Diagnostic-Code"] is None

    assert original.get_content_type() == "text/rfc822-headers"
    returned = original.get_content()
    assert "Subject: remote delivery" in returned
    assert "X-Note: ünïcode" in returned
    assert "Hello Bob" not in returned


def test_dsn_header_section_and_utf8_address():
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == b"A: 1\r\nB: 2"
    assert header_section(b"A: 1\nB: 2\n") == b"A: 1\nB: 2"
    assert xtext_address("bob@mx.test") == "rfc822; bob@mx.test"
    assert xtext_address("bøb@mx.test") == "utf-8; b\\x{F8}b@mx.test"


# -- resolver against dnsmasq ------------------------------------------------

async def test_resolver_answers(dns_world, tmp_path):
    bus, store = EventBus(), Store(tmp_path / "db")
    events = EventLog(bus)
    resolver = Resolver((dns_world.endpoint,), 1.0, bus, store)

    hosts = await resolver.mail_hosts("mx.test")
    assert [(h.name, h.preference, h.addresses) for h in hosts] == [
        ("mx1.mx.test", 10, [MX_HOST_1]), ("mx2.mx.test", 20, [MX_HOST_2])]
    implicit = await resolver.mail_hosts("AONLY.test.")
    assert [(h.name, h.preference, h.addresses) for h in implicit] == [("aonly.test", 0, [A_ONLY_HOST])]
    assert await resolver.mail_hosts("[127.0.0.5]") == [MailHost("[127.0.0.5]", 0, ["127.0.0.5"])]

    with pytest.raises(PermanentDnsError) as null_mx:
        await resolver.mail_hosts("nullmx.test")
    assert null_mx.value.status == "5.1.10"
    with pytest.raises(PermanentDnsError) as nx:
        await resolver.mail_hosts("nx.test")
    assert nx.value.status == "5.1.2"

    lookups = events.of(DnsLookup)
    assert {(e.name, e.rtype) for e in lookups} >= {
        ("mx.test", "MX"), ("mx1.mx.test", "A"), ("mx1.mx.test", "AAAA"),
        ("aonly.test", "MX"), ("aonly.test", "A"), ("nullmx.test", "MX"), ("nx.test", "MX")}
    mx = next(e for e in lookups if (e.name, e.rtype) == ("mx.test", "MX"))
    assert set(mx.answer) == {"10 mx1.mx.test", "20 mx2.mx.test"} and mx.rcode == "NOERROR"
    assert not mx.cached and mx.duration >= 0
    assert next(e for e in lookups if e.name == "nx.test").rcode == "NXDOMAIN"
    assert not any(e.cached for e in lookups)

    # Second time round everything comes from the cache, NXDOMAIN included.
    before = len(events.of(DnsLookup))
    await resolver.mail_hosts("mx.test")
    with pytest.raises(PermanentDnsError):
        await resolver.mail_hosts("nx.test")
    again = events.of(DnsLookup)[before:]
    assert again and all(e.cached for e in again)

    logged = store.recent("dns", 100)
    assert {"name", "type", "answer", "rcode", "duration", "cached"} <= set(logged[0])
    assert any(d["name"] == "nx.test" and d["rcode"] == "NXDOMAIN" for d in logged)


async def test_resolver_dns_down_is_temporary():
    dead = free_port(udp=True)
    bus = EventBus()
    events = EventLog(bus)
    resolver = Resolver((Endpoint("127.0.0.1", dead),), 0.5, bus)
    start = time.monotonic()
    with pytest.raises(TemporaryDnsError) as info:
        await resolver.mail_hosts("mx.test")
    assert info.value.status == "4.4.3"
    assert time.monotonic() - start < 3
    assert events.of(DnsLookup)[0].rcode in ("ERROR", "TIMEOUT")
    # Failures are not cached: the next lookup asks again.
    with pytest.raises(TemporaryDnsError):
        await resolver.mail_hosts("mx.test")
    assert not any(e.cached for e in events.of(DnsLookup))


# -- courier against fake mail hosts -------------------------------------------

def hosts_for(*addresses: str) -> list[MailHost]:
    return [MailHost(f"mx{i + 1}.mx.test", (i + 1) * 10, [a]) for i, a in enumerate(addresses)]


async def send(hosts, port, recipients, body=BODY, **kw):
    args = dict(helo="mail.local.test", sender="alice@local.test", smtputf8=False,
                body_8bit=False, connect_timeout=1.0, command_timeout=3.0) | kw
    return await asyncio.wait_for(
        courier.send(hosts, port=port, recipients=recipients, body=body, **args), 10)


async def test_courier_per_recipient_results_and_body(smtp_port):
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        results = await send(hosts_for(MX_HOST_1, MX_HOST_2), smtp_port,
                             ["bob@mx.test", "bad@mx.test", "later@mx.test", "carol@mx.test"])
    ok, bad, later = results["bob@mx.test"], results["bad@mx.test"], results["later@mx.test"]
    assert ok.ok and ok.code == 250 and ok.remote_mta == "mx2.mx.test" and not ok.tls
    assert results["carol@mx.test"].ok
    assert bad.permanent and bad.code == 550 and bad.status == "5.1.1"
    assert bad.diagnostic == "smtp; 550 5.1.1 no such user"
    assert "mx2.mx.test[127.0.0.3] said: 550 5.1.1 no such user (in reply to RCPT TO command)" in bad.text
    assert not later.ok and not later.permanent and later.status == "4.2.0"
    [message] = mx.messages
    assert message.rcpt_tos == ["bob@mx.test", "carol@mx.test"]
    assert message.mail_from == "alice@local.test"
    # The server undid the dot-stuffing; CRLF everywhere.
    assert message.content == WIRE_BODY
    assert any(o.upper().startswith("SIZE=") for o in message.mail_options)


async def test_courier_mail_from_and_data_replies(smtp_port):
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        rejected = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test", "b@mx.test"],
                              sender="bad@local.test")
        assert all(o.permanent and o.code == 550 for o in rejected.values())
        assert "(in reply to MAIL FROM command)" in rejected["a@mx.test"].text
        deferred = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test"],
                              sender="later@local.test")
        assert not deferred["a@mx.test"].permanent and deferred["a@mx.test"].code == 451
        mx.handler.data_reply = "554 5.7.1 looks like spam"
        spam = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test", "bad@mx.test"])
        assert spam["a@mx.test"].permanent and spam["a@mx.test"].status == "5.7.1"
        assert "(in reply to end of DATA command)" in spam["a@mx.test"].text
        assert spam["bad@mx.test"].status == "5.1.1"
        mx.handler.data_reply = "452 4.3.1 out of disk"
        full = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test"])
        assert not full["a@mx.test"].permanent and full["a@mx.test"].status == "4.3.1"


async def test_courier_all_down_states_the_last_error(smtp_port):
    results = await send(hosts_for(MX_HOST_1, MX_HOST_2), smtp_port, ["bob@mx.test"])
    outcome = results["bob@mx.test"]
    assert not outcome.ok and not outcome.permanent
    assert outcome.text == f"connection refused by mx2.mx.test[{MX_HOST_2}]:{smtp_port}"


async def test_courier_busy_greeting_moves_on(smtp_port):
    async with busy_server(MX_HOST_1, smtp_port), FakeMX(MX_HOST_2, smtp_port) as mx:
        results = await send(hosts_for(MX_HOST_1, MX_HOST_2), smtp_port, ["bob@mx.test"])
    assert results["bob@mx.test"].ok and len(mx.messages) == 1
    async with busy_server(MX_HOST_1, smtp_port):
        results = await send(hosts_for(MX_HOST_1), smtp_port, ["bob@mx.test"])
    outcome = results["bob@mx.test"]
    assert not outcome.permanent and outcome.code == 421 and outcome.status == "4.3.2"
    assert "refused to talk to me: 421 4.3.2" in outcome.text


async def test_courier_8bitmime_smtputf8_size(smtp_port):
    eight_bit = BODY.replace(b"Hello Bob.", "Grüße, Bob.".encode())
    async with FakeMX(MX_HOST_2, smtp_port, smtputf8=False) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bob@mx.test"], body=eight_bit,
                             body_8bit=True)
        assert results["bob@mx.test"].ok
        assert "BODY=8BITMIME" in [o.upper() for o in mx.messages[0].mail_options]
        assert mx.messages[0].content == eight_bit.replace(b"\n", b"\r\n")

        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bøb@mx.test"], smtputf8=True)
        outcome = results["bøb@mx.test"]
        assert outcome.permanent and outcome.status == "5.6.7" and "SMTPUTF8" in outcome.text
    async with FakeMX(MX_HOST_2, smtp_port, smtputf8=True) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bøb@mx.test"], smtputf8=True,
                             sender="älice@local.test")
        assert results["bøb@mx.test"].ok
        assert mx.messages[0].rcpt_tos == ["bøb@mx.test"]
    async with FakeMX(MX_HOST_2, smtp_port, size_limit=100) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["a@mx.test", "b@mx.test"])
        assert all(o.permanent and o.status == "5.3.4" for o in results.values())
        assert "exceeds size limit 100" in results["a@mx.test"].text
        assert mx.messages == []


async def test_courier_starttls(smtp_port):
    async with FakeMX(MX_HOST_2, smtp_port, tls=True) as mx:
        results = await send(hosts_for(MX_HOST_2), smtp_port, ["bob@mx.test"])
    assert results["bob@mx.test"].ok and results["bob@mx.test"].tls
    assert mx.messages[0].tls


# -- the delivery agent ------------------------------------------------------

async def test_delivery_with_mx_fallback(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx2:   # mx1 (preference 10) is down
        item = await h.enqueue(["bob@mx.test", "carol@mx.test", "dan@aonly.test"])
        async with FakeMX(A_ONLY_HOST, smtp_port) as aonly:
            await h.wait_settled(item.id)
    assert sorted(r for m in mx2.messages for r in m.rcpt_tos) == ["bob@mx.test", "carol@mx.test"]
    assert len(mx2.messages) == 1 and mx2.messages[0].content == WIRE_BODY
    assert [m.rcpt_tos for m in aonly.messages] == [["dan@aonly.test"]]
    delivered = h.events.of(DeliveredRemote)
    assert {(e.recipient, e.remote_mta) for e in delivered} == {
        ("bob@mx.test", "mx2.mx.test"), ("carol@mx.test", "mx2.mx.test"),
        ("dan@aonly.test", "aonly.test")}
    assert all(e.reply.startswith("250") for e in delivered)
    attempts = h.events.of(DeliveryAttempt)
    assert {(e.domain, e.attempt) for e in attempts} == {("mx.test", 1), ("aonly.test", 1)}
    assert h.dsns.sent == [] and not h.events.of(Bounced)
    assert spool_files(tmp_path) == []
    log = h.store.recent("deliveries", 10)
    assert {d["recipient"] for d in log if d["result"] == "delivered"} == {
        "bob@mx.test", "carol@mx.test", "dan@aonly.test"}
    assert any(d["remote_mta"] == "dns; mx2.mx.test" for d in log)
    assert h.store.recent("dns", 50)


async def test_retries_then_gives_up_with_a_dsn(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port):
        item = await h.enqueue(["later@mx.test", "bob@mx.test"])
        await h.wait_settled(item.id)
    deferred = h.events.of(Deferred)
    assert [(e.recipient, e.attempts) for e in deferred] == [("later@mx.test", 1), ("later@mx.test", 2)]
    assert all(e.next_attempt > e.at for e in deferred)
    assert [e.attempt for e in h.events.of(DeliveryAttempt)] == [1, 2, 3]
    assert [e.recipient for e in h.events.of(DeliveredRemote)] == ["bob@mx.test"]
    [bounce] = h.events.of(Bounced)
    assert bounce.recipient == "later@mx.test" and bounce.dsn_id == "DSN1"

    [(sender, recipients, _)] = h.dsns.sent
    assert sender == "" and recipients == ["alice@local.test"]
    dsn = h.dsns.parsed()
    assert dsn.get_content_type() == "multipart/report"
    text, status, original = dsn.iter_parts()
    words = " ".join(text.get_content().split())
    assert "later@mx.test" in words and "gave up after 3 delivery attempts" in words
    assert "451 4.2.0 mailbox busy" in words and "bob@mx.test" not in words
    _, rcpt = status.get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; later@mx.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "4.2.0"
    assert rcpt["Remote-MTA"] == "dns; mx2.mx.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.2.0 mailbox busy, try again later"
    assert "Message-ID: <1@local.test>" in original.get_content()
    assert spool_files(tmp_path) == []


async def test_5xx_bounces_at_once(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        item = await h.enqueue(["bad@mx.test", "bob@mx.test"])
        await h.wait_settled(item.id)
    assert len(h.events.of(DeliveryAttempt)) == 1 and not h.events.of(Deferred)
    assert mx.messages[0].rcpt_tos == ["bob@mx.test"]
    _, rcpt = h.dsns.parsed().get_payload()[1].get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; bad@mx.test"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"


@pytest.mark.parametrize("domain, status, words", [
    ("nullmx.test", "5.1.10", "does not accept mail"),
    ("nx.test", "5.1.2", "does not exist"),
])
async def test_dns_failures_bounce_without_retry(dns_world, smtp_port, tmp_path, harnesses,
                                                 domain, status, words):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    item = await h.enqueue([f"bob@{domain}"])
    await h.wait_settled(item.id)
    assert len(h.events.of(DeliveryAttempt)) == 1 and not h.events.of(Deferred)
    [bounce] = h.events.of(Bounced)
    assert words in bounce.error
    dsn = h.dsns.parsed()
    _, rcpt = dsn.get_payload()[1].get_payload()
    assert rcpt["Status"] == status and rcpt["Action"] == "failed"
    assert words in dsn.get_payload()[0].get_content()


async def test_no_bounce_for_the_null_sender(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    item = await h.enqueue(["bob@nullmx.test"], sender="")
    await h.wait_settled(item.id)
    assert h.dsns.sent == []
    [bounce] = h.events.of(Bounced)
    assert bounce.recipient == "bob@nullmx.test" and bounce.dsn_id == ""
    assert spool_files(tmp_path) == []


async def test_dns_down_defers_not_bounces(smtp_port, tmp_path, harnesses):
    dead = Endpoint("127.0.0.1", free_port(udp=True))
    h = harnesses(tmp_path, make_config(tmp_path, (dead,), smtp_port, dns_timeout=0.4,
                                        max_attempts=10)).start()
    item = await h.enqueue(["bob@mx.test"])
    await h.events.wait_for(lambda e: isinstance(e, Deferred), count=2, timeout=10)
    await h.stop()
    assert not h.events.of(Bounced) and h.dsns.sent == []
    [rcpt] = item.recipients
    assert rcpt.state == "deferred" and rcpt.status == "4.4.3"
    assert "mx.test" in rcpt.last_error
    assert spool_files(tmp_path) == [f"{item.id}.eml", f"{item.id}.json"]


async def test_restart_picks_up_a_deferred_message(dns_world, smtp_port, tmp_path, harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port, retry_intervals=(0.3,),
                         max_attempts=10)
    first = harnesses(tmp_path, config).start()
    item = await first.enqueue(["bob@mx.test"])
    [deferred] = await first.events.wait_for(lambda e: isinstance(e, Deferred), timeout=10)
    assert "connection refused" in deferred.error
    await first.stop()
    assert spool_files(tmp_path) == [f"{item.id}.eml", f"{item.id}.json"]

    second = harnesses(tmp_path, config)
    assert len(second.queue) == 1
    [reloaded] = second.queue.items()
    assert reloaded.id == item.id and reloaded.attempts >= 1
    assert reloaded.recipients[0].state == "deferred"
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        second.start()
        await second.wait_settled(item.id)
    assert mx.messages[0].rcpt_tos == ["bob@mx.test"] and mx.messages[0].content == WIRE_BODY
    [done] = second.events.of(DeliveredRemote)
    assert done.msg_id == item.id
    assert second.events.of(DeliveryAttempt)[0].attempt == reloaded.attempts
    assert spool_files(tmp_path) == []


async def test_failed_submit_drops_the_dsn_with_a_notice(dns_world, smtp_port, tmp_path, harnesses):
    dsns = Dsns()
    dsns.error = OSError("disk full")
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port), dsns).start()
    item = await h.enqueue(["bob@nx.test"])
    await h.wait_settled(item.id)
    [notice] = h.events.of(Notice)
    assert notice.level == "error" and "disk full" in notice.text and item.id in notice.text
    assert h.events.of(Bounced)[0].dsn_id == ""
    assert spool_files(tmp_path) == []


async def test_bounce_now_and_retry_now(dns_world, smtp_port, tmp_path, harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port, retry_intervals=(3600,),
                         max_attempts=10)
    h = harnesses(tmp_path, config).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        first = await h.enqueue(["later@mx.test"])
        second = await h.enqueue(["bob@mx.test", "later2@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, Deferred), count=2, timeout=10)
        assert await h.agent.retry_now(second.id)
        await h.events.wait_for(lambda e: isinstance(e, Deferred), count=3, timeout=10)
        assert [m.rcpt_tos for m in mx.messages] == [["bob@mx.test"]]

        assert await h.agent.bounce_now(first.id)
        await h.wait_settled(first.id)
    assert not await h.agent.bounce_now(first.id)
    assert not await h.agent.retry_now(first.id)
    [(_, recipients, _)] = h.dsns.sent
    assert recipients == ["alice@local.test"]
    dsn = h.dsns.parsed()
    _, rcpt = dsn.get_payload()[1].get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; later@mx.test"
    assert rcpt["Status"] == "5.0.0"
    assert "removed by the administrator" in dsn.get_payload()[0].get_content()
    assert spool_files(tmp_path) == [f"{second.id}.eml", f"{second.id}.json"]


async def test_concurrency_limits(dns_world, smtp_port, tmp_path, harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port, max_concurrency=3,
                         max_per_domain=1)
    h = harnesses(tmp_path, config)
    async with FakeMX(MX_HOST_2, smtp_port, data_delay=0.1) as mx, \
            FakeMX(A_ONLY_HOST, smtp_port, data_delay=0.1) as aonly:
        items = [await h.enqueue([f"u{i}@mx.test"]) for i in range(4)]
        items += [await h.enqueue([f"u{i}@aonly.test"]) for i in range(3)]
        h.start()
        for item in items:
            await h.wait_settled(item.id)
    assert len(mx.messages) == 4 and len(aonly.messages) == 3
    assert mx.handler.max_concurrent == 1 and aonly.handler.max_concurrent == 1
    assert h.agent.status()["active"] == 0 and h.agent.status()["parked"] == 0


async def test_stop_gives_attempts_a_grace_period(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port, data_delay=0.3) as mx:
        item = await h.enqueue(["bob@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, DeliveryAttempt), timeout=5)
        await asyncio.sleep(0.1)
        await asyncio.wait_for(h.agent.stop(grace=3), 5)
        assert [m.rcpt_tos for m in mx.messages] == [["bob@mx.test"]]
    assert h.events.of(DeliveredRemote) and spool_files(tmp_path) == []
    assert item.id and h.agent.status()["active"] == 0


async def test_stop_after_grace_leaves_the_message_for_retry(dns_world, smtp_port, tmp_path,
                                                             harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port)
    first = harnesses(tmp_path, config).start()
    async with FakeMX(MX_HOST_2, smtp_port) as stuck:
        stuck.handler.hold = asyncio.Event()
        item = await first.enqueue(["bob@mx.test"])
        await first.events.wait_for(lambda e: isinstance(e, DeliveryAttempt), timeout=5)
        await asyncio.sleep(0.2)   # the session is now waiting in DATA
        await asyncio.wait_for(first.agent.stop(grace=0.1), 5)
        stuck.handler.hold.set()
    assert not first.events.of(DeliveredRemote) and not first.events.of(Deferred)
    assert spool_files(tmp_path) == [f"{item.id}.eml", f"{item.id}.json"]
    assert not item.in_flight and first.agent.status()["active"] == 0

    second = harnesses(tmp_path, config)
    [again] = second.queue.items()
    assert again.id == item.id and again.recipients[0].state == "queued"
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        second.start()
        await second.wait_settled(item.id)
    assert [m.rcpt_tos for m in mx.messages] == [["bob@mx.test"]]


async def test_remove_now_waits_for_a_running_attempt(dns_world, smtp_port, tmp_path, harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port, retry_intervals=(3600,))
    h = harnesses(tmp_path, config).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        mx.handler.hold = asyncio.Event()
        running = await h.enqueue(["later@mx.test", "bob@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, DeliveryAttempt), timeout=5)
        await asyncio.sleep(0.2)
        assert running.in_flight
        assert await h.agent.remove_now(running.id)
        assert h.queue.get(running.id) is running      # not while the attempt runs
        mx.handler.hold.set()
        await h.wait_settled(running.id)
        waiting = await h.enqueue(["later@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, Deferred) and e.msg_id == waiting.id,
                                timeout=5)
        await asyncio.wait_for(until(lambda: not waiting.in_flight), 5)
        assert await h.agent.remove_now(waiting.id)
        assert h.queue.get(waiting.id) is None
        assert not await h.agent.remove_now(waiting.id)
    assert h.dsns.sent == [] and spool_files(tmp_path) == []
