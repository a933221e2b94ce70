"""The server's vital signs in one line: what happened, what waits, how late the loop ran.

:class:`~.stats.ServerStats` counts on the event bus synchronously, so the
figures are exact even when a slow front end drops events. Each reader of the status
(``mailtui serve``'s periodic line, the control socket's ``status`` verb)
owns a :class:`StatusReporter`: its counts and its loop-lag window cover the
time since that reader's previous report, independently of the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from .lag import LagProbe, LagStats
from .stats import ServerStats


class QueueSize(Protocol):
    """What the status needs of the queue."""

    scanning: bool

    def __len__(self) -> int: ...


def counts_of(stats: ServerStats) -> dict[str, int]:
    """The running totals the status line shows, in its order."""
    t = stats.totals
    return {"accepted": t.accepted, "delivered": t.delivered_local, "relayed": t.delivered_remote,
            "deferred": t.deferred, "bounced": t.bounced, "refused": t.refused,
            "connections": sum(t.sessions.values())}


@dataclass(frozen=True)
class StatusReport:
    period: float                  # seconds covered by ``counts`` and ``lag``
    counts: dict[str, int]
    sessions: int
    queued: int
    scanning: bool
    lag: LagStats

    def line(self) -> str:
        """One line, journald-friendly: no colour, no line breaks."""
        counts = ", ".join(f"{n} {name}" for name, n in self.counts.items())
        scan = " (spool scan still running)" if self.scanning else ""
        return (f"status: last {self.period:.0f}s: {counts}; {self.sessions} sessions open; "
                f"queue {self.queued}{scan}; {self.lag.text()}")

    def as_dict(self) -> dict:
        return {"period_s": round(self.period, 3), "counts": dict(self.counts), "sessions": self.sessions,
                "queued": self.queued, "scanning": self.scanning, "lag": self.lag.as_dict()}


class StatusReporter:
    """One reader's view: each :meth:`report` covers the time since the previous one."""

    def __init__(self, stats: ServerStats, queue: QueueSize, probe: LagProbe):
        self._stats = stats
        self._queue = queue
        self._probe = probe
        self._window = probe.window()
        self._last = counts_of(stats)
        self._since = time.monotonic()

    def report(self) -> StatusReport:
        now = time.monotonic()
        totals = counts_of(self._stats)
        counts = {name: totals[name] - self._last.get(name, 0) for name in totals}
        report = StatusReport(period=now - self._since, counts=counts,
                              sessions=sum(self._stats.totals.open_sessions.values()),
                              queued=len(self._queue), scanning=self._queue.scanning, lag=self._window.take())
        self._last, self._since = totals, now
        return report

    def close(self) -> None:
        self._probe.close(self._window)
