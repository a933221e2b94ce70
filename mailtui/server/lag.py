"""Event-loop lag: a timer that records how late it fires.

One asyncio loop serves every session, the console and every delivery, so a
callback that holds the loop for 50 ms delays all of them by 50 ms. A timer
due every ``interval`` that fires ``d`` seconds late says the loop was held
for about ``d``: the figure ``mailtui serve`` prints in its status line and the
benchmark reports per load (after Node's ``monitorEventLoopDelay``).

Each reader (the status line, the control socket, the console's header, the
stream to attached consoles) takes its own :class:`LagWindow`, so one reader's period never resets
another's. uvloop runs timers at millisecond resolution, so figures under
1 ms are noise.
"""

from __future__ import annotations

import asyncio
import math
import random
from array import array
from dataclasses import dataclass


@dataclass(frozen=True)
class LagStats:
    """How late the probe fired over one window, in seconds."""

    samples: int
    p50: float
    p99: float
    max: float

    def text(self) -> str:
        return f"loop lag p99 {self.p99 * 1000:.1f} ms, max {self.max * 1000:.1f} ms"

    def as_dict(self) -> dict:
        return {"samples": self.samples, "p50_ms": round(self.p50 * 1000, 3),
                "p99_ms": round(self.p99 * 1000, 3), "max_ms": round(self.max * 1000, 3)}

    @classmethod
    def from_dict(cls, data: dict) -> "LagStats":
        """The inverse of :meth:`as_dict` (an attached console reads the server's figures)."""
        return cls(int(data.get("samples", 0)), float(data.get("p50_ms", 0)) / 1000,
                   float(data.get("p99_ms", 0)) / 1000, float(data.get("max_ms", 0)) / 1000)


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 if empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class LagWindow:
    """Lateness samples for one reader since its last :meth:`take`.

    Beyond ``cap`` samples it keeps a uniform random sample (reservoir
    sampling), so a reader that waits long costs bounded memory; the maximum
    is always exact.
    """

    def __init__(self, cap: int = 65536, rng: random.Random | None = None):
        self.cap = cap
        self._rng = rng or random.Random()
        self._reset()

    def _reset(self) -> None:
        self._samples = array("d")
        self._seen = 0
        self._max = 0.0

    def add(self, late: float) -> None:
        self._seen += 1
        self._max = max(self._max, late)
        if len(self._samples) < self.cap:
            self._samples.append(late)
        else:
            slot = self._rng.randrange(self._seen)
            if slot < self.cap:
                self._samples[slot] = late

    def take(self) -> LagStats:
        """The figures since the last take; starts a new period."""
        ordered = sorted(self._samples)
        stats = LagStats(self._seen, percentile(ordered, 0.50), percentile(ordered, 0.99), self._max)
        self._reset()
        return stats


class LagProbe:
    """A timer every ``interval`` seconds on the running loop; feeds every open window."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self._windows: list[LagWindow] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def start(self) -> None:
        """Start on the running loop (idempotent)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._arm(self._loop.time())

    def _arm(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = max(0.0, now - self._due)
        for window in self._windows:
            window.add(late)
        self._arm(now)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def window(self) -> LagWindow:
        """A new window that sees every sample from now on."""
        window = LagWindow()
        self._windows.append(window)
        return window

    def close(self, window: LagWindow) -> None:
        if window in self._windows:
            self._windows.remove(window)
