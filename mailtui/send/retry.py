"""When to try a deferred message again, and when to give up (pure functions)."""

from __future__ import annotations

import random
from typing import Protocol


class _Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def next_delay(attempts: int, intervals: tuple[float, ...], jitter: float,
               rng: _Uniform = random) -> float:
    """Seconds to wait after ``attempts`` failed attempts.

    After the first failure wait ``intervals[0]``, after the second
    ``intervals[1]`` ... and the last interval repeats. The delay is spread by
    +/- ``jitter`` (a fraction: 0.1 is 10 %) so that messages deferred together
    do not all come back at the same instant.
    """
    if not intervals:
        raise ValueError("retry intervals must not be empty")
    index = min(max(attempts, 1), len(intervals)) - 1
    delay = float(intervals[index])
    jitter = max(0.0, min(float(jitter), 1.0))
    if jitter:
        delay *= 1.0 + rng.uniform(-jitter, jitter)
    return max(0.0, delay)


def give_up(attempts: int, arrival: float, now: float, max_attempts: int,
            max_lifetime: float) -> str | None:
    """Why to stop retrying a message, in plain words; None to keep trying."""
    if attempts >= max_attempts:
        return f"gave up after {attempts} delivery attempt{'s' if attempts != 1 else ''}"
    age = now - arrival
    if age >= max_lifetime:
        return f"message was in the queue for {describe_duration(age)} (the limit is {describe_duration(max_lifetime)})"
    return None


def describe_duration(seconds: float) -> str:
    """``90`` -> "1 minute 30 seconds", ``432000`` -> "5 days"."""
    seconds = max(0, int(round(seconds)))
    if seconds == 0:
        return "0 seconds"
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts[:2])
