"""One delivery attempt of one message, and what its outcome means for the queue entry.

The transfer half of remote delivery (OpenSMTPD's MTA beside its scheduler:
:mod:`mailtui.send.scheduler` decides which message and when, this module
makes the attempt). Structure after chasquid (the queue holds a state per
recipient, the courier only carries mail), behaviour after Postfix:

* one attempt covers all the message's pending recipients, grouped by
  domain, one SMTP transaction per domain, all domains at once;
* a temporary failure defers the recipient until the next retry interval; a
  permanent one (5xx, a domain that does not exist or takes no mail) fails it
  at once; a message that has been tried too often, or for too long, fails;
* failed recipients get one DSN per attempt, sent to the envelope sender
  through ``submit`` (never for the null sender: bounces do not bounce);
* the spool is saved after every attempt, so stopping at any point leaves a
  valid queue: at worst an attempt is made again. A cancelled attempt saves
  nothing: it leaves the spool as it was before it began.

The decisions (:func:`settle` and the functions it uses, :func:`without_self`,
:func:`error_outcome`) are pure and tested in tables; :class:`TransferAgent`
does the I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..addresses import domain_of
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
from ..mailauth.mtasts import MtaSts
from ..store.db import Store
from ..store.queue import Queue, QueueItem, RecipientState
from ..wire import header_section
from . import retry
from .connections import CacheLimits, ConnectionCache
from .courier import Courier, Outcome
from .dsn import build_dsn
from .smtp_courier import SmtpCourier
from .stsroute import Route, route, testing_report

log = logging.getLogger(__name__)

ADMIN_BOUNCE_TEXT = "removed by the administrator"
ADMIN_BOUNCE_STATUS = "5.0.0"


class Submit(Protocol):
    """Hands a message the server wrote itself (a DSN) to intake, as if it had arrived.

    Local recipients get it in their mailbox, others through the queue; the
    answer is its queue or message id. Raises when it cannot be taken (an
    unknown local mailbox, a full disk): the DSN is then dropped with a notice.
    """

    async def __call__(self, sender: str, recipients: list[str], body: bytes, /) -> str: ...


# -- the decisions (pure) ----------------------------------------------------------

@dataclass
class Verdict:
    """Where one attempt left the recipients it tried."""

    delivered: list[tuple[RecipientState, Outcome]] = field(default_factory=list)
    deferred: list[RecipientState] = field(default_factory=list)
    failed: list[RecipientState] = field(default_factory=list)  # by this attempt: owed a DSN


def by_domain(recipients: Iterable[RecipientState]) -> dict[str, list[RecipientState]]:
    """Recipients grouped by domain (one transaction each), in their order."""
    groups: dict[str, list[RecipientState]] = {}
    for rcpt in recipients:
        groups.setdefault(domain_of(rcpt.address), []).append(rcpt)
    return groups


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


def error_outcome(domain: str, exc: Exception) -> Outcome:
    """The outcome for each recipient at ``domain`` when no courier answered.

    A DNS answer is as permanent as the DNS error says; anything else is a
    bug of ours, which must not bounce mail: it defers it.
    """
    if isinstance(exc, DnsError):
        return Outcome(ok=False, permanent=exc.permanent, code=0, status=exc.status,
                       text=exc.text, remote_mta="", tls=False)
    return Outcome(ok=False, permanent=False, code=0, status="4.3.0",
                   text=f"internal error while delivering to {domain}: {exc!r}",
                   remote_mta="", tls=False)


def record(rcpt: RecipientState, outcome: Outcome, now: float) -> None:
    """Write one courier outcome into the recipient's queue state."""
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


def fail_by_admin(item: QueueItem, now: float) -> list[RecipientState]:
    """Fail every pending recipient of ``item``: the administrator bounced it."""
    failed = []
    for rcpt in item.pending():
        rcpt.state = "failed"
        rcpt.status = ADMIN_BOUNCE_STATUS
        rcpt.last_error = ADMIN_BOUNCE_TEXT
        rcpt.diagnostic = f"X-mailtui; {ADMIN_BOUNCE_TEXT}"
        rcpt.updated = now
        failed.append(rcpt)
    return failed


def settle(item: QueueItem, results: Iterable[tuple[RecipientState, Outcome]], now: float, *,
           bounce: bool, max_attempts: int, max_lifetime: float) -> Verdict:
    """Apply one attempt's ``results`` to ``item``, and say who was delivered, deferred, failed.

    A deferred recipient fails too when the administrator bounced the message
    while the attempt ran (``bounce``), or when the message has been tried too
    often or too long; its last error then says why.
    """
    verdict = Verdict()
    for rcpt, outcome in results:
        record(rcpt, outcome, now)
        if outcome.ok:
            verdict.delivered.append((rcpt, outcome))
        elif outcome.permanent:
            verdict.failed.append(rcpt)
        else:
            verdict.deferred.append(rcpt)
    item.attempts += 1
    problems = verdict.deferred or verdict.failed
    item.last_error = problems[0].last_error if problems else ""
    if bounce:
        verdict.failed += fail_by_admin(item, now)
        verdict.deferred = []
    elif verdict.deferred:
        reason = retry.give_up(item.attempts, item.arrival, now, max_attempts, max_lifetime)
        if reason:
            for rcpt in verdict.deferred:
                rcpt.state = "failed"
                rcpt.last_error = f"{reason}; the last attempt failed: {rcpt.last_error}"
            verdict.failed += verdict.deferred
            verdict.deferred = []
    return verdict


def log_entry(item: QueueItem, rcpt: RecipientState, result: str, now: float, **extra) -> dict:
    """One line of the delivery log (``deliveries``) for one recipient."""
    return {"at": now, "msg_id": item.id, "sender": item.sender,
            "recipient": rcpt.address, "domain": domain_of(rcpt.address),
            "result": result, "attempt": item.attempts, "status": rcpt.status,
            "remote_mta": rcpt.remote_mta, "diagnostic": rcpt.diagnostic,
            "error": rcpt.last_error} | extra


# -- the attempt (I/O) ---------------------------------------------------------------

class TransferAgent:
    """Makes delivery attempts; the scheduler says which message and when.

    Each method leaves ``item`` saved and scheduled for its next attempt (or
    gone from the queue); the scheduler takes it and releases it.
    """

    def __init__(self, *, config: Config, queue: Queue, resolver: Resolver, bus: EventBus,
                 submit: Submit, store: Store | None = None, courier: Courier | None = None,
                 rng: random.Random | None = None, mta_sts: MtaSts | None = None):
        d = config.delivery
        self.config = config
        self.queue = queue
        self.resolver = resolver
        self.bus = bus
        self.submit = submit
        self.store = store
        self.courier = courier or SmtpCourier(
            helo=config.server.hostname, port=d.remote_port,
            connect_timeout=d.connect_timeout, command_timeout=d.command_timeout,
            pipelining=d.pipelining, cache=ConnectionCache(CacheLimits(
                idle_time=d.connection_cache_time, reuse_limit=d.connection_reuse_limit,
                size=d.connection_cache_size, per_destination=d.connection_cache_per_destination)))
        self._rng = rng or random.Random()
        self.mta_sts = mta_sts            # None: recipient domains' MTA-STS policies are not looked up

    def close(self) -> None:
        """Close the connections kept for the next attempts (at shutdown)."""
        self.courier.close()

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (with jitter)."""
        d = self.config.delivery
        return retry.next_delay(attempts, d.retry_intervals, d.retry_jitter, self._rng)

    async def attempt(self, item: QueueItem,
                      bounce_requested: Callable[[], bool] = lambda: False) -> None:
        """Try every pending recipient of ``item`` once, then record what came of it.

        ``bounce_requested`` is asked when the remote hosts have answered:
        True fails whatever they left pending (the administrator bounced the
        message meanwhile).
        """
        body = await self._body(item)
        if body is None:
            return
        groups = by_domain(item.pending())
        results = await asyncio.gather(
            *(self._deliver_domain(item, domain, rcpts, body) for domain, rcpts in groups.items()))
        now = time.time()
        d = self.config.delivery
        verdict = settle(item, [pair for pairs in results for pair in pairs], now,
                         bounce=bounce_requested(), max_attempts=d.max_attempts,
                         max_lifetime=d.max_queue_lifetime)
        next_attempt = now + self.retry_delay(item.attempts)
        self._announce(item, verdict, next_attempt)
        if verdict.failed:
            await self._report_failures(item, verdict.failed, body)
        await self._save(item, next_attempt)

    async def bounce(self, item: QueueItem) -> None:
        """Fail every pending recipient of ``item`` now and tell its sender."""
        failed = fail_by_admin(item, time.time())
        try:
            body = await self._read_body(item)
        except OSError:
            body = b""
        await self._report_failures(item, failed, body)
        await self._save(item, item.next_attempt)

    async def _read_body(self, item: QueueItem) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, self.queue.read_body, item)

    async def _body(self, item: QueueItem) -> bytes | None:
        """The spooled message; None if there is none to send (``item`` is then dealt with)."""
        try:
            return await self._read_body(item)
        except FileNotFoundError:
            # What Queue.load() does with an envelope whose body is gone.
            self._notice("error", f"queue {item.id}: the spooled message is missing; "
                                  "its envelope was dropped")
            await self.queue.finish(item)
        except OSError as exc:
            item.last_error = f"cannot read the spooled message: {exc.strerror or exc}"
            self._notice("error", f"queue {item.id}: {item.last_error}")
            self.queue.schedule(item, time.time() + self.retry_delay(max(1, item.attempts + 1)))
        return None

    async def _deliver_domain(self, item: QueueItem, domain: str, rcpts: list[RecipientState],
                              body: bytes) -> list[tuple[RecipientState, Outcome]]:
        addresses = list(dict.fromkeys(r.address for r in rcpts))
        self.bus.publish(DeliveryAttempt(msg_id=item.id, domain=domain,
                                         recipients=tuple(addresses), attempt=item.attempts + 1))
        try:
            hosts = await self.resolver.mail_hosts(domain)
            hosts = without_self(domain, hosts, self.config.server.hostname)
            way = await self._route(domain, hosts)
            if way.refused is not None:
                outcomes = dict.fromkeys(addresses, way.refused)
            else:
                outcomes = await self.courier.deliver(
                    way.hosts, sender=item.sender, recipients=addresses, body=body,
                    smtputf8=item.smtputf8, body_8bit=item.body_8bit,
                    require_tls=way.require_tls, verify_tls=way.verify_tls)
                outcomes = self._under_policy(way, outcomes)
        except Exception as exc:
            if not isinstance(exc, DnsError):
                log.exception("delivery of %s to %s failed", item.id, domain)
            outcomes = dict.fromkeys(addresses, error_outcome(domain, exc))
        return [(r, outcomes[r.address]) for r in rcpts]

    async def _route(self, domain: str, hosts: list[MailHost]) -> Route:
        """The MX hosts and TLS the domain's MTA-STS policy allows (address literals have none)."""
        if self.mta_sts is None or domain.startswith("["):
            return Route(hosts)
        return route(await self.mta_sts.policy_for(domain), hosts, self.mta_sts.tls_context())

    def _under_policy(self, way: Route, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
        """Outcomes marked with the MTA-STS mode they went under; testing mode's findings told."""
        if not way.mode:
            return outcomes
        if way.policy is not None and way.mode == "testing":
            report = testing_report(way.policy, outcomes.values())
            if report:
                self._notice("warning", report)
        return {address: replace(outcome, mta_sts=way.mode) for address, outcome in outcomes.items()}

    def _announce(self, item: QueueItem, verdict: Verdict, next_attempt: float) -> None:
        """Events and delivery log for the recipients delivered and deferred."""
        for rcpt, outcome in verdict.delivered:
            self.bus.publish(DeliveredRemote(msg_id=item.id, recipient=rcpt.address,
                                             remote_mta=outcome.remote_mta, reply=outcome.reply,
                                             tls=outcome.tls, reused=outcome.reused, mta_sts=outcome.mta_sts,
                                             queued_for=time.time() - item.arrival))
            self._log(item, rcpt, "delivered", tls=outcome.tls, reused=outcome.reused,
                      mta_sts=outcome.mta_sts)
        for rcpt in verdict.deferred:
            self.bus.publish(Deferred(msg_id=item.id, recipient=rcpt.address,
                                      error=rcpt.last_error, next_attempt=next_attempt,
                                      attempts=rcpt.attempts))
            self._log(item, rcpt, "deferred", next_attempt=next_attempt)

    async def _report_failures(self, item: QueueItem, failed: list[RecipientState],
                               body: bytes) -> None:
        dsn_id = await self._send_dsn(item, failed, body)
        for rcpt in failed:
            self.bus.publish(Bounced(msg_id=item.id, recipient=rcpt.address,
                                     error=rcpt.last_error, dsn_id=dsn_id))
            self._log(item, rcpt, "bounced", dsn_id=dsn_id)

    async def _send_dsn(self, item: QueueItem, failed: list[RecipientState], body: bytes) -> str:
        """Send the sender one DSN for ``failed``; its id, or "" if none went."""
        if not item.sender:
            log.info("%s: null sender, no bounce sent for %s", item.id,
                     ", ".join(r.address for r in failed))
            return ""
        try:
            dsn = build_dsn(item, failed, reporting_mta=self.config.server.hostname,
                            original_headers=header_section(body), now=time.time())
            dsn_id = await self.submit("", [item.sender], dsn)
        except Exception as exc:
            log.warning("DSN for %s not sent", item.id, exc_info=True)
            self._notice("error", f"could not send the bounce for message {item.id} "
                                  f"to {item.sender}: {exc}; the bounce was dropped")
            return ""
        item.dsn_sent = True
        return dsn_id or ""

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

    # -- records -------------------------------------------------------------------

    def _notice(self, level: str, text: str) -> None:
        self.bus.publish(Notice(level=level, text=text))

    def _log(self, item: QueueItem, rcpt: RecipientState, result: str, **extra) -> None:
        if self.store is not None:
            self.store.log("deliveries", log_entry(item, rcpt, result, time.time(), **extra))
