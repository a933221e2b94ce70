"""Prometheus metrics: the server's totals, gauges and two latency histograms.

The totals are counted once, by :class:`~mailtui.server.stats.ServerStats`
(a synchronous bus listener, exact and cheap), and read at scrape time with
the queue size and the event-loop lag; the histograms observe events. Every series exists from start at 0,
so a dashboard or an alert never sees a gap. prometheus-client renders the
text format; the HTTP side is a small asyncio server on the core's own loop
(prometheus-client's own server runs in a thread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import events as ev
from .stats import ServerStats

log = logging.getLogger(__name__)

PROTOCOLS = ("smtp", "submission", "pop3", "imap")
REFUSAL_STAGES = ("connect", "mail", "rcpt", "data")
RTYPES = ("MX", "A", "AAAA", "TXT", "PTR")
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
DELIVERY_BUCKETS = (.1, .5, 1, 5, 15, 60, 300, 900, 3600, 14400, 86400, 432000)
REQUEST_LIMIT = 8192                       # bytes of request line and headers we read
REQUEST_TIMEOUT = 10.0


class Metrics:
    """mailtui's metrics in their own registry (nothing process-global).

    Counters are read from :class:`ServerStats` at scrape time (one place
    counts); the two latency histograms are observed here.
    """

    def __init__(self, stats: ServerStats, *, queue_size: Callable[[], int],
                 lag: Callable[[], float] | None = None):
        self.stats = stats
        self.queue_size = queue_size
        self.lag = lag
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_TotalsCollector(self))
        self.data_to_250 = Histogram("mailtui_data_to_250_seconds", "Time from the end of DATA to the 250 "
                                     "(making the message durable)", buckets=LATENCY_BUCKETS,
                                     registry=self.registry)
        self.delivery_latency = Histogram("mailtui_delivery_latency_seconds", "Time from arrival to remote "
                                          "delivery", buckets=DELIVERY_BUCKETS, registry=self.registry)

    def observe(self, event: ev.Event) -> None:
        """Bus listener for the histograms (called synchronously, must stay quick)."""
        if isinstance(event, ev.MessageAccepted) and event.store_seconds:
            self.data_to_250.observe(event.store_seconds)
        elif isinstance(event, ev.DeliveredRemote) and event.queued_for:
            self.delivery_latency.observe(event.queued_for)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TotalsCollector:
    """The server's totals as Prometheus families; every series present from start at 0."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        t = self.metrics.stats.totals
        yield _counter("mailtui_messages_accepted", "Messages accepted (250 after DATA)", t.accepted)
        yield _counter("mailtui_messages_refused", "Commands refused by policy or limits, by stage",
                       {(s,): t.refused_by_stage[s] for s in REFUSAL_STAGES}, ["stage"])
        yield _counter("mailtui_messages_delivered", "Recipients delivered: to a local mailbox or a remote server",
                       {("local",): t.delivered_local, ("remote",): t.delivered_remote}, ["where"])
        yield _counter("mailtui_messages_deferred", "Recipients deferred for a later attempt", t.deferred)
        yield _counter("mailtui_messages_bounced", "Recipients failed for good (a DSN goes to the sender)",
                       t.bounced)
        protos = sorted(set(PROTOCOLS) | set(t.sessions))
        yield _counter("mailtui_sessions", "Sessions opened, by protocol",
                       {(p,): t.sessions[p] for p in protos}, ["proto"])
        gauge = GaugeMetricFamily("mailtui_sessions_open", "Sessions open now, by protocol", labels=["proto"])
        for p in protos:
            gauge.add_metric([p], t.open_sessions[p])
        yield gauge
        yield _counter("mailtui_auth_failures", "Failed logins, by protocol",
                       {(p,): t.auth_failures_by_proto[p] for p in protos}, ["proto"])
        rtypes = sorted(set(RTYPES) | set(t.dns_lookups))
        yield _counter("mailtui_dns_lookups", "DNS lookups, by record type (cached answers too)",
                       {(r,): t.dns_lookups[r] for r in rtypes}, ["rtype"])
        yield _counter("mailtui_dns_failures", "DNS lookups that got no usable answer (timeout, SERVFAIL, ...)",
                       {(r,): t.dns_failures[r] for r in rtypes}, ["rtype"])
        yield GaugeMetricFamily("mailtui_queue_messages", "Messages in the remote-delivery queue",
                                value=self.metrics.queue_size())
        if self.metrics.lag is not None:
            yield GaugeMetricFamily("mailtui_event_loop_lag_seconds", "Worst event-loop lag since the previous scrape",
                                    value=self.metrics.lag())


def _counter(name: str, text: str, values: int | dict[tuple[str, ...], int],
             labels: list[str] | None = None) -> CounterMetricFamily:
    if labels is None:
        return CounterMetricFamily(name, text, value=values)
    family = CounterMetricFamily(name, text, labels=labels)
    for label_values, value in values.items():
        family.add_metric(list(label_values), value)
    return family


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
