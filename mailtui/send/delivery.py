"""The delivery agent: takes due messages off the queue and delivers them.

Structure after chasquid (the queue holds state, the courier speaks SMTP) and
behaviour after Postfix's queue manager:

* a message is due when the queue's heap says so; one attempt covers all its
  pending recipients, grouped by domain, one SMTP transaction per domain;
* at most ``delivery.max_concurrency`` attempts run at once, and at most
  ``delivery.max_per_domain`` touch the same domain; a message whose domain is
  busy is parked (not polled) until an attempt for that domain ends;
* a temporary failure defers the recipient until the next retry interval; a
  permanent one (5xx, a domain that does not exist or takes no mail) fails it
  at once; a message that has been tried too often, or for too long, fails;
* failed recipients get one DSN per attempt, sent to the envelope sender
  through ``submit`` (never for the null sender: bounces do not bounce);
* the spool is saved after every attempt, so stopping at any point leaves a
  valid queue: at worst an attempt is made again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from typing import Awaitable, Callable

from ..config import Config
from ..dns.resolver import DnsError, MailHost, PermanentDnsError, Resolver
from ..events import (
    Bounced,
    Deferred,
    DeliveredRemote,
    DeliveryAttempt,
    EventBus,
    Notice,
)
from ..store.db import Store
from ..store.queue import Queue, QueueItem, RecipientState
from ..wire import header_section
from . import courier, retry
from .courier import Outcome
from .dsn import build_dsn

log = logging.getLogger(__name__)

Submit = Callable[[str, list[str], bytes], Awaitable[str]]

ADMIN_BOUNCE_TEXT = "removed by the administrator"
ADMIN_BOUNCE_STATUS = "5.0.0"
STOP_GRACE = 5.0
_GLOBAL = ""  # parking key for messages waiting only for a free slot


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def without_self(domain: str, hosts: list[MailHost], me: str) -> list[MailHost]:
    """Drop MX hosts no better than this server itself (RFC 5321 section 5.1).

    If this server is one of the domain's MX hosts, only the hosts with a
    lower preference are worth trying; if there are none, the mail would loop.
    """
    me = me.lower().rstrip(".")
    mine = [h.preference for h in hosts if h.name.lower() == me]
    if not mine:
        return hosts
    kept = [h for h in hosts if h.preference < min(mine)]
    if not kept:
        raise PermanentDnsError("5.4.6", f"mail for {domain} loops back to myself")
    return kept


async def _cancel_until_done(tasks: set[asyncio.Task], poll: float = 0.1) -> None:
    """Cancel ``tasks`` and wait until they are done.

    On Python 3.11, ``asyncio.wait_for`` drops a cancellation that arrives just
    as the awaited future completes (the queue's ``wait_due`` and aiosmtplib
    both use it), so one ``cancel()`` is not always enough: repeat it.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=poll)


class DeliveryAgent:
    def __init__(self, *, config: Config, queue: Queue, resolver: Resolver, bus: EventBus,
                 submit: Submit, store: Store | None = None,
                 rng: random.Random | None = None, stop_grace: float = STOP_GRACE):
        self.config = config
        self.queue = queue
        self.resolver = resolver
        self.bus = bus
        self.submit = submit
        self.store = store
        self.stop_grace = stop_grace
        self._rng = rng or random.Random()
        self._active_total = 0
        self._active_domains: Counter[str] = Counter()
        self._parked: dict[str, deque[QueueItem]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._slot_freed = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._running = False
        self._stopping = False
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
        """What the agent is doing, for the console."""
        return {"running": self._running, "active": self._active_total,
                "active_domains": dict(self._active_domains),
                "parked": sum(len(q) for q in self._parked.values())}

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Deliver due messages until :meth:`stop` (returns) or cancellation (raises)."""
        if self._running:
            raise RuntimeError("the delivery agent is already running")
        self._running = True
        self._stopping = False
        loop_task = self._loop_task = asyncio.create_task(self._loop(), name="delivery-loop")
        try:
            # asyncio.wait, not "await loop_task": our own cancellation must reach
            # us even if the loop's wait swallows one (see _cancel_until_done).
            await asyncio.wait({loop_task})
            if not loop_task.cancelled() and loop_task.exception() is not None:
                raise loop_task.exception()  # a bug in the loop itself
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
        message is simply tried again after the next start.
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

    def _abandon(self) -> None:
        """Hard stop: cancel attempts at once (each releases its message)."""
        self._stopping = True
        self._release_parked()
        for t in list(self._tasks.values()):
            t.cancel()

    def _release_parked(self) -> None:
        parked, self._parked = self._parked, {}
        for waiting in parked.values():
            for item in waiting:
                self.queue.release(item)

    # -- scheduling --------------------------------------------------------------

    def _domains(self, item: QueueItem) -> set[str]:
        return {domain_of(r.address) for r in item.pending()}

    def _blocker(self, domains: set[str]) -> str | None:
        for domain in sorted(domains):
            if self._active_domains[domain] >= self._max_domain:
                return domain
        return None

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

    # -- one attempt -------------------------------------------------------------

    async def _attempt(self, item: QueueItem) -> None:
        try:
            await self._deliver(item)
            if item.id in self._remove_requests:  # asked for while this attempt ran
                self._remove_requests.discard(item.id)
                self._bounce_requests.discard(item.id)
                if self.queue.get(item.id) is item:
                    await self.queue.finish(item)
            if item.id in self._bounce_requests:  # asked for while this attempt ran
                self._bounce_requests.discard(item.id)
                if item.pending():
                    await self._admin_bounce(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the agent or lose the message
            log.exception("delivery of %s failed", item.id)
            self._notice("error", f"delivery of {item.id} failed unexpectedly: {exc!r}")
            self.queue.schedule(item, time.time() + self._delay(max(1, item.attempts)))
        finally:
            if item.id in self._retry_requests:  # asked for while this attempt ran
                self._retry_requests.discard(item.id)
                if item.pending() and not self._stopping:
                    self.queue.schedule(item, time.time())
            self.queue.release(item)

    def _delay(self, attempts: int) -> float:
        d = self.config.delivery
        return retry.next_delay(attempts, d.retry_intervals, d.retry_jitter, self._rng)

    async def _read_body(self, item: QueueItem) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, self.queue.read_body, item)

    async def _deliver(self, item: QueueItem) -> None:
        try:
            body = await self._read_body(item)
        except FileNotFoundError:
            # What Queue.load() does with an envelope whose body is gone.
            self._notice("error", f"queue {item.id}: the spooled message is missing; "
                                  "its envelope was dropped")
            await self.queue.finish(item)
            return
        except OSError as exc:
            item.last_error = f"cannot read the spooled message: {exc.strerror or exc}"
            self._notice("error", f"queue {item.id}: {item.last_error}")
            self.queue.schedule(item, time.time() + self._delay(max(1, item.attempts + 1)))
            return

        groups: dict[str, list[RecipientState]] = {}
        for rcpt in item.pending():
            groups.setdefault(domain_of(rcpt.address), []).append(rcpt)
        results = await asyncio.gather(
            *(self._deliver_domain(item, domain, rcpts, body) for domain, rcpts in groups.items()))

        now = time.time()
        newly_failed: list[RecipientState] = []
        deferred: list[RecipientState] = []
        delivered: list[tuple[RecipientState, Outcome]] = []
        for pairs in results:
            for rcpt, outcome in pairs:
                self._apply(rcpt, outcome, now)
                if outcome.ok:
                    delivered.append((rcpt, outcome))
                elif outcome.permanent:
                    newly_failed.append(rcpt)
                else:
                    deferred.append(rcpt)
        item.attempts += 1
        problems = deferred or newly_failed
        item.last_error = problems[0].last_error if problems else ""

        if item.id in self._bounce_requests:
            self._bounce_requests.discard(item.id)
            newly_failed += self._fail_by_admin(item, now)
            deferred = []
        reason = None
        if deferred:
            d = self.config.delivery
            reason = retry.give_up(item.attempts, item.arrival, now, d.max_attempts,
                                   d.max_queue_lifetime)
        if reason:
            for rcpt in deferred:
                rcpt.state = "failed"
                rcpt.last_error = f"{reason}; the last attempt failed: {rcpt.last_error}"
                newly_failed.append(rcpt)
            deferred = []

        next_attempt = now + self._delay(item.attempts)
        for rcpt, outcome in delivered:
            self.bus.publish(DeliveredRemote(msg_id=item.id, recipient=rcpt.address,
                                             remote_mta=outcome.remote_mta, reply=outcome.reply,
                                             tls=outcome.tls, queued_for=now - item.arrival))
            self._log(item, rcpt, "delivered", tls=outcome.tls)
        for rcpt in deferred:
            self.bus.publish(Deferred(msg_id=item.id, recipient=rcpt.address,
                                      error=rcpt.last_error, next_attempt=next_attempt,
                                      attempts=rcpt.attempts))
            self._log(item, rcpt, "deferred", next_attempt=next_attempt)
        if newly_failed:
            await self._report_failures(item, newly_failed, body)
        await self._save(item, next_attempt)

    async def _deliver_domain(self, item: QueueItem, domain: str, rcpts: list[RecipientState],
                              body: bytes) -> list[tuple[RecipientState, Outcome]]:
        addresses = list(dict.fromkeys(r.address for r in rcpts))
        self.bus.publish(DeliveryAttempt(msg_id=item.id, domain=domain,
                                         recipients=tuple(addresses), attempt=item.attempts + 1))
        d = self.config.delivery
        try:
            hosts = await self.resolver.mail_hosts(domain)
            hosts = without_self(domain, hosts, self.config.server.hostname)
            outcomes = await courier.send(
                hosts, port=d.remote_port, helo=self.config.server.hostname,
                sender=item.sender, recipients=addresses, body=body,
                smtputf8=item.smtputf8, body_8bit=item.body_8bit,
                connect_timeout=d.connect_timeout, command_timeout=d.command_timeout)
        except DnsError as exc:
            outcome = Outcome(ok=False, permanent=exc.permanent, code=0, status=exc.status,
                              text=exc.text, remote_mta="", tls=False)
            outcomes = {a: outcome for a in addresses}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("delivery of %s to %s failed", item.id, domain)
            outcome = Outcome(ok=False, permanent=False, code=0, status="4.3.0",
                              text=f"internal error while delivering to {domain}: {exc!r}",
                              remote_mta="", tls=False)
            outcomes = {a: outcome for a in addresses}
        return [(r, outcomes[r.address]) for r in rcpts]

    @staticmethod
    def _apply(rcpt: RecipientState, outcome: Outcome, now: float) -> None:
        rcpt.attempts += 1
        rcpt.updated = now
        rcpt.status = outcome.status
        rcpt.diagnostic = outcome.diagnostic or (
            f"X-mailtui; {outcome.text}" if not outcome.ok else "")
        rcpt.remote_mta = f"dns; {outcome.remote_mta}" if outcome.remote_mta else ""
        if outcome.ok:
            rcpt.state = "delivered"
            rcpt.last_error = ""
        else:
            rcpt.state = "failed" if outcome.permanent else "deferred"
            rcpt.last_error = outcome.text

    def _fail_by_admin(self, item: QueueItem, now: float) -> list[RecipientState]:
        failed = []
        for rcpt in item.pending():
            rcpt.state = "failed"
            rcpt.status = ADMIN_BOUNCE_STATUS
            rcpt.last_error = ADMIN_BOUNCE_TEXT
            rcpt.diagnostic = f"X-mailtui; {ADMIN_BOUNCE_TEXT}"
            rcpt.updated = now
            failed.append(rcpt)
        return failed

    async def _report_failures(self, item: QueueItem, failed: list[RecipientState],
                               body: bytes) -> None:
        dsn_id = ""
        if item.sender:
            try:
                dsn = build_dsn(item, failed, reporting_mta=self.config.server.hostname,
                                original_headers=header_section(body), now=time.time())
                dsn_id = await self.submit("", [item.sender], dsn)
                item.dsn_sent = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("DSN for %s not sent", item.id, exc_info=True)
                self._notice("error", f"could not send the bounce for message {item.id} "
                                      f"to {item.sender}: {exc}; the bounce was dropped")
        else:
            log.info("%s: null sender, no bounce sent for %s", item.id,
                     ", ".join(r.address for r in failed))
        for rcpt in failed:
            self.bus.publish(Bounced(msg_id=item.id, recipient=rcpt.address,
                                     error=rcpt.last_error, dsn_id=dsn_id or ""))
            self._log(item, rcpt, "bounced", dsn_id=dsn_id or "")

    async def _save(self, item: QueueItem, next_attempt: float) -> None:
        if item.pending():
            item.next_attempt = next_attempt
        if self.queue.get(item.id) is not item:
            return  # removed from the queue (by the administrator) during the attempt
        try:
            await self.queue.save(item)
        except OSError as exc:
            self._notice("error", f"could not save the state of message {item.id}: {exc}")
        self.queue.schedule(item, item.next_attempt)

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
        """Fail every pending recipient of a message and tell its sender."""
        item = self.queue.get(msg_id)
        if item is None or not item.pending():
            return False
        if item.in_flight and not self._unpark(item):
            # An attempt is running: it fails what is left when it ends.
            self._bounce_requests.add(item.id)
            return True
        item.in_flight = True
        try:
            await self._admin_bounce(item)
        finally:
            self.queue.release(item)
        return True

    async def remove_now(self, msg_id: str) -> bool:
        """Remove a message without a DSN, even one being delivered right now.

        A running attempt is not interrupted (its recipients may be half
        done); the message is removed as soon as it ends.
        """
        item = self.queue.get(msg_id)
        if item is None:
            return False
        if item.in_flight and not self._unpark(item):
            self._remove_requests.add(item.id)
            return True
        item.in_flight = True
        try:
            await self.queue.finish(item)
        finally:
            self.queue.release(item)
        return True

    async def _admin_bounce(self, item: QueueItem) -> None:
        failed = self._fail_by_admin(item, time.time())
        try:
            body = await self._read_body(item)
        except OSError:
            body = b""
        await self._report_failures(item, failed, body)
        await self._save(item, item.next_attempt)

    # -- records -----------------------------------------------------------------

    def _notice(self, level: str, text: str) -> None:
        self.bus.publish(Notice(level=level, text=text))

    def _log(self, item: QueueItem, rcpt: RecipientState, result: str, **extra) -> None:
        if self.store is None:
            return
        doc = {"at": time.time(), "msg_id": item.id, "sender": item.sender,
               "recipient": rcpt.address, "domain": domain_of(rcpt.address),
               "result": result, "attempt": item.attempts, "status": rcpt.status,
               "remote_mta": rcpt.remote_mta, "diagnostic": rcpt.diagnostic,
               "error": rcpt.last_error}
        doc.update(extra)
        self.store.log("deliveries", doc)
