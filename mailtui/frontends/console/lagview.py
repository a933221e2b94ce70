"""The loop-lag figures the console's header shows: the server's last complete period.

The header is redrawn every second, but one second of a 10 ms probe is a
hundred samples, too few for a p99 worth reading; so the figures cover
``PERIOD`` seconds and change once a period. The first figures are shown as
soon as there are any, so a fresh console does not say "—" for a period.
An attached server's figures come over its stream at the same period
(:data:`mailtui.admin.attach.LAG_EVERY`). No Textual here.
"""

from __future__ import annotations

import time
from typing import Callable

from ...admin.attach import LAG_EVERY
from ...server.lag import LagStats
from .backend import LagSource, LagWindow

PERIOD = LAG_EVERY


class LagView:
    """Follows one server's lag at a time (:meth:`follow`), read as often as the header redraws."""

    def __init__(self, period: float = PERIOD, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._source: LagSource | None = None
        self._window: LagWindow | None = None
        self._taken = 0.0
        self._latest: LagStats | None = None

    def follow(self, source: LagSource | None) -> None:
        """Read ``source`` from now on (None: no server runs); a new source starts with no figures."""
        if source is self._source:
            return
        self.close()
        self._source, self._latest = source, None
        if source is not None:
            self._window, self._taken = source.window(), self._clock()

    def latest(self) -> LagStats | None:
        """The figures of the last complete period, or of what there is before the first one ends."""
        if self._window is None:
            return None
        now = self._clock()
        if self._latest is None or not self._latest.samples or now - self._taken >= self.period:
            stats = self._window.take()
            if stats is not None and stats.samples:
                self._latest, self._taken = stats, now
        return self._latest

    def close(self) -> None:
        if self._source is not None and self._window is not None:
            self._source.close(self._window)
        self._source = self._window = None
