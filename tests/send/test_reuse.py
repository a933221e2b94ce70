"""Connection reuse end to end: the real scheduler, transfer agent and courier, real DNS
(dnsmasq), and a loopback SMTP sink (tests/send/sink.py) that counts connections and
sees how commands arrive.

mx.test's best MX (127.0.0.2) is down; the sink is its second (127.0.0.3).
"""

from __future__ import annotations

import asyncio

import pytest
from delivery_harness import (
    WIRE_BODY,
    harnesses_fixture,  # noqa: F401 (a fixture)
    make_config,
    smtp_port_fixture,  # noqa: F401 (a fixture)
    spool_files,
)
from dnsworld import MX_HOST_2
from sink import HANG_UP, Link, Sink

from mailtui.events import Deferred, DeliveredRemote

pytestmark = pytest.mark.timeout(30)


def config_for(tmp_path, dns_world, smtp_port, **delivery):
    settings = {"connection_cache_time": 30.0} | delivery
    return make_config(tmp_path, (dns_world.endpoint,), smtp_port, **settings)


async def deliver_all(h, messages: list[list[str]]) -> list[str]:
    """Queue one message per recipient list, let the harness deliver them; their ids."""
    items = [await h.enqueue(rcpts) for rcpts in messages]
    for item in items:
        await h.wait_settled(item.id)
    return [item.id for item in items]


def transactions(link: Link) -> list[list[str]]:
    """A link's commands cut into transactions (from MAIL, or the RSET before it, to DATA)."""
    cut: list[list[str]] = []
    for verb in link.verbs():
        if verb in ("RSET", "MAIL") and not (cut and cut[-1] == ["RSET"]):
            cut.append([])
        if cut:
            cut[-1].append(verb)
    return [t for t in cut if t != ["QUIT"]]


async def test_many_messages_to_one_domain_use_few_connections_with_rset_between(
        dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, max_per_domain=2))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        h.start()
        await deliver_all(h, [[f"u{i}@mx.test"] for i in range(20)])
        assert sorted(m.recipients[0] for m in sink.messages) == sorted(f"u{i}@mx.test" for i in range(20))
        assert all(m.body == WIRE_BODY for m in sink.messages)
        assert 1 <= len(sink.links) <= 2      # one connection per attempt running at once
        for link in sink.links:
            assert link.verbs()[0] == "EHLO" and link.verbs().count("EHLO") == 1
            first, *rest = transactions(link)
            assert first == ["MAIL", "RCPT", "DATA"]
            assert rest == [["RSET", "MAIL", "RCPT", "DATA"]] * len(rest)
        assert sink.open_links()                # kept open for the next message
    delivered = h.events.of(DeliveredRemote)
    assert sum(e.reused for e in delivered) == 20 - len(sink.links)
    assert spool_files(tmp_path) == []


@pytest.mark.parametrize("offered, wanted, pipelined", [
    (True, True, True), (False, True, False), (True, False, False)])
async def test_pipelining_when_offered_and_wanted(offered, wanted, pipelined,
                                                  dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, max_per_domain=1,
                                       pipelining=wanted))
    async with Sink(MX_HOST_2, smtp_port, pipelining=offered) as sink:
        h.start()
        await deliver_all(h, [["a@mx.test", "b@mx.test"], ["c@mx.test"], ["d@mx.test"]])
        [link] = sink.links
        reads = link.reads()
    assert [m.recipients for m in sink.messages] == [["a@mx.test", "b@mx.test"], ["c@mx.test"],
                                                     ["d@mx.test"]]
    if pipelined:  # RFC 2920: the whole group in one write, DATA last
        assert reads == [["EHLO"], ["MAIL", "RCPT", "RCPT", "DATA"],
                         ["RSET", "MAIL", "RCPT", "DATA"], ["RSET", "MAIL", "RCPT", "DATA"]]
    else:          # one command, then its reply, then the next
        assert all(len(read) == 1 for read in reads)
        assert [r[0] for r in reads] == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA",
                                         "RSET", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]


async def test_refused_recipients_and_mail_from_on_a_pipelined_connection(
        dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, max_per_domain=1))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        h.start()
        await deliver_all(h, [["bad1@mx.test", "ok@mx.test", "bad2@mx.test"], ["bad@mx.test"],
                              ["ok2@mx.test"]])
    assert [m.recipients for m in sink.messages] == [["ok@mx.test"], ["ok2@mx.test"]]
    assert len(sink.links) == 1           # a transaction nobody was accepted in ends cleanly
    assert [recipients for _, recipients, _ in h.dsns.sent] == [["alice@local.test"]] * 2


@pytest.mark.parametrize("goodbye", ["421", "eof"])
async def test_a_cached_connection_the_peer_gave_up_on_is_not_used(goodbye, dns_world, smtp_port,
                                                                   tmp_path, harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        h.start()
        await deliver_all(h, [["a@mx.test"]])
        [link] = sink.links
        assert link.writer is not None
        before = list(link.commands)
        if goodbye == "421":   # the peer's idle timeout, as Postfix's smtpd says it
            link.writer.write(b"421 4.4.2 sink: timeout exceeded\r\n")
        else:
            link.writer.write_eof()
        await asyncio.sleep(0.1)
        await deliver_all(h, [["b@mx.test"]])
        assert link.commands == before     # the client knew without trying: not a word more
    assert [(m.link, m.recipients) for m in sink.messages] == [(1, ["a@mx.test"]), (2, ["b@mx.test"])]
    assert not h.events.of(Deferred)


@pytest.mark.parametrize("stage", ["RSET", "MAIL", "RCPT", "DATA", "."])
@pytest.mark.parametrize("fault", ["421 4.3.2 sink: shutting down", HANG_UP])
async def test_a_reused_connection_that_fails_mid_way_is_not_the_messages_failure(
        stage, fault, dns_world, smtp_port, tmp_path, harnesses):
    async def hook(link: Link, verb: str) -> str | None:
        reused = link.transactions >= 2 or verb == "RSET"
        return fault if reused and verb == stage else None

    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, max_per_domain=1))
    async with Sink(MX_HOST_2, smtp_port, hook=hook) as sink:
        h.start()
        await deliver_all(h, [["a@mx.test"], ["b@mx.test", "bad@mx.test"]])
    assert [(m.link, m.recipients) for m in sink.messages] == [
        (1, ["a@mx.test"]), (2, ["b@mx.test"])]   # each once: b's again at once, on a fresh one
    assert not h.events.of(Deferred)
    assert len(h.dsns.sent) == 1 and "bad@mx.test" in h.dsns.parsed().as_string()
    assert not any(e.reused for e in h.events.of(DeliveredRemote))


async def test_a_fresh_connection_that_fails_is_the_outcome_after_one_retry(
        dns_world, smtp_port, tmp_path, harnesses):
    failing = False

    async def hook(link: Link, verb: str) -> str | None:
        return "421 4.3.2 sink: shutting down" if failing and verb == "MAIL" else None

    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, max_per_domain=1,
                                       retry_intervals=(3600,)))
    async with Sink(MX_HOST_2, smtp_port, hook=hook) as sink:
        h.start()
        await deliver_all(h, [["a@mx.test"]])
        failing = True
        await h.enqueue(["b@mx.test"])
        [deferred] = await h.events.wait_for(lambda e: isinstance(e, Deferred))
    assert len(sink.links) == 2           # the cached one, then one fresh one: no third
    assert "said: 421 4.3.2 sink: shutting down (in reply to MAIL FROM command)" in deferred.error


async def test_too_many_recipients_go_in_the_next_transaction(dns_world, smtp_port, tmp_path,
                                                              harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port))
    rcpts = [f"u{i}@mx.test" for i in range(5)]
    async with Sink(MX_HOST_2, smtp_port, max_recipients=2) as sink:
        h.start()
        await deliver_all(h, [rcpts])
    assert [(m.link, m.transaction, m.recipients) for m in sink.messages] == [
        (1, 1, rcpts[:2]), (1, 2, rcpts[2:4]), (1, 3, rcpts[4:])]
    assert not h.events.of(Deferred)
    assert sorted(e.recipient for e in h.events.of(DeliveredRemote)) == rcpts


async def test_shutdown_says_quit_on_idle_connections(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, connection_cache_time=60.0))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        h.start()
        await deliver_all(h, [["a@mx.test"], ["b@mx.test"]])
        assert sink.open_links()
        await h.stop()
        await sink.wait_for(lambda: not sink.open_links(), timeout=2)
    assert all(link.quit for link in sink.links)


async def test_idle_connections_are_closed_after_the_cache_time(dns_world, smtp_port, tmp_path,
                                                                harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, connection_cache_time=0.3))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        h.start()
        await deliver_all(h, [["a@mx.test"]])
        assert sink.open_links()
        await sink.wait_for(lambda: not sink.open_links(), timeout=3)
        assert sink.links[0].quit
        await deliver_all(h, [["b@mx.test"]])
    assert len(sink.links) == 2


async def test_reuse_limit(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, config_for(tmp_path, dns_world, smtp_port, max_per_domain=1,
                                       connection_reuse_limit=3))
    async with Sink(MX_HOST_2, smtp_port) as sink:
        h.start()
        await deliver_all(h, [[f"u{i}@mx.test"] for i in range(7)])
    assert [m.link for m in sink.messages] == [1, 1, 1, 2, 2, 2, 3]
    assert sink.links[0].quit and sink.links[1].quit
