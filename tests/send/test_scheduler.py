"""The delivery scheduler: restarts, slots and per-domain limits, stopping, admin requests.

Real DNS (dnsmasq on 127.0.0.1) and real SMTP servers (aiosmtpd on 127.0.0.2
and up) behind the real transfer agent; see tests/dnsworld.py.
"""

from __future__ import annotations

import asyncio

import pytest
from delivery_harness import (
    WIRE_BODY,
    harnesses,  # noqa: F401 (a fixture)
    make_config,
    smtp_port,  # noqa: F401 (a fixture)
    spool_files,
    until,
)
from dnsworld import A_ONLY_HOST, MX_HOST_2, FakeMX

from mailtui.events import Deferred, DeliveredRemote, DeliveryAttempt

pytestmark = pytest.mark.timeout(30)


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


async def test_bounce_now_and_retry_now(dns_world, smtp_port, tmp_path, harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port, retry_intervals=(3600,),
                         max_attempts=10)
    h = harnesses(tmp_path, config).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        first = await h.enqueue(["later@mx.test"])
        second = await h.enqueue(["bob@mx.test", "later2@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, Deferred), count=2, timeout=10)
        assert await h.scheduler.retry_now(second.id)
        await h.events.wait_for(lambda e: isinstance(e, Deferred), count=3, timeout=10)
        assert [m.rcpt_tos for m in mx.messages] == [["bob@mx.test"]]

        assert await h.scheduler.bounce_now(first.id)
        await h.wait_settled(first.id)
    assert not await h.scheduler.bounce_now(first.id)
    assert not await h.scheduler.retry_now(first.id)
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
    # The spool files go before the last attempt ends (the directory fsync runs after).
    await asyncio.wait_for(until(lambda: h.scheduler.status()["active"] == 0), 5)
    assert h.scheduler.status()["parked"] == 0


async def test_stop_gives_attempts_a_grace_period(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port, data_delay=0.3) as mx:
        item = await h.enqueue(["bob@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, DeliveryAttempt), timeout=5)
        await asyncio.sleep(0.1)
        await asyncio.wait_for(h.scheduler.stop(grace=3), 5)
        assert [m.rcpt_tos for m in mx.messages] == [["bob@mx.test"]]
    assert h.events.of(DeliveredRemote) and spool_files(tmp_path) == []
    assert item.id and h.scheduler.status()["active"] == 0


async def test_stop_after_grace_leaves_the_message_for_retry(dns_world, smtp_port, tmp_path,
                                                             harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port)
    first = harnesses(tmp_path, config).start()
    async with FakeMX(MX_HOST_2, smtp_port) as stuck:
        stuck.handler.hold = asyncio.Event()
        item = await first.enqueue(["bob@mx.test"])
        await first.events.wait_for(lambda e: isinstance(e, DeliveryAttempt), timeout=5)
        await asyncio.sleep(0.2)   # the session is now waiting in DATA
        await asyncio.wait_for(first.scheduler.stop(grace=0.1), 5)
        stuck.handler.hold.set()
    assert not first.events.of(DeliveredRemote) and not first.events.of(Deferred)
    assert spool_files(tmp_path) == [f"{item.id}.eml", f"{item.id}.json"]
    assert not item.in_flight and first.scheduler.status()["active"] == 0

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
        assert await h.scheduler.remove_now(running.id)
        assert h.queue.get(running.id) is running      # not while the attempt runs
        mx.handler.hold.set()
        await h.wait_settled(running.id)
        waiting = await h.enqueue(["later@mx.test"])
        await h.events.wait_for(lambda e: isinstance(e, Deferred) and e.msg_id == waiting.id,
                                timeout=5)
        await asyncio.wait_for(until(lambda: not waiting.in_flight), 5)
        assert await h.scheduler.remove_now(waiting.id)
        assert h.queue.get(waiting.id) is None
        assert not await h.scheduler.remove_now(waiting.id)
    assert h.dsns.sent == [] and spool_files(tmp_path) == []

