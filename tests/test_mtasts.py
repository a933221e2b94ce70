"""MTA-STS (RFC 8461) against real DNS and loopback HTTPS servers with a test CA.

Each test domain's ``mta-sts.<domain>`` resolves (through dnsmasq) to its own
127.0.0.x address, where a :class:`tlsworld.PolicyServer` answers as the
test needs: a policy, a redirect, too much, or nothing.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import pytest
from dnsworld import DNSMASQ, DnsWorld, free_port
from tlsworld import PolicyServer, TestCA

from mailtui.dns.resolver import Resolver
from mailtui.events import DnsLookup, EventBus
from mailtui.mailauth.mtasts import MtaSts, refusal
from mailtui.mailauth.stspolicy import Policy, PolicyError, mx_allowed, parse_policy, parse_txt, policy_text

ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx.enforce.test\r\nmx: *.backup.enforce.test\r\nmax_age: 86400\r\n"
HUGE = "version: STSv1\nmode: enforce\nmx: mx.huge.test\nmax_age: 86400\n" + "# padding\n" * 7000

# domain -> (address of mta-sts.<domain>, the server's answer, or "silent"/"badcert"/"expired")
SITES = {
    "enforce.test": ("127.0.0.21", PolicyServer.ok(ENFORCE)),
    "testing.test": ("127.0.0.22", PolicyServer.ok(policy_text("testing", ["mx.testing.test"], 3600))),
    "none.test": ("127.0.0.23", PolicyServer.ok("version: STSv1\nmode: none\nmax_age: 3600\n", length=False)),
    "redirect.test": ("127.0.0.24", b"HTTP/1.1 301 Moved\r\nLocation: https://evil.test/p.txt\r\n\r\n"),
    "huge.test": ("127.0.0.25", PolicyServer.ok(HUGE)),
    "hugestream.test": ("127.0.0.26", PolicyServer.ok(HUGE, length=False)),
    "silent.test": ("127.0.0.27", None),
    "badcert.test": ("127.0.0.28", "badcert"),
    "notfound.test": ("127.0.0.29", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    "cached.test": ("127.0.0.30", PolicyServer.ok(policy_text("enforce", ["mx.cached.test"], 600))),
    "html.test": ("127.0.0.31", PolicyServer.ok(ENFORCE, content_type="text/html")),
    "garbage.test": ("127.0.0.32", PolicyServer.ok("version: STSv1\nmode: strict\nmax_age: 1\n")),
    "expiredcert.test": ("127.0.0.33", "expired"),
}
TXT = tuple((f"_mta-sts.{d}", "v=STSv1; id=20261130") for d in SITES) + (
    ("_mta-sts.badtxt.test", "v=STSv1; id=not valid!"),
    ("_mta-sts.twotxt.test", "v=STSv1; id=a1"), ("_mta-sts.twotxt.test", "v=STSv1; id=a2"),
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def world():
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    hosts = tuple((f"mta-sts.{d}", address) for d, (address, _) in SITES.items())
    hosts += (("mx.enforce.test", "127.0.0.41"), ("mx.other.test", "127.0.0.42"))
    w = DnsWorld(mx=(("enforce.test", "mx.enforce.test", 10),), hosts=hosts, null_mx=(), txt=TXT).start()
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
async def servers(ca, world):
    port = free_port(tuple(address for address, _ in SITES.values()))
    running = {}
    for domain, (address, answer) in SITES.items():
        context = ca.server_context(f"mta-sts.{domain}")
        if answer == "badcert":
            context, answer = ca.server_context("mta-sts.other.test"), PolicyServer.ok(ENFORCE)
        elif answer == "expired":
            context, answer = ca.server_context(f"mta-sts.{domain}", expired=True), PolicyServer.ok(ENFORCE)
        running[domain] = await PolicyServer(address, port, context, answer).start()
    try:
        yield port, running
    finally:
        for server in running.values():
            await server.stop()


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bus():
    return EventBus()


@pytest.fixture
def make(world, ca, servers, tmp_path, bus):
    port, _ = servers
    clock = Clock()

    def make_sts(**kw) -> MtaSts:
        resolver = Resolver((world.endpoint,), 1.0, bus)
        options = dict(ca_file=ca.ca_file, fetch_timeout=2.0, https_port=port, clock=clock) | kw
        return MtaSts(resolver, tmp_path, **options)
    make_sts.clock = clock
    return make_sts


# -- the policy file, the TXT record, MX matching (pure) -------------------------------------------

def test_policy_parsing():
    policy = parse_policy(ENFORCE, "enforce.test", "abc", 5.0)
    assert policy == Policy("enforce.test", "abc", "enforce", ("mx.enforce.test", "*.backup.enforce.test"), 86400, 5.0)
    assert policy.expires == 86405.0 and policy.enforced
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n", "d", "i").max_age == 31_557_600
    assert parse_policy("version: STSv1\nmode: testing\nmx: A.Example.\nmax_age: 5\nextra: x\n", "d", "i").mx == (
        "a.example",)


@pytest.mark.parametrize("text, why", [
    ("mode: enforce\nmx: a.test\nmax_age: 5\n", "version"),
    ("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 5\n", "version"),
    ("version: STSv1\nmode: strict\nmx: a.test\nmax_age: 5\n", "mode"),
    ("version: STSv1\nmode: enforce\nmax_age: 5\n", "no mx"),
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: soon\n", "max_age"),
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -5\n", "max_age"),
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 99999999999\n", "max_age"),     # 11 digits
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: \u00b2\n", "max_age"),
    ("version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 5\n", "mx"),
    ("version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 5\n", "mx"),
    ("version: STSv1\nno colon here\n", "colon"),
])
def test_bad_policies(text, why):
    with pytest.raises(PolicyError, match=why):
        parse_policy(text, "d", "i")


@pytest.mark.parametrize("records, policy_id", [
    ([b"v=STSv1; id=20160831085700Z"], "20160831085700Z"),
    ([b"v=STSv1;id=abc;"], "abc"),
    ([b"v=spf1 -all", b"v=STSv1; id=abc"], "abc"),
    ([b"v=STSv1; id=abc", b"v=STSv1; id=def"], None),
    ([b"v=STSv1; id=has-hyphen"], None),
    ([b"v=STSv1"], None),
    ([b"v=STSv2; id=abc"], None),
    ([], None),
])
def test_txt_record(records, policy_id):
    assert parse_txt(records) == policy_id


@pytest.mark.parametrize("host, allowed", [
    ("mx.enforce.test", True), ("MX.Enforce.Test.", True), ("a.backup.enforce.test", True),
    ("backup.enforce.test", False), ("a.b.backup.enforce.test", False), ("mx.other.test", False),
    ("xmx.enforce.test", False), ("enforce.test", False),
])
def test_mx_patterns(host, allowed):
    policy = parse_policy(ENFORCE, "enforce.test", "i")
    assert mx_allowed(policy, host) is allowed
    assert (refusal(policy, host) is None) is allowed
    testing = parse_policy(ENFORCE.replace("enforce\r", "testing\r"), "enforce.test", "i")
    assert refusal(testing, host) is None          # testing mode refuses nothing


# -- discovery and fetching ----------------------------------------------------------------------

async def test_enforce_policy_is_fetched_over_https_through_the_resolver(make, servers, bus):
    lookups = []
    bus.add_listener(lambda e: lookups.append(e) if isinstance(e, DnsLookup) else None)
    sts = make()
    policy = await sts.policy_for("Enforce.Test")
    assert policy is not None and policy.mode == "enforce" and policy.id == "20261130"
    assert policy.mx == ("mx.enforce.test", "*.backup.enforce.test")
    assert refusal(policy, "mx.other.test") == ("MTA-STS policy of enforce.test (mode enforce) does not list "
                                                "mx.other.test (allowed: mx.enforce.test, *.backup.enforce.test)")
    [request] = servers[1]["enforce.test"].requests
    assert request.startswith(b"GET /.well-known/mta-sts.txt HTTP/1.0\r\n") and b"Host: mta-sts.enforce.test" in request
    assert {(e.name, e.rtype, e.purpose) for e in lookups} >= {
        ("_mta-sts.enforce.test", "TXT", "MTA-STS"), ("mta-sts.enforce.test", "A", "MTA-STS")}


async def test_testing_and_none_modes(make):
    sts = make()
    testing = await sts.policy_for("testing.test")
    assert testing.mode == "testing" and not testing.enforced and testing.max_age == 3600
    none = await sts.policy_for("none.test")                # read to the end: no Content-Length
    assert none.mode == "none" and none.mx == ()


@pytest.mark.parametrize("domain, why", [
    ("nopolicy.test", None),
    ("badtxt.test", None),
    ("twotxt.test", None),
    ("redirect.test", "HTTP status 301 to https://evil.test/p.txt (redirects are not followed)"),
    ("notfound.test", "HTTP status 404"),
    ("huge.test", "over the 64 KiB limit"),
    ("hugestream.test", "over the 64 KiB limit"),
    ("badcert.test", "certificate not valid"),
    ("expiredcert.test", "certificate not valid"),
    ("html.test", "not text/plain"),
    ("garbage.test", "mode is 'strict'"),
])
async def test_no_usable_policy_means_no_policy(make, domain, why):
    sts = make()
    assert await asyncio.wait_for(sts.policy_for(domain), 10) is None
    if why is None:
        assert domain not in sts.last_problem
    else:
        assert why in sts.last_problem[domain]


async def test_a_server_that_never_answers_gives_up_at_the_fetch_timeout(make):
    sts = make(fetch_timeout=1.0)
    started = time.monotonic()
    assert await asyncio.wait_for(sts.policy_for("silent.test"), 10) is None
    assert 0.9 < time.monotonic() - started < 3
    assert "no answer within 1s" in sts.last_problem["silent.test"]


async def test_deliveries_to_one_domain_share_one_fetch(make, servers):
    sts = make()
    policies = await asyncio.gather(*(sts.policy_for("enforce.test") for _ in range(10)))
    assert len({id(p) for p in policies}) == 1
    assert len(servers[1]["enforce.test"].requests) == 1


# -- the cache --------------------------------------------------------------------------------------

async def test_the_cache_lasts_max_age_and_survives_a_restart(make, servers, tmp_path):
    server = servers[1]["cached.test"]
    first = await make().policy_for("cached.test")
    assert first.max_age == 600 and len(server.requests) == 1
    stored = json.loads((tmp_path / "mta-sts" / "cached.test.json").read_text())
    assert stored["id"] == "20261130" and stored["mode"] == "enforce"

    again = make()                                   # a restart: a new instance on the same data_dir
    assert await again.policy_for("cached.test") == first and len(server.requests) == 1
    make.clock.now += 601                            # max_age has passed: fetched anew
    refreshed = await again.policy_for("cached.test")
    assert len(server.requests) == 2 and refreshed.fetched_at == make.clock.now


def seed(tmp_path, domain: str, policy_id: str, fetched_at: float, max_age: int = 86400) -> None:
    (tmp_path / "mta-sts").mkdir(exist_ok=True)
    (tmp_path / "mta-sts" / f"{domain}.json").write_text(json.dumps(
        {"domain": domain, "id": policy_id, "mode": "enforce", "mx": ["mx.seeded.test"],
         "max_age": max_age, "fetched_at": fetched_at}))


async def test_a_new_id_in_dns_means_a_new_fetch(make, servers, tmp_path):
    seed(tmp_path, "cached.test", "old1", make.clock.now - 10)
    policy = await make().policy_for("cached.test")
    assert policy.id == "20261130" and policy.mx == ("mx.cached.test",)
    assert len(servers[1]["cached.test"].requests) == 1


async def test_the_same_id_uses_the_cache(make, servers, tmp_path):
    seed(tmp_path, "cached.test", "20261130", make.clock.now - 10)
    policy = await make().policy_for("cached.test")
    assert policy.mx == ("mx.seeded.test",) and servers[1]["cached.test"].requests == []


async def test_an_unexpired_cached_policy_outlives_a_failed_fetch_and_a_vanished_record(make, tmp_path):
    seed(tmp_path, "silent.test", "old1", make.clock.now - 10)
    seed(tmp_path, "nopolicy.test", "old1", make.clock.now - 10)
    sts = make(fetch_timeout=0.5)
    assert (await sts.policy_for("silent.test")).mx == ("mx.seeded.test",)
    assert (await sts.policy_for("nopolicy.test")).mx == ("mx.seeded.test",)
    seed(tmp_path, "notfound.test", "old1", make.clock.now - 100, max_age=50)     # expired: not used
    assert await make().policy_for("notfound.test") is None


async def test_a_damaged_cache_entry_is_ignored(make, tmp_path):
    (tmp_path / "mta-sts").mkdir()
    (tmp_path / "mta-sts" / "enforce.test.json").write_text("{not json")
    assert (await make().policy_for("enforce.test")).mode == "enforce"


# -- enforced TLS to the MX -------------------------------------------------------------------------

async def test_the_tls_context_wants_a_certificate_valid_for_the_mx_name(make, ca):
    port = free_port(("127.0.0.41",))
    server = await PolicyServer("127.0.0.41", port, ca.server_context("mx.enforce.test"),
                                PolicyServer.ok("hi")).start()
    try:
        context = make().tls_context()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.41", port, ssl=context, server_hostname="mx.enforce.test"), 5)
        writer.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.41", port, ssl=context, server_hostname="mx.other.test"), 5)
        with pytest.raises(ssl.SSLCertVerificationError):        # the system store does not know the test CA
            await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.41", port, ssl=make(ca_file="").tls_context(), server_hostname="mx.enforce.test"), 5)
    finally:
        await server.stop()
