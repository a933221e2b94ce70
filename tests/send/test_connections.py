"""The connection cache: its bounds with stand-in sessions, then real sessions on loopback
(the health check, TLS session resumption under asyncio and uvloop)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from delivery_harness import (
    harnesses_fixture,  # noqa: F401 (a fixture)
    make_config,
    smtp_port_fixture,  # noqa: F401 (a fixture)
)
from dnsworld import MX_HOST_2
from sink import Sink

from mailtui.config import ConfigError, from_mapping
from mailtui.send.connections import CacheLimits, ConnectionCache, Destination
from mailtui.send.session import Mail, Session

pytestmark = pytest.mark.timeout(30)

A = Destination("mx.a.test", "127.0.0.2", 25)
B = Destination("mx.b.test", "127.0.0.3", 25)


class StandIn:
    """A session as the cache sees one."""

    def __init__(self, name: str, uses: int = 1, usable: bool = True):
        self.name = name
        self.uses = uses
        self.usable = usable
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.usable = False

    def __repr__(self) -> str:
        return self.name


async def test_take_gives_the_most_recent_usable_session_once():
    cache = ConnectionCache(CacheLimits(idle_time=60))
    old, new, other = StandIn("old"), StandIn("new"), StandIn("other")
    assert cache.put(A, old) and cache.put(A, new) and cache.put(B, other)
    assert cache.take(A) is new and cache.take(A) is old and cache.take(A) is None
    assert cache.take(B) is other and len(cache) == 0
    assert not any(s.closed for s in (old, new, other))


async def test_a_session_that_went_bad_while_idle_is_closed_not_given():
    cache = ConnectionCache(CacheLimits(idle_time=60))
    good, bad = StandIn("good"), StandIn("bad")
    cache.put(A, good)
    cache.put(A, bad)
    bad.usable = False                 # the peer closed it, or sent a 421
    assert cache.take(A) is good and bad.closed and len(cache) == 0


@pytest.mark.parametrize("session, kept", [
    (StandIn("fresh", uses=1), True),
    (StandIn("used up", uses=3), False),     # reuse_limit 3: it has carried 3 messages
    (StandIn("broken", usable=False), False),
])
async def test_put_closes_what_cannot_be_reused(session, kept):
    cache = ConnectionCache(CacheLimits(idle_time=60, reuse_limit=3))
    assert cache.put(A, session) is kept
    assert session.closed is not kept and len(cache) == int(kept)


async def test_room_per_destination_and_in_all_goes_to_the_newest():
    cache = ConnectionCache(CacheLimits(idle_time=60, size=3, per_destination=2))
    a1, a2, a3, b1, b2 = (StandIn(n) for n in ("a1", "a2", "a3", "b1", "b2"))
    for destination, session in ((A, a1), (A, a2), (A, a3)):
        cache.put(destination, session)
    assert a1.closed and cache.idle(A) == 2          # per destination: the oldest made way
    cache.put(B, b1)
    cache.put(B, b2)
    assert a2.closed and not a3.closed               # in all: the oldest anywhere made way
    assert (cache.idle(A), cache.idle(B), len(cache)) == (1, 2, 3)


async def test_idle_sessions_are_closed_after_the_idle_time():
    cache = ConnectionCache(CacheLimits(idle_time=0.05))
    early, late = StandIn("early"), StandIn("late")
    cache.put(A, early)
    await asyncio.sleep(0.03)
    cache.put(B, late)
    await asyncio.sleep(0.04)
    assert early.closed and not late.closed and cache.take(A) is None
    await asyncio.sleep(0.04)
    assert late.closed and len(cache) == 0


async def test_a_taken_session_is_not_closed_by_its_old_idle_timer():
    cache = ConnectionCache(CacheLimits(idle_time=0.05))
    session = StandIn("s")
    cache.put(A, session)
    assert cache.take(A) is session
    await asyncio.sleep(0.1)
    assert not session.closed


async def test_close_closes_the_idle_and_whatever_comes_back_later():
    cache = ConnectionCache(CacheLimits(idle_time=60))
    idle, busy = StandIn("idle"), StandIn("busy")
    cache.put(A, idle)
    cache.close()
    assert idle.closed and len(cache) == 0
    assert not cache.put(A, busy) and busy.closed


# -- configuration ------------------------------------------------------------------

@pytest.mark.parametrize("key, value, error", [
    ("connection_reuse_limit", 0, "delivery.connection_reuse_limit: must be at least 1"),
    ("connection_cache_time", -1, "delivery.connection_cache_time: must be at least"),
    ("connection_cache_time", 0, "delivery.connection_cache_time: must be at least"),
    ("connection_cache_size", "10", "delivery.connection_cache_size: expected an integer"),
    ("connection_cache_per_destination", 1.5,
     "delivery.connection_cache_per_destination: expected an integer"),
    ("pipelining", "yes", "delivery.pipelining: expected true or false"),
])
def test_the_cache_keys_are_checked(key, value, error):
    with pytest.raises(ConfigError, match=error):
        from_mapping({"delivery": {key: value}})


def test_the_cache_keys_reach_the_courier(tmp_path, harnesses):
    config = make_config(tmp_path, (), 25, connection_reuse_limit=7, connection_cache_time=2.5,
                         connection_cache_size=9, connection_cache_per_destination=3,
                         pipelining=False)
    courier = harnesses(tmp_path, config).transfer.courier
    assert courier.cache.limits == CacheLimits(idle_time=2.5, reuse_limit=7, size=9, per_destination=3)
    assert courier.pipelining is False


# -- real sessions ------------------------------------------------------------------

MAIL = Mail("alice@local.test", ["bob@mx.test"], b"Subject: hi\r\n\r\nhello\r\n")


async def open_session(cache: ConnectionCache, port: int) -> Session:
    destination = Destination("mx2.mx.test", MX_HOST_2, port)
    session = Session(destination, "mail.local.test", 2.0, 2.0)
    await asyncio.wait_for(session.open(cache.tls.context(destination)), 5)
    if session.tls and session.conn is not None:
        cache.tls.remember(destination, session.conn.ssl_object)
    return session


async def test_the_health_check_sees_a_peer_that_hung_up(smtp_port):
    cache = ConnectionCache(CacheLimits(idle_time=60))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        session = await open_session(cache, smtp_port)
        await session.send(MAIL)
        assert cache.put(session.destination, session) and session.usable
        [link] = sink.links
        assert link.writer is not None
        link.writer.close()
        await sink.wait_for(lambda: link.closed)
        await asyncio.sleep(0.05)
        assert not session.usable and cache.take(session.destination) is None


async def resumed_twice(port: int) -> list[bool]:
    """Three TLS sessions to one destination in turn: was each handshake a resumption?"""
    cache = ConnectionCache(CacheLimits(idle_time=60))
    resumed = []
    async with Sink(MX_HOST_2, port, tls=True) as sink:
        for _ in range(3):
            session = await open_session(cache, port)
            assert session.tls and session.conn is not None and session.conn.ssl_object is not None
            resumed.append(session.conn.ssl_object.session_reused)
            results = await session.send(MAIL)
            assert results["bob@mx.test"].ok and results["bob@mx.test"].tls
            session.close()
        assert all(link.tls for link in sink.links) and len(sink.messages) == 3
    return resumed


async def test_a_new_connection_resumes_the_tls_session_of_the_last(smtp_port):
    assert await resumed_twice(smtp_port) == [False, True, True]


def test_tls_resumption_under_uvloop(smtp_port):
    """`mailtui serve` runs on uvloop when it is there: its start_tls must offer the session too."""
    assert uvloop.run(resumed_twice(smtp_port)) == [False, True, True]


async def test_a_tls_session_is_only_offered_to_its_own_destination(smtp_port):
    cache = ConnectionCache(CacheLimits(idle_time=60))
    async with Sink(MX_HOST_2, smtp_port, tls=True):
        first = await open_session(cache, smtp_port)
        first.close()
        other = Destination("other.mx.test", MX_HOST_2, smtp_port)
        session = Session(other, "mail.local.test", 2.0, 2.0)
        await asyncio.wait_for(session.open(cache.tls.context(other)), 5)
        assert session.conn is not None and session.conn.ssl_object is not None
        assert not session.conn.ssl_object.session_reused
        session.close()
