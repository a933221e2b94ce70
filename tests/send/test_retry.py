"""The retry schedule and when to give up: pure functions, in tables."""

from __future__ import annotations

import random

import pytest

from mailtui.send import retry


@pytest.mark.parametrize("attempts, intervals, expected", [
    (1, (300, 900, 1800), 300),
    (2, (300, 900, 1800), 900),
    (3, (300, 900, 1800), 1800),
    (4, (300, 900, 1800), 1800),
    (99, (300, 900, 1800), 1800),
    (0, (300, 900), 300),
    (1, (0.2,), 0.2),
])
def test_next_delay(attempts, intervals, expected):
    assert retry.next_delay(attempts, intervals, 0.0) == pytest.approx(expected)


@pytest.mark.parametrize("jitter", [0.1, 0.5])
def test_next_delay_jitter_stays_in_bounds(jitter):
    rng = random.Random(1)
    delays = [retry.next_delay(1, (100,), jitter, rng) for _ in range(200)]
    assert all(100 * (1 - jitter) <= d <= 100 * (1 + jitter) for d in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize("attempts, age, max_attempts, max_lifetime, words", [
    (1, 10, 3, 3600, None),
    (2, 10, 3, 3600, None),
    (3, 10, 3, 3600, "gave up after 3 delivery attempts"),
    (1, 10, 1, 3600, "gave up after 1 delivery attempt"),
    (2, 3600, 35, 3600, "in the queue for 1 hour"),
    (2, 5 * 86400 + 60, 35, 5 * 86400, "5 days 1 minute"),
    (2, 3599, 35, 3600, None),
])
def test_give_up(attempts, age, max_attempts, max_lifetime, words):
    now = 1_000_000.0
    reason = retry.give_up(attempts, now - age, now, max_attempts, max_lifetime)
    if words is None:
        assert reason is None
    else:
        assert words in reason



@pytest.mark.parametrize("seconds, words", [
    (0, "0 seconds"),
    (-5, "0 seconds"),
    (1, "1 second"),
    (59.6, "1 minute"),
    (90, "1 minute 30 seconds"),
    (3600, "1 hour"),
    (3661, "1 hour 1 minute"),
    (86400 + 7200 + 5, "1 day 2 hours"),
    (5 * 86400, "5 days"),
])
def test_describe_duration(seconds, words):
    assert retry.describe_duration(seconds) == words
