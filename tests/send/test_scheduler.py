"""The delivery scheduler: slots and per-domain limits, admin requests, stopping, restarts.

First the scheduler alone, in front of a transfer agent whose attempts end
when the test says (no SMTP, no DNS: the scheduler knows neither); then with
the real transfer agent, real DNS (dnsmasq on 127.0.0.1) and real SMTP
servers (aiosmtpd on 127.0.0.2 and up); see tests/dnsworld.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from delivery_harness import (
    BODY,
    WIRE_BODY,
    harnesses_fixture,  # noqa: F401 (a fixture)
    make_config,
    smtp_port_fixture,  # noqa: F401 (a fixture)
    spool_files,
    until,
)
from dnsworld import A_ONLY_HOST, MX_HOST_2, EventLog, FakeMX

from mailtui.events import Deferred, DeliveredRemote, DeliveryAttempt, EventBus, Notice
from mailtui.send.scheduler import Scheduler, busy_domain
from mailtui.store.queue import Queue, QueueItem

pytestmark = pytest.mark.timeout(30)


# -- pure rules ------------------------------------------------------------------

@pytest.mark.parametrize("domains, active, limit, busy", [
    (set(), {}, 1, None),
    ({"a.test"}, {}, 1, None),
    ({"a.test"}, {"a.test": 1}, 1, "a.test"),
    ({"a.test"}, {"a.test": 1}, 2, None),
    ({"a.test"}, Counter({"a.test": 0}), 1, None),
    ({"c.test", "b.test"}, {"b.test": 2, "c.test": 2}, 2, "b.test"),
    ({"b.test", "c.test"}, {"a.test": 5, "c.test": 1}, 1, "c.test"),
])
def test_busy_domain(domains, active, limit, busy):
    assert busy_domain(domains, active, limit) == busy


# -- the scheduler alone -----------------------------------------------------------

class GatedTransfer:
    """A transfer agent whose attempts end when the test opens their gate.

    An attempt then delivers every pending recipient (or defers them, or
    fails them if a bounce was requested), and saves and schedules the
    message as the real one does.
    """

    def __init__(self, queue: Queue):
        self.queue = queue
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.bounce_answers: list[bool] = []
        self.bounced: list[str] = []
        self.result = "delivered"
        self.error: Exception | None = None
        self.closed = 0

    async def attempt(self, item: QueueItem, bounce_requested) -> None:
        gate = self.gates[item.id] = asyncio.Event()
        self.started.append(item.id)
        await gate.wait()
        if self.error is not None:
            raise self.error
        self.bounce_answers.append(bounce_requested())
        for rcpt in item.pending():
            rcpt.state = "failed" if self.bounce_answers[-1] else self.result
        item.attempts += 1
        await self.queue.save(item)
        self.queue.schedule(item, time.time() + self.retry_delay(item.attempts))

    async def bounce(self, item: QueueItem) -> None:
        self.bounced.append(item.id)
        for rcpt in item.pending():
            rcpt.state = "failed"
        await self.queue.save(item)

    def retry_delay(self, attempts: int) -> float:
        return 3600.0

    def close(self) -> None:
        self.closed += 1

    def open(self, item: QueueItem) -> None:
        self.gates.pop(item.id).set()


class Alone:
    """A running scheduler over a real queue, in front of a :class:`GatedTransfer`."""

    def __init__(self, tmp_path: Path, **limits):
        self.bus = EventBus()
        self.events = EventLog(self.bus)
        self.queue = Queue(tmp_path / "spool")
        self.transfer = GatedTransfer(self.queue)
        config = make_config(tmp_path, (), 25, **limits)
        self.scheduler = Scheduler(config=config, queue=self.queue, bus=self.bus,
                                   transfer=self.transfer, stop_grace=0.5)
        self.task = asyncio.create_task(self.scheduler.run())

    async def enqueue(self, *recipients: str) -> QueueItem:
        return await self.queue.enqueue("alice@local.test", recipients, BODY)

    async def started(self, count: int) -> None:
        await asyncio.wait_for(until(lambda: len(self.transfer.started) >= count), 5)
        await asyncio.sleep(0.05)  # time for anything else (wrongly) to start too

    async def settled(self, item: QueueItem) -> None:
        await asyncio.wait_for(until(lambda: self.queue.get(item.id) is None or
                                     (not item.in_flight and item.id not in self.transfer.gates)), 5)


@pytest.fixture
async def alone(tmp_path):
    made: list[Alone] = []

    def make(**limits) -> Alone:
        made.append(Alone(tmp_path, **limits))
        return made[-1]

    yield make
    for a in made:
        for gate in a.transfer.gates.values():
            gate.set()
        await asyncio.wait_for(a.scheduler.stop(), 5)
        done, _ = await asyncio.wait({a.task}, timeout=5)
        assert done, "the scheduler did not stop"
        if not a.task.cancelled():
            a.task.result()  # a bug in the loop shows here


async def test_a_busy_domain_parks_a_message_until_its_attempt_ends(alone):
    s = alone(max_concurrency=4, max_per_domain=1)
    first, second = await s.enqueue("a@x.test"), await s.enqueue("b@x.test", "c@y.test")
    other = await s.enqueue("d@y.test")
    await s.started(2)
    assert s.transfer.started == [first.id, other.id]
    assert s.scheduler.status() == {"running": True, "active": 2, "parked": 1,
                                    "active_domains": {"x.test": 1, "y.test": 1}}
    s.transfer.open(other)        # y.test is free now, x.test is not: still parked
    await s.settled(other)
    assert s.transfer.started == [first.id, other.id] and s.scheduler.status()["parked"] == 1
    s.transfer.open(first)        # the end of the attempt wakes the parked message
    await s.started(3)
    assert s.transfer.started == [first.id, other.id, second.id]
    assert s.scheduler.status()["active_domains"] == {"x.test": 1, "y.test": 1}
    s.transfer.open(second)
    await s.settled(second)
    await asyncio.wait_for(until(lambda: s.scheduler.status()["active"] == 0), 5)
    assert len(s.queue) == 0
    assert s.scheduler.status() == {"running": True, "active": 0, "parked": 0, "active_domains": {}}


async def test_no_more_attempts_than_slots(alone):
    s = alone(max_concurrency=1, max_per_domain=5)
    first, second = await s.enqueue("a@x.test"), await s.enqueue("b@y.test")
    await s.started(1)
    assert s.transfer.started == [first.id]
    assert s.scheduler.status()["active"] == 1
    s.transfer.open(first)
    await s.started(2)
    assert s.transfer.started == [first.id, second.id]
    s.transfer.open(second)
    await s.settled(second)
    assert len(s.queue) == 0


@pytest.mark.parametrize("verb, result, started, bounce_answers, left", [
    ("retry_now", "deferred", 2, [False, False], 1),   # tried again as soon as it ends
    ("bounce_now", "deferred", 1, [True], 0),          # what the attempt left pending fails
    ("remove_now", "deferred", 1, [False], 0),         # removed as soon as it ends
    ("bounce_now", "delivered", 1, [True], 0),
])
async def test_admin_requests_wait_for_the_running_attempt(alone, verb, result, started,
                                                           bounce_answers, left):
    s = alone()
    s.transfer.result = result
    item = await s.enqueue("a@x.test")
    await s.started(1)
    assert await getattr(s.scheduler, verb)(item.id)
    assert s.queue.get(item.id) is item and item.in_flight   # nothing happens while it runs
    s.transfer.open(item)
    await s.started(started)
    if started == 2:
        s.transfer.open(item)
    await s.settled(item)
    assert len(s.transfer.started) == started and s.transfer.bounce_answers == bounce_answers
    assert len(s.queue) == left and s.transfer.bounced == []
    assert not item.in_flight


async def test_admin_verbs_act_at_once_on_a_waiting_message(alone):
    s = alone()
    s.transfer.result = "deferred"
    first, second = await s.enqueue("a@x.test"), await s.enqueue("b@y.test")
    await s.started(2)
    s.transfer.open(first), s.transfer.open(second)
    await s.settled(first), await s.settled(second)
    assert await s.scheduler.bounce_now(first.id)
    assert s.transfer.bounced == [first.id] and s.queue.get(first.id) is None
    assert not await s.scheduler.bounce_now(first.id)
    assert await s.scheduler.remove_now(second.id)
    assert s.queue.get(second.id) is None and not await s.scheduler.remove_now(second.id)
    assert not await s.scheduler.retry_now(second.id)


async def test_a_broken_attempt_costs_a_retry_delay_not_the_scheduler(alone):
    s = alone()
    s.transfer.error = RuntimeError("a bug")
    broken = await s.enqueue("a@x.test")
    await s.started(1)
    s.transfer.open(broken)
    [notice] = await s.events.wait_for(lambda e: isinstance(e, Notice), timeout=5)
    assert notice.level == "error" and broken.id in notice.text and "a bug" in notice.text
    await s.settled(broken)
    assert broken.next_attempt == pytest.approx(time.time() + 3600, abs=60)
    s.transfer.error = None
    fine = await s.enqueue("b@x.test")
    await s.started(2)
    s.transfer.open(fine)
    await s.settled(fine)
    kept = s.queue.get(broken.id)     # read back from the spool: the queue keeps no more between attempts
    assert s.queue.get(fine.id) is None and kept is not None and kept.next_attempt == broken.next_attempt


async def test_cancelling_the_scheduler_abandons_its_attempts(alone):
    s = alone(max_concurrency=4, max_per_domain=1)
    running, parked = await s.enqueue("a@x.test"), await s.enqueue("b@x.test")
    await s.started(1)
    assert s.scheduler.status()["parked"] == 1
    s.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(s.task, 5)
    await asyncio.wait_for(until(lambda: s.scheduler.status()["active"] == 0), 5)
    assert not running.in_flight and not parked.in_flight
    assert s.scheduler.status() == {"running": False, "active": 0, "parked": 0, "active_domains": {}}
    assert len(s.queue) == 2 and s.transfer.bounce_answers == []
    assert s.transfer.closed == 1


async def test_stop_closes_the_connections_once_the_attempts_are_over(alone):
    s = alone(max_concurrency=4, max_per_domain=1)
    item = await s.enqueue("a@x.test")
    await s.started(1)
    stopping = asyncio.create_task(s.scheduler.stop(grace=5))
    await asyncio.sleep(0.05)
    assert s.transfer.closed == 0      # the running attempt may still use its connection
    s.transfer.open(item)
    await asyncio.wait_for(stopping, 5)
    assert s.transfer.closed == 1 and s.transfer.bounce_answers == [False]


# -- with the real transfer agent, DNS and SMTP ----------------------------------------


async def test_restart_picks_up_a_deferred_message(dns_world, smtp_port, tmp_path, harnesses):
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port, retry_intervals=(0.3,),
                         max_attempts=10)
    first = harnesses(tmp_path, config).start()
    item = await first.enqueue(["bob@mx.test"])
    [deferred] = await first.events.wait_for(lambda e: isinstance(e, Deferred), timeout=10)
    assert "connection refused" in deferred.error
    await first.stop()
    assert spool_files(tmp_path) == [f"{item.id}.json", f"{item.id}.msg"]

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
    assert second.events.of(DeliveryAttempt)[0].attempt == reloaded.attempts + 1   # (reloaded: as on disk before)
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
    assert spool_files(tmp_path) == [f"{second.id}.json", f"{second.id}.msg"]


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
    assert spool_files(tmp_path) == [f"{item.id}.msg"]   # as it arrived: no attempt ended
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

