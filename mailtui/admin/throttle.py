"""One throttle for failed logins, shared by SMTP AUTH, POP3 and IMAP.

Failures are counted per client IP for 15 minutes. The wait comes *before*
the password is checked, so a flood of guesses cannot keep the slow KDF (and
the executor that also writes mail) busy, and it doubles with each failure
up to a cap, so a wrong password is still answered within seconds while
guessing becomes slow. A successful login clears the IP's count. The server
keeps one instance for all protocols, so switching protocol does not reset
the count; each protocol brings its own configured base delay.
"""

from __future__ import annotations

import time
from typing import Callable

FAILURE_MEMORY = 900.0      # seconds an IP's failed logins are remembered
MAX_DELAY = 10.0            # seconds; the longest wait before a password is checked
MAX_TRACKED = 10_000        # IPs remembered at once (the oldest are forgotten first)


class LoginThrottle:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}   # ip -> (failures, last failure)

    def recent(self, ip: str) -> int:
        """Failed logins from ``ip`` in the last 15 minutes."""
        count, last = self._failures.get(ip, (0, 0.0))
        return count if count and self._clock() - last <= FAILURE_MEMORY else 0

    def delay(self, ip: str, base: float) -> float:
        """Seconds to wait before checking a password from ``ip``: ``base``, doubling per failure."""
        count = self.recent(ip)
        if count == 0:
            return 0.0
        return min(base * 2 ** (count - 1), MAX_DELAY)

    def failed(self, ip: str) -> int:
        """Count a failed login from ``ip``; returns its recent failures."""
        now = self._clock()
        count = self.recent(ip) + 1
        if ip not in self._failures and len(self._failures) >= MAX_TRACKED:
            self._forget_old(now)
        self._failures[ip] = (count, now)
        return count

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)

    def _forget_old(self, now: float) -> None:
        self._failures = {ip: v for ip, v in self._failures.items() if now - v[1] <= FAILURE_MEMORY}
        while len(self._failures) >= MAX_TRACKED:  # all recent: drop the oldest
            self._failures.pop(next(iter(self._failures)))
