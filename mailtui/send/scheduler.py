"""The delivery scheduler: which queued message gets an attempt, and when.

OpenSMTPD's scheduler beside its MTA: this module decides, a :class:`Transfer`
(:class:`mailtui.send.attempt.TransferAgent`) makes the attempt and knows what
its outcome means. The scheduler knows nothing of SMTP or DNS. Behaviour after
Postfix's queue manager:

* a message is due when the queue's heap says so; an attempt holds it
  (``in_flight``) until it ends, then the queue has it again;
* at most ``delivery.max_concurrency`` attempts run at once, and at most
  ``delivery.max_per_domain`` touch the same domain; a message whose domain is
  busy is parked (not polled) until an attempt for that domain ends;
* the administrator's retry, bounce and remove act at once on a message that
  waits; a running attempt is never interrupted (its recipients may be half
  done), so on a message being attempted they act as soon as it ends;
* :meth:`Scheduler.stop` gives running attempts a grace period, then cancels
  them. A cancelled attempt leaves the spool as it was before it began, so the
  message is simply tried again after the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from ..addresses import domain_of
from ..config import Config
from ..events import EventBus, Notice
from ..store.queue import Queue, QueueItem

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
_GLOBAL = ""  # parking key for messages waiting only for a free slot


class Transfer(Protocol):
    """What the scheduler needs of the transfer agent.

    Both coroutines leave ``item`` saved and scheduled in the queue (or gone
    from it); the scheduler has taken ``item`` before and releases it after.
    """

    async def attempt(self, item: QueueItem, bounce_requested: Callable[[], bool]) -> None:
        """Try ``item``'s pending recipients once; ``bounce_requested()`` True fails the rest."""

    async def bounce(self, item: QueueItem) -> None:
        """Fail ``item``'s pending recipients now and tell its sender."""

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""

    def close(self) -> None:
        """Let go of what is kept between attempts (cached connections)."""


def busy_domain(domains: Iterable[str], active: Mapping[str, int], limit: int) -> str | None:
    """The first domain (in sorted order) that already has ``limit`` attempts running."""
    for domain in sorted(domains):
        if active.get(domain, 0) >= limit:
            return domain
    return None


async def _cancel_until_done(tasks: set[asyncio.Task], poll: float = 0.1) -> None:
    """Cancel ``tasks`` and wait until they are done.

    On Python 3.11, ``asyncio.wait_for`` drops a cancellation that arrives just
    as the awaited future completes (the queue's ``wait_due`` and the SMTP
    client's connect both use it), so one ``cancel()`` is not always enough:
    repeat it.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=poll)


class Scheduler:
    """Hands due messages to the transfer agent, within the slots; serves the queue verbs.

    Implements the admin's :class:`mailtui.admin.verbs.Delivery`.
    """

    def __init__(self, *, config: Config, queue: Queue, bus: EventBus, transfer: Transfer,
                 stop_grace: float = STOP_GRACE):
        self.config = config
        self.queue = queue
        self.bus = bus
        self.transfer = transfer
        self.stop_grace = stop_grace
        self._active_total = 0
        self._active_domains: Counter[str] = Counter()
        self._parked: dict[str, deque[QueueItem]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._slot_freed = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._running = False
        self._stopping = False
        # what the administrator asked for while an attempt held the message
        self._bounce_requests: set[str] = set()
        self._retry_requests: set[str] = set()
        self._remove_requests: set[str] = set()

    # -- limits ------------------------------------------------------------------

    @property
    def _max_total(self) -> int:
        return max(1, self.config.delivery.max_concurrency)

    @property
    def _max_domain(self) -> int:
        return max(1, self.config.delivery.max_per_domain)

    def status(self) -> dict:
        """What the scheduler is doing, for the console."""
        return {"running": self._running, "active": self._active_total,
                "active_domains": dict(self._active_domains),
                "parked": sum(len(q) for q in self._parked.values())}

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Deliver due messages until :meth:`stop` (returns) or cancellation (raises)."""
        if self._running:
            raise RuntimeError("the delivery scheduler is already running")
        self._running = True
        self._stopping = False
        loop_task = self._loop_task = asyncio.create_task(self._loop(), name="delivery-loop")
        try:
            # asyncio.wait, not "await loop_task": our own cancellation must reach
            # us even if the loop's wait swallows one (see _cancel_until_done).
            await asyncio.wait({loop_task})
            error = None if loop_task.cancelled() else loop_task.exception()
            if error is not None:
                raise error  # a bug in the loop itself
        except asyncio.CancelledError:
            self._abandon()
            await _cancel_until_done({loop_task})
            raise
        finally:
            self._running = False
            self._loop_task = None

    async def _loop(self) -> None:
        while not self._stopping:
            while self._active_total >= self._max_total:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            item = await self.queue.wait_due()
            self._dispatch(item)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking messages; give running attempts ``grace`` seconds, then cancel them.

        A cancelled attempt leaves the spool as it was before it began, so the
        message is simply tried again after the next start. Then the
        connections kept open for the next attempts are closed (QUIT).
        """
        grace = self.stop_grace if grace is None else grace
        self._stopping = True
        if self._loop_task is not None:
            await _cancel_until_done({self._loop_task})
        self._release_parked()
        tasks = set(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            await _cancel_until_done(pending)
        self.transfer.close()

    def _abandon(self) -> None:
        """Hard stop: cancel attempts at once (each releases its message)."""
        self._stopping = True
        self._release_parked()
        for t in list(self._tasks.values()):
            t.cancel()
        self.transfer.close()

    def _release_parked(self) -> None:
        parked, self._parked = self._parked, {}
        for waiting in parked.values():
            for item in waiting:
                self.queue.release(item)

    # -- slots and parking ---------------------------------------------------------

    @staticmethod
    def _domains(item: QueueItem) -> set[str]:
        return {domain_of(r.address) for r in item.pending()}

    def _blocker(self, domains: set[str]) -> str | None:
        return busy_domain(domains, self._active_domains, self._max_domain)

    def _dispatch(self, item: QueueItem) -> None:
        if self._stopping:
            self.queue.release(item)
            return
        domains = self._domains(item)
        if not domains:
            self.queue.release(item)
            return
        blocker = self._blocker(domains)
        if blocker is None and self._active_total < self._max_total:
            self._start(item, domains)
        else:
            self._parked.setdefault(blocker or _GLOBAL, deque()).append(item)

    def _start(self, item: QueueItem, domains: set[str]) -> None:
        self._active_total += 1
        self._active_domains.update(domains)
        task = asyncio.create_task(self._attempt(item), name=f"delivery-{item.id}")
        self._tasks[item.id] = task
        task.add_done_callback(lambda _t: self._finished(item, domains))

    def _finished(self, item: QueueItem, domains: set[str]) -> None:
        self._tasks.pop(item.id, None)
        self._active_total -= 1
        self._active_domains.subtract(domains)
        for domain in domains:
            if self._active_domains[domain] <= 0:
                del self._active_domains[domain]
        self._kick()
        self._slot_freed.set()

    def _kick(self) -> None:
        """Start parked messages that now fit, oldest first."""
        if self._stopping:
            return
        for key in list(self._parked):
            waiting = self._parked.get(key)
            while waiting and self._active_total < self._max_total:
                item = waiting[0]
                if self.queue.get(item.id) is not item or not item.pending():
                    waiting.popleft()  # removed meanwhile
                    self.queue.release(item)
                    continue
                domains = self._domains(item)
                blocker = self._blocker(domains)
                if blocker is not None and blocker == key:
                    break
                waiting.popleft()
                if blocker is None:
                    self._start(item, domains)
                else:
                    self._parked.setdefault(blocker, deque()).append(item)
            if waiting is not None and not waiting:
                self._parked.pop(key, None)

    def _is_parked(self, item: QueueItem) -> bool:
        return any(x is item for waiting in self._parked.values() for x in waiting)

    def _unpark(self, item: QueueItem) -> bool:
        for key, waiting in list(self._parked.items()):
            for index, x in enumerate(waiting):
                if x is item:
                    del waiting[index]
                    if not waiting:
                        del self._parked[key]
                    return True
        return False

    # -- one attempt, as the scheduler sees it ---------------------------------------

    async def _attempt(self, item: QueueItem) -> None:
        try:
            await self.transfer.attempt(item, lambda: self._take(self._bounce_requests, item))
            await self._after_attempt(item)
        except Exception as exc:  # a bug must not kill the scheduler or lose the message
            log.exception("delivery of %s failed", item.id)
            self.bus.publish(Notice(level="error",
                                    text=f"delivery of {item.id} failed unexpectedly: {exc!r}"))
            self.queue.schedule(item, time.time() + self.transfer.retry_delay(max(1, item.attempts)))
        finally:
            if self._take(self._retry_requests, item) and item.pending() and not self._stopping:
                self.queue.schedule(item, time.time())
            self.queue.release(item)

    async def _after_attempt(self, item: QueueItem) -> None:
        """Carry out a remove or a bounce asked for while the attempt ran."""
        if self._take(self._remove_requests, item):
            self._bounce_requests.discard(item.id)
            if self.queue.get(item.id) is item:
                await self.queue.finish(item)
        if self._take(self._bounce_requests, item) and item.pending():
            await self.transfer.bounce(item)

    @staticmethod
    def _take(requests: set[str], item: QueueItem) -> bool:
        """Whether ``item`` has a request waiting in ``requests``; it is used up."""
        if item.id in requests:
            requests.discard(item.id)
            return True
        return False

    # -- admin -------------------------------------------------------------------

    async def retry_now(self, msg_id: str) -> bool:
        """Make a message due now; False if there is no such message waiting."""
        item = self.queue.get(msg_id)
        if item is not None and item.in_flight:
            if not self._is_parked(item):  # an attempt is running: go again right after it
                self._retry_requests.add(item.id)
            return True  # (a parked message is already due, waiting for a free slot)
        return await self.queue.flush(msg_id) > 0

    async def bounce_now(self, msg_id: str) -> bool:
        """Fail every pending recipient of a message and tell its sender.

        A running attempt is not interrupted: it fails what it left pending.
        """
        item = self.queue.get(msg_id)
        if item is None or not item.pending():
            return False
        await self._now_or_after_attempt(item, self._bounce_requests, self.transfer.bounce)
        return True

    async def remove_now(self, msg_id: str) -> bool:
        """Remove a message without a DSN, even one being delivered right now.

        A running attempt is not interrupted (its recipients may be half
        done); the message is removed as soon as it ends.
        """
        item = self.queue.get(msg_id)
        if item is None:
            return False
        await self._now_or_after_attempt(item, self._remove_requests, self.queue.finish)
        return True

    async def _now_or_after_attempt(self, item: QueueItem, requests: set[str],
                                    action: Callable[[QueueItem], Awaitable[None]]) -> None:
        """Run ``action`` on ``item`` now, holding it as an attempt would; or, while an
        attempt holds it, leave the request in ``requests`` for when that attempt ends."""
        if item.in_flight and not self._unpark(item):
            requests.add(item.id)
            return
        item.in_flight = True
        try:
            await action(item)
        finally:
            self.queue.release(item)
