"""Prometheus metrics: counters fed by the event stream, gauges read when scraped.

Counters are bumped by a synchronous bus listener (an ``inc`` each, so exact
and cheap: the mail path never waits for it); the queue size and the
event-loop lag are read at scrape time. Every series exists from start at 0,
so a dashboard or an alert never sees a gap. prometheus-client renders the
text format; the HTTP side is a small asyncio server on the core's own loop
(prometheus-client's own server runs in a thread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import events as ev

log = logging.getLogger(__name__)

PROTOCOLS = ("smtp", "submission", "pop3", "imap")
REFUSAL_STAGES = ("connect", "mail", "rcpt", "data")
DNS_OK = ("NOERROR", "NXDOMAIN")          # an answer, even "no such domain", is not a failure
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
DELIVERY_BUCKETS = (.1, .5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400, 432000)
REQUEST_LIMIT = 8192                       # bytes of request line and headers we read
REQUEST_TIMEOUT = 10.0


class Metrics:
    """mailtui's metrics in their own registry (nothing process-global)."""

    def __init__(self, *, queue_size: Callable[[], int], lag: Callable[[], float] | None = None):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter("mailtui_messages_accepted", "Messages accepted (250 after DATA)", registry=r)
        self.refused = Counter("mailtui_messages_refused", "Commands refused by policy or limits, by stage",
                               ["stage"], registry=r)
        self.delivered = Counter("mailtui_messages_delivered",
                                 "Recipients delivered: to a local mailbox or to a remote server", ["where"],
                                 registry=r)
        self.deferred = Counter("mailtui_messages_deferred", "Recipients deferred for a later attempt", registry=r)
        self.bounced = Counter("mailtui_messages_bounced", "Recipients failed for good (a DSN goes to the sender)",
                               registry=r)
        self.sessions = Counter("mailtui_sessions", "Sessions opened, by protocol", ["proto"], registry=r)
        self.open_sessions = Gauge("mailtui_sessions_open", "Sessions open now, by protocol", ["proto"],
                                   registry=r)
        self.auth_failures = Counter("mailtui_auth_failures", "Failed logins, by protocol", ["proto"], registry=r)
        self.dns_lookups = Counter("mailtui_dns_lookups", "DNS lookups, by record type (cached answers too)",
                                   ["rtype"], registry=r)
        self.dns_failures = Counter("mailtui_dns_failures", "DNS lookups that got no usable answer "
                                    "(timeout, SERVFAIL, ...)", ["rtype"], registry=r)
        self.data_to_250 = Histogram("mailtui_data_to_250_seconds", "Time from the end of DATA to the 250 "
                                     "(making the message durable)", buckets=LATENCY_BUCKETS, registry=r)
        self.delivery_latency = Histogram("mailtui_delivery_latency_seconds", "Time from arrival to remote "
                                          "delivery", buckets=DELIVERY_BUCKETS, registry=r)
        queue = Gauge("mailtui_queue_messages", "Messages in the remote-delivery queue", registry=r)
        queue.set_function(lambda: float(queue_size()))
        if lag is not None:
            loop_lag = Gauge("mailtui_event_loop_lag_seconds", "Worst event-loop lag in the last interval",
                             registry=r)
            loop_lag.set_function(lag)
        for stage in REFUSAL_STAGES:
            self.refused.labels(stage=stage)
        for where in ("local", "remote"):
            self.delivered.labels(where=where)
        for proto in PROTOCOLS:
            self.sessions.labels(proto=proto)
            self.open_sessions.labels(proto=proto)
            self.auth_failures.labels(proto=proto)
        for rtype in ("MX", "A", "AAAA", "TXT", "PTR"):
            self.dns_lookups.labels(rtype=rtype)
            self.dns_failures.labels(rtype=rtype)

    def observe(self, event: ev.Event) -> None:
        """Bus listener: count one event (called synchronously, must stay quick)."""
        match event:
            case ev.MessageAccepted():
                self.accepted.inc()
                if event.store_seconds:
                    self.data_to_250.observe(event.store_seconds)
            case ev.ClientRefused():
                self.refused.labels(stage=event.stage).inc()
            case ev.DeliveredLocal():
                self.delivered.labels(where="local").inc()
            case ev.DeliveredRemote():
                self.delivered.labels(where="remote").inc()
                if event.queued_for:
                    self.delivery_latency.observe(event.queued_for)
            case ev.Deferred():
                self.deferred.inc()
            case ev.Bounced():
                self.bounced.inc()
            case ev.ConnectionOpened():
                self.sessions.labels(proto=event.proto).inc()
                self.open_sessions.labels(proto=event.proto).inc()
            case ev.ConnectionClosed():
                self.open_sessions.labels(proto=event.proto).dec()
            case ev.AuthFailed():
                self.auth_failures.labels(proto=event.proto).inc()
            case ev.DnsLookup():
                self.dns_lookups.labels(rtype=event.rtype).inc()
                if event.rcode not in DNS_OK:
                    self.dns_failures.labels(rtype=event.rtype).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` over HTTP/1.x, one request per connection, bounded in size and time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            writer.write(self._answer(head.split(b"\r\n", 1)[0]))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # a scrape must never take the server down
            log.exception("metrics request failed")
        finally:
            writer.close()

    def _answer(self, request_line: bytes) -> bytes:
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response(400, "Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return _response(404, "Not Found", b"try /metrics\n")
        if method not in (b"GET", b"HEAD"):
            return _response(405, "Method Not Allowed", b"GET only\n", extra="Allow: GET, HEAD\r\n")
        body = self.metrics.render()
        return _response(200, "OK", b"" if method == b"HEAD" else body, content_type=CONTENT_TYPE_LATEST,
                         length=len(body))

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self.handle, host, port, limit=REQUEST_LIMIT, reuse_address=True)


def _response(status: int, reason: str, body: bytes, *, content_type: str = "text/plain; charset=utf-8",
              length: int | None = None, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode() + body
