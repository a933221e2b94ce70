"""The loop-lag probe: percentiles, bounded windows, and a real loop that is held."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from mailtui.server.lag import LagProbe, LagWindow, percentile


@pytest.mark.parametrize("values, fraction, expected", [
    ([], 0.99, 0.0),
    ([5.0], 0.5, 5.0),
    ([5.0], 0.99, 5.0),
    ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
    ([1.0, 2.0, 3.0, 4.0], 0.99, 4.0),
    ([float(i) for i in range(1, 101)], 0.99, 99.0),
    ([float(i) for i in range(1, 101)], 0.50, 50.0),
    ([float(i) for i in range(1, 1001)], 0.99, 990.0),
])
def test_percentile_is_nearest_rank(values, fraction, expected):
    assert percentile(values, fraction) == expected


def test_a_window_reports_its_period_and_starts_a_new_one():
    window = LagWindow()
    for late in (0.001, 0.002, 0.050, 0.003):
        window.add(late)
    stats = window.take()
    assert (stats.samples, stats.p50, stats.p99, stats.max) == (4, 0.002, 0.050, 0.050)
    assert "p99 50.0 ms" in stats.text() and "max 50.0 ms" in stats.text()
    assert stats.as_dict() == {"samples": 4, "p50_ms": 2.0, "p99_ms": 50.0, "max_ms": 50.0}
    empty = window.take()
    assert (empty.samples, empty.p99, empty.max) == (0, 0.0, 0.0)


def test_a_full_window_keeps_a_bounded_sample_and_the_exact_max():
    window = LagWindow(cap=100, rng=random.Random(3))
    for i in range(10_000):
        window.add(0.001 if i != 7_777 else 0.250)
    assert len(window._samples) == 100
    stats = window.take()
    assert stats.samples == 10_000 and stats.max == 0.250 and stats.p50 == 0.001


async def test_the_probe_sees_a_held_loop_and_each_window_has_its_own_period():
    probe = LagProbe(interval=0.005)
    first, second = probe.window(), probe.window()
    probe.start()
    probe.start()  # idempotent
    try:
        await asyncio.sleep(0.05)
        quiet = first.take()
        time.sleep(0.08)  # holds the loop: the next tick fires ~80 ms late
        await asyncio.sleep(0.03)
        held = first.take()
    finally:
        probe.stop()
    assert quiet.samples >= 3 and quiet.max < 0.07
    assert held.max >= 0.07
    both = second.take()  # never taken before: it saw the whole run
    assert both.samples >= quiet.samples + held.samples - 1 and both.max == held.max
    assert not probe.running


async def test_a_closed_window_gets_no_more_samples():
    probe = LagProbe(interval=0.002)
    window = probe.window()
    probe.start()
    try:
        await asyncio.sleep(0.02)
        probe.close(window)
        window.take()
        await asyncio.sleep(0.02)
    finally:
        probe.stop()
    assert window.take().samples == 0
