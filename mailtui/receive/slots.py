"""Open connections, counted in total and per client IP, against two limits.

Depends on nothing but the standard library, so POP3 and IMAP can share it
once it moves below ``receive`` and ``access`` (they may not import each other).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class ConnectionSlots(Generic[C]):
    """Which connections are open, and how many come from each IP."""

    def __init__(self) -> None:
        self.open: set[C] = set()
        self.per_ip: dict[str, int] = {}

    def full(self, ip: str, *, total: int, per_ip: int) -> str:
        """Why one more connection from ``ip`` is over a limit ("total", "ip"), or ""."""
        if len(self.open) >= total:
            return "total"
        if self.per_ip.get(ip, 0) >= per_ip:
            return "ip"
        return ""

    def take(self, conn: C, ip: str) -> None:
        self.open.add(conn)
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def give_back(self, conn: C, ip: str) -> None:
        """Release ``conn``'s slot; call once for each :meth:`take`."""
        self.open.discard(conn)
        left = self.per_ip.get(ip, 1) - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)
