"""The status line: counts, queue and loop lag, from ``mailtui serve`` and the control socket."""

from __future__ import annotations

import asyncio
import io
import signal
import smtplib
import time

import pytest
from harness import make_config
from rich.console import Console
from test_faults import Serve

from mailtui import events as ev
from mailtui.admin.control import ControlError, call
from mailtui.frontends.serve import run_headless
from mailtui.server.lag import LagProbe
from mailtui.server.stats import ServerStats
from mailtui.server.status import StatusReporter

pytestmark = pytest.mark.timeout(60)


class FakeQueue:
    def __init__(self, size: int, scanning: bool):
        self.size, self.scanning = size, scanning

    def __len__(self) -> int:
        return self.size


def accepted(n: int) -> ev.MessageAccepted:
    return ev.MessageAccepted(session=f"S{n}", msg_id=f"M{n}", sender="a@b.test", recipients=("c@d.test",),
                              size=10)


def test_counters_and_each_readers_own_period():
    stats = ServerStats()
    probe = LagProbe()
    queue = FakeQueue(7, scanning=True)
    first = StatusReporter(stats, queue, probe)
    stats.observe(ev.ConnectionOpened(session="S1", proto="smtp", peer="127.0.0.1", registered=True))
    for n in range(3):
        stats.observe(accepted(n))
    stats.observe(ev.Notice(level="info", text="not counted"))
    second = StatusReporter(stats, queue, probe)
    stats.observe(accepted(9))

    one = first.report()
    assert one.counts["accepted"] == 4 and one.counts["connections"] == 1 and one.counts["bounced"] == 0
    assert one.sessions == 1 and one.queued == 7 and one.scanning
    assert second.report().counts["accepted"] == 1       # its period began later
    stats.observe(ev.ConnectionClosed(session="S1", proto="smtp", peer="127.0.0.1"))
    again = first.report()
    assert again.counts["accepted"] == 0 and again.sessions == 0

    line = one.line()
    assert "\n" not in line and line.startswith("status: last ")
    assert "4 accepted" in line and "1 connections" in line and "1 sessions open" in line
    assert "queue 7 (spool scan still running)" in line and "loop lag p99" in line
    assert one.as_dict()["lag"]["samples"] == 0 and one.as_dict()["counts"]["accepted"] == 4


def send_local(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        for n in range(count):
            c.sendmail("a@status.test", ["bob@localhost"], f"Subject: {n}\r\n\r\nhello\r\n".encode())


def wait_text(serve: Serve, needle: str, count: int = 1, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in serve.text().splitlines() if needle in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no {count} line(s) with {needle!r} in serve's output:\n{serve.text()[-2000:]}")


def test_serve_prints_the_status_line_on_sigusr1(tmp_path):
    s = Serve(tmp_path).setup().start()
    try:
        send_local(s.port, 3)
        s.proc.send_signal(signal.SIGUSR1)
        [first] = wait_text(s, "status: ")
        s.proc.send_signal(signal.SIGUSR1)
        second = wait_text(s, "status: ", 2)[1]
        status = call(s.data, "status")
    finally:
        assert s.stop() == 0
    # (the connections include wait_port's probe)
    assert ": 3 accepted, 3 delivered, 0 relayed, 0 deferred, 0 bounced, 0 refused, " in first
    assert "queue 0;" in first and "loop lag p99 " in first and " ms, max " in first
    assert "0 accepted" in second                              # a new period
    assert status["queue"] == 0 and status["scanning"] is False and status["totals"]["accepted"] == 3
    assert status["lag"]["samples"] > 0 and status["lag"]["max_ms"] >= status["lag"]["p99_ms"] >= 0
    assert status["lag"]["period_s"] > 0


def test_status_needs_the_running_server(tmp_path):
    s = Serve(tmp_path).setup()
    with pytest.raises(ControlError):
        call(s.data, "status")


async def test_serve_prints_a_status_line_every_period(tmp_path):
    out = io.StringIO()
    console = Console(file=out, highlight=False)   # not a terminal: plain, timestamped lines
    stop = asyncio.Event()
    task = asyncio.create_task(run_headless(make_config(tmp_path / "data"), console, stop, status_every=0.1))
    try:
        async with asyncio.timeout(10):
            while out.getvalue().count(" status: last ") < 2:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0
    lines = [line for line in out.getvalue().splitlines() if " status: " in line]
    assert all(line[2] == ":" and "queue 0;" in line for line in lines)
