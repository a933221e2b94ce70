"""Prometheus metrics at /metrics: scraped by curl from a real server."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess

import pytest
from conftest import start_server
from prometheus_client.parser import text_string_to_metric_families

from mailtui.events import DnsLookup, MessageAccepted
from mailtui.server.metrics import Metrics, MetricsServer
from mailtui.server.stats import ServerStats

MSG = b"From: a@example.org\r\nTo: bob@localhost\r\nSubject: hi\r\n\r\nHello.\r\n"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def scrape(port: int, path: str = "/metrics", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "-S", "--max-time", "5", *args, f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=10)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path, metrics={"listen": ["127.0.0.1:0"]})
    try:
        yield srv
    finally:
        srv.stop()


def test_every_series_is_there_from_the_start_at_zero(server):
    result = scrape(server.core.port("metrics"))
    assert result.returncode == 0, result.stderr
    values = samples(result.stdout)
    for name in ("mailtui_messages_accepted_total", "mailtui_messages_deferred_total",
                 "mailtui_messages_bounced_total", "mailtui_queue_messages"):
        assert values[(name, ())] == 0
    assert values[("mailtui_messages_refused_total", (("stage", "rcpt"),))] == 0
    assert values[("mailtui_messages_delivered_total", (("where", "remote"),))] == 0
    assert values[("mailtui_sessions_total", (("proto", "imap"),))] == 0
    assert values[("mailtui_dns_failures_total", (("rtype", "MX"),))] == 0
    assert values[("mailtui_data_to_250_seconds_count", ())] == 0


def test_the_scrape_shows_the_servers_loop_lag(server):
    """The running server's own lag probe feeds the gauge: a loop held for 0.2 s shows."""
    import time
    server.run(server.core.admin.call("status", {}))      # (a turn of the server's loop)

    async def hold_the_loop() -> None:
        time.sleep(0.2)                                    # what a blocking call on the loop would do
    server.run(hold_the_loop())
    values = samples(scrape(server.core.port("metrics")).stdout)
    assert 0.15 <= values[("mailtui_event_loop_lag_seconds", ())] < 5
    again = samples(scrape(server.core.port("metrics")).stdout)
    assert again[("mailtui_event_loop_lag_seconds", ())] < values[("mailtui_event_loop_lag_seconds", ())]  # anew


def test_mail_moves_the_counters(server):
    server.add_client("loopback", "127.0.0.0/8")
    server.add_mailbox("bob@localhost")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
        c.sendmail("a@example.org", ["bob@localhost"], MSG)
        c.sendmail("a@example.org", ["carol@example.org"], MSG)   # remote: queued
        code, _ = c.rcpt("nobody@localhost")
        assert code == 503  # no MAIL: a protocol error, not a refusal
        c.mail("a@example.org")
        code, _ = c.rcpt("nobody@localhost")
        assert code == 550
    server.wait_for(lambda: server.core.stats.totals.accepted == 2)
    port = server.core.port("metrics")
    values = samples(scrape(port).stdout)
    assert values[("mailtui_messages_accepted_total", ())] == 2
    assert values[("mailtui_messages_delivered_total", (("where", "local"),))] == 1
    assert values[("mailtui_messages_refused_total", (("stage", "rcpt"),))] == 1
    assert values[("mailtui_sessions_total", (("proto", "smtp"),))] >= 1
    assert values[("mailtui_queue_messages", ())] >= 0
    assert values[("mailtui_data_to_250_seconds_count", ())] == 2


def test_only_get_and_head_of_metrics(server):
    port = server.core.port("metrics")
    assert scrape(port, "/", "-o", "/dev/null", "-w", "%{http_code}").stdout == "404"
    assert scrape(port, "/metrics", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}").stdout == "405"
    head = scrape(port, "/metrics", "-I")
    assert head.stdout.startswith("HTTP/1.1 200") and "text/plain" in head.stdout


def test_garbage_gets_400_and_the_server_goes_on(server):
    port = server.core.port("metrics")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 10_000 + b"\r\n\r\n")
        assert raw.recv(100) == b""   # over the size limit: closed, nothing rendered
    assert scrape(port).returncode == 0


def test_observe_counts_dns_failures_and_durations():
    stats = ServerStats()
    metrics = Metrics(stats, queue_size=lambda: 7, lag=lambda: 0.02)
    for event in (DnsLookup(name="x.test", rtype="MX", answer=(), rcode="SERVFAIL", duration=0.1),
                  DnsLookup(name="y.test", rtype="MX", answer=(), rcode="NXDOMAIN", duration=0.1),
                  MessageAccepted(session="S1", msg_id="M", sender="", recipients=("a@b",), size=1,
                                  store_seconds=0.004)):
        stats.observe(event)
        metrics.observe(event)
    values = samples(metrics.render().decode())
    assert values[("mailtui_dns_lookups_total", (("rtype", "MX"),))] == 2
    assert values[("mailtui_dns_failures_total", (("rtype", "MX"),))] == 1
    assert values[("mailtui_queue_messages", ())] == 7
    assert values[("mailtui_event_loop_lag_seconds", ())] == 0.02
    assert values[("mailtui_data_to_250_seconds_bucket", (("le", "0.005"),))] == 1


async def test_a_silent_client_is_dropped(monkeypatch):
    import asyncio

    from mailtui.server import metrics as module

    monkeypatch.setattr(module, "REQUEST_TIMEOUT", 0.2)
    server = await MetricsServer(Metrics(ServerStats(), queue_size=lambda: 0)).serve("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
