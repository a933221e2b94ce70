"""The resolver: MX ordering, address literals, and answers from a real dnsmasq."""

from __future__ import annotations

import random
import time

import pytest
from dnsworld import A_ONLY_HOST, MX_HOST_1, MX_HOST_2, EventLog, free_port

from mailtui.config import Endpoint
from mailtui.dns.resolver import (
    MailHost,
    PermanentDnsError,
    Resolver,
    TemporaryDnsError,
    order_mx,
    parse_literal,
)
from mailtui.events import DnsLookup, EventBus
from mailtui.store.db import Store

pytestmark = pytest.mark.timeout(30)


# -- pure rules ----------------------------------------------------------------

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



# -- against dnsmasq -----------------------------------------------------------

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

