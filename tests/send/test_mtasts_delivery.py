"""MTA-STS on outbound delivery, end to end: real DNS (dnsmasq), policies fetched over HTTPS
from loopback servers with a test CA, and aiosmtpd mail hosts with that CA's certificates.

The world (everything on 127.0.0.0/8):

=================  ====================================  ==========================================
domain             policy                                MX hosts
=================  ====================================  ==========================================
good.test          enforce, mx.good.test                 mx.good.test (127.0.0.2, valid cert)
nopolicy.test      none                                  mx.good.test
unlisted.test      enforce, mx.elsewhere.test            mx.unlisted.test (127.0.0.3, valid cert)
plain.test         enforce, \\*.plain.test               mx1.plain.test (127.0.0.4, no STARTTLS),
                                                         then mx2.plain.test (127.0.0.2)
plainonly.test     enforce, mx1.plain.test               mx1.plain.test
wrongcert.test     enforce, mx.wrongcert.test            mx.wrongcert.test (127.0.0.5, a certificate
                                                         for mx.elsewhere.test)
testing.test       testing, mx.wrongcert.test            mx.wrongcert.test
=================  ====================================  ==========================================
"""

from __future__ import annotations

import ssl

import pytest
from delivery_harness import Harness, harnesses_fixture, make_config  # noqa: F401 (a fixture)
from dnsworld import DNSMASQ, DnsWorld, FakeMX, free_port
from sink import Sink
from tlsworld import PolicyServer, TestCA

from mailtui.dns.resolver import MailHost
from mailtui.events import Bounced, Deferred, DeliveredRemote, Notice
from mailtui.mailauth.mtasts import MtaSts
from mailtui.mailauth.stspolicy import parse_policy, policy_text
from mailtui.send import stsroute
from mailtui.send.courier import Outcome
from mailtui.send.smtp_courier import SmtpCourier

pytestmark = pytest.mark.timeout(30)

GOOD, UNLISTED, PLAIN, WRONG = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
POLICIES = {
    "good.test": ("127.0.0.21", "enforce", ["mx.good.test"]),
    "unlisted.test": ("127.0.0.22", "enforce", ["mx.elsewhere.test"]),
    "plain.test": ("127.0.0.23", "enforce", ["*.plain.test"]),
    "plainonly.test": ("127.0.0.24", "enforce", ["mx1.plain.test"]),
    "wrongcert.test": ("127.0.0.25", "enforce", ["mx.wrongcert.test"]),
    "testing.test": ("127.0.0.26", "testing", ["mx.wrongcert.test"]),
}
MX = (("good.test", "mx.good.test", 10), ("nopolicy.test", "mx.good.test", 10),
      ("unlisted.test", "mx.unlisted.test", 10),
      ("plain.test", "mx1.plain.test", 10), ("plain.test", "mx2.plain.test", 20),
      ("plainonly.test", "mx1.plain.test", 10),
      ("wrongcert.test", "mx.wrongcert.test", 10), ("testing.test", "mx.wrongcert.test", 10))
HOSTS = (("mx.good.test", GOOD), ("mx2.plain.test", GOOD), ("mx.unlisted.test", UNLISTED),
         ("mx1.plain.test", PLAIN), ("mx.wrongcert.test", WRONG)) + tuple(
    (f"mta-sts.{domain}", address) for domain, (address, _, _) in POLICIES.items())
TXT = tuple((f"_mta-sts.{domain}", "v=STSv1; id=20261201") for domain in POLICIES)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def world():
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    w = DnsWorld(mx=MX, hosts=HOSTS, null_mx=(), txt=TXT).start()
    try:
        yield w
    finally:
        w.close()


class World:
    """The running servers of one test: mail hosts by address, and the policy servers' port."""

    def __init__(self, ca: TestCA, smtp_port: int, https_port: int):
        self.smtp_port, self.https_port = smtp_port, https_port
        self.mx = {GOOD: FakeMX(GOOD, smtp_port, tls=ca.server_context("mx.good.test", "mx2.plain.test")),
                   UNLISTED: FakeMX(UNLISTED, smtp_port, tls=ca.server_context("mx.unlisted.test")),
                   PLAIN: FakeMX(PLAIN, smtp_port),
                   WRONG: FakeMX(WRONG, smtp_port, tls=ca.server_context("mx.elsewhere.test"))}
        self.policies = [PolicyServer(address, https_port, ca.server_context(f"mta-sts.{domain}"),
                                      PolicyServer.ok(policy_text(mode, mx, 86400)))
                         for domain, (address, mode, mx) in POLICIES.items()]

    def received(self, address: str) -> list[tuple[list[str], bool]]:
        """What the mail host at ``address`` received: (recipients, over TLS) per message."""
        return [(m.rcpt_tos, m.tls) for m in self.mx[address].messages]


@pytest.fixture
async def servers(ca, world):
    running = World(ca, free_port((GOOD, UNLISTED, PLAIN, WRONG)),
                    free_port(tuple(address for address, _, _ in POLICIES.values())))
    started = []
    try:
        for server in [*running.mx.values(), *running.policies]:
            started.append(await server.start())
        yield running
    finally:
        for server in started:
            await server.stop()


@pytest.fixture
async def harness(tmp_path, world, servers, ca, harnesses) -> Harness:
    config = make_config(tmp_path, (world.endpoint,), servers.smtp_port, connection_cache_time=30.0)
    h = harnesses(tmp_path, config)
    h.transfer.mta_sts = MtaSts(h.resolver, tmp_path, ca_file=ca.ca_file, fetch_timeout=2.0,
                                https_port=servers.https_port)
    return h.start()


async def send(h: Harness, recipient: str) -> list:
    """Queue one message, wait until it has left the queue; the events it caused."""
    before = len(h.events.events)
    item = await h.enqueue([recipient])
    await h.wait_settled(item.id)
    return [e for e in h.events.events[before:] if getattr(e, "msg_id", item.id) == item.id]


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


# -- what a policy makes of the MX hosts (pure) ------------------------------------------------------

CONTEXT = ssl.create_default_context()
HOSTS_AB = [MailHost("a.mx.test", 10, ["127.0.0.9"]), MailHost("b.other.test", 20, ["127.0.0.9"])]


@pytest.mark.parametrize("text, hosts, require, verify, refused", [
    (None, ["a.mx.test", "b.other.test"], False, False, False),
    ("version: STSv1\nmode: none\nmax_age: 60\n", ["a.mx.test", "b.other.test"], False, False, False),
    ("version: STSv1\nmode: enforce\nmx: *.mx.test\nmax_age: 60\n", ["a.mx.test"], True, False, False),
    ("version: STSv1\nmode: enforce\nmx: c.mx.test\nmax_age: 60\n", [], False, False, True),
    ("version: STSv1\nmode: testing\nmx: c.mx.test\nmax_age: 60\n", ["a.mx.test", "b.other.test"], False, True,
     False),
])
def test_route(text, hosts, require, verify, refused):
    policy = parse_policy(text, "d.test", "1") if text else None
    way = stsroute.route(policy, HOSTS_AB, CONTEXT)
    assert [h.name for h in way.hosts] == hosts
    assert (way.require_tls is CONTEXT, way.verify_tls is CONTEXT, way.refused is not None) == (
        require, verify, refused)
    if refused:
        assert not way.refused.permanent and way.refused.status == "4.7.0"
        assert way.refused.text == ("MTA-STS policy of d.test (mode enforce) does not list a.mx.test, "
                                    "b.other.test (allowed: c.mx.test)")


def delivered(host: str, tls: bool, verified: bool) -> Outcome:
    return Outcome(ok=True, permanent=False, code=250, status="2.0.0", text="", remote_mta=host,
                   tls=tls, verified=verified)


def test_testing_report():
    policy = parse_policy("version: STSv1\nmode: testing\nmx: *.mx.test\nmax_age: 60\n", "d.test", "1")
    assert stsroute.testing_report(policy, [delivered("a.mx.test", True, True)]) is None
    assert stsroute.testing_report(policy, [delivered("a.mx.test", True, False), delivered("b.mx.test", False, False),
                                   delivered("c.other.test", True, True)]) == (
        "MTA-STS testing: enforce mode would have refused mail for d.test: a.mx.test has no valid "
        "certificate for its name; b.mx.test was reached without TLS; c.other.test is not listed in the policy")
    refused = Outcome(ok=False, permanent=True, code=550, status="5.1.1", text="", remote_mta="c.other.test",
                      tls=False)
    assert stsroute.testing_report(policy, [refused]) is None        # only what was delivered is judged


# -- whole deliveries --------------------------------------------------------------------------------

async def test_enforce_with_a_valid_certificate_delivers_over_verified_tls(harness, servers):
    events = await send(harness, "bob@good.test")
    [done] = of(events, DeliveredRemote)
    assert done.remote_mta == "mx.good.test" and done.tls and done.mta_sts == "enforce"
    assert servers.received(GOOD) == [(["bob@good.test"], True)]


async def test_enforce_defers_when_no_mx_is_in_the_policy_and_the_dsn_says_why(harness, servers):
    events = await send(harness, "bob@unlisted.test")       # 3 attempts, then it bounces
    deferred = of(events, Deferred)
    assert deferred and all(e.error == "MTA-STS policy of unlisted.test (mode enforce) does not list "
                                       "mx.unlisted.test (allowed: mx.elsewhere.test)" for e in deferred)
    [bounced] = of(events, Bounced)
    assert "does not list mx.unlisted.test" in bounced.error
    dsn = harness.dsns.sent[-1][2].decode()
    assert "Status: 4.7.0" in dsn
    assert "MTA-STS policy of unlisted.test" in " ".join(dsn.split())
    assert servers.mx[UNLISTED].connections == 0 and servers.received(UNLISTED) == []


async def test_enforce_skips_a_host_without_starttls_and_never_sends_in_plaintext(harness, servers):
    [done] = of(await send(harness, "bob@plain.test"), DeliveredRemote)
    assert done.remote_mta == "mx2.plain.test" and done.tls and done.mta_sts == "enforce"
    assert servers.mx[PLAIN].connections == 1 and servers.received(PLAIN) == []
    assert servers.received(GOOD) == [(["bob@plain.test"], True)]

    events = await send(harness, "bob@plainonly.test")      # the only host has no STARTTLS
    assert all(e.error == "MTA-STS requires TLS, but host mx1.plain.test[127.0.0.4] did not offer STARTTLS"
               for e in of(events, Deferred))
    assert of(events, Deferred) and of(events, Bounced) and not of(events, DeliveredRemote)
    assert servers.received(PLAIN) == []


async def test_enforce_refuses_a_certificate_for_another_name(harness, servers):
    events = await send(harness, "bob@wrongcert.test")
    [first, *_] = of(events, Deferred)
    assert first.error.startswith("MTA-STS requires TLS, but host mx.wrongcert.test[127.0.0.5] has no valid "
                                  "certificate for its name (")
    assert not of(events, DeliveredRemote) and servers.received(WRONG) == []
    assert servers.mx[WRONG].connections >= 1


async def test_testing_mode_delivers_despite_a_bad_certificate_and_says_so(harness, servers):
    events = await send(harness, "bob@testing.test")
    [done] = of(events, DeliveredRemote)
    assert done.remote_mta == "mx.wrongcert.test" and done.tls and done.mta_sts == "testing"
    assert servers.received(WRONG) == [(["bob@testing.test"], True)]       # opportunistic TLS after all
    notices = [e.text for e in harness.events.of(Notice) if "MTA-STS" in e.text]
    assert notices == ["MTA-STS testing: enforce mode would have refused mail for testing.test: "
                       "mx.wrongcert.test has no valid certificate for its name"]


async def test_a_cached_opportunistic_connection_is_not_used_for_an_enforced_domain(harness, servers):
    [plain] = of(await send(harness, "a@nopolicy.test"), DeliveredRemote)
    assert plain.mta_sts == "" and not plain.reused and servers.mx[GOOD].connections == 1
    [enforced] = of(await send(harness, "b@good.test"), DeliveredRemote)
    assert enforced.mta_sts == "enforce" and not enforced.reused and servers.mx[GOOD].connections == 2
    # each kind is cached for its own: both are reused the next time
    [again_plain] = of(await send(harness, "c@nopolicy.test"), DeliveredRemote)
    [again_enforced] = of(await send(harness, "d@good.test"), DeliveredRemote)
    assert again_plain.reused and again_enforced.reused and servers.mx[GOOD].connections == 2
    assert [tls for _, tls in servers.received(GOOD)] == [True] * 4


# -- the courier alone: a STARTTLS the host refuses ---------------------------------------------------

async def test_a_refused_starttls_is_no_reason_for_plaintext_when_tls_is_required(ca):
    async def refuse(link, verb):
        return "454 4.7.0 TLS not available now" if verb == "STARTTLS" else None

    port = free_port((GOOD,))
    context = MtaSts(None, ca.folder, ca_file=ca.ca_file).tls_context()
    async with Sink(GOOD, port, tls=True, hook=refuse) as sink:
        courier = SmtpCourier(helo="mail.local.test", port=port, connect_timeout=2, command_timeout=2)
        outcomes = await courier.deliver([MailHost("mx.good.test", 10, [GOOD])], sender="a@local.test",
                                         recipients=["b@good.test"], body=b"Subject: x\n\nhi\n",
                                         require_tls=context)
        [link] = sink.links
        await sink.wait_for(lambda: link.closed, 5)
    outcome = outcomes["b@good.test"]
    assert not outcome.ok and not outcome.permanent and outcome.status == "4.7.4"
    assert outcome.text == ("MTA-STS requires TLS, but host mx.good.test[127.0.0.2] refused STARTTLS: "
                            "454 4.7.0 TLS not available now")
    assert "MAIL" not in link.verbs() and sink.messages == []
