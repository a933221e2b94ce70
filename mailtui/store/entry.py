"""A queued message: its envelope and the state of each recipient, as its ``<id>.json`` holds them.

The queue (``queue.py``) keeps these whole for messages being delivered or
looked at, and only their :class:`~.waiting.Waiting` part for the others.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field

from .waiting import PENDING_STATES

_ID_PREFIX = secrets.randbits(12)
_id_counter = itertools.count(secrets.randbits(16))


def new_id() -> str:
    """A short, time-ordered, unique queue id (like Postfix's).

    Milliseconds, then a per-process random prefix and a counter: unique
    across restarts and concurrent processes without a syscall per message.
    """
    return f"{int(time.time() * 1000):011X}{_ID_PREFIX:03X}{next(_id_counter) & 0xFFF:03X}"


@dataclass(slots=True)
class RecipientState:
    address: str
    state: str = "queued"          # queued | deferred | delivered | failed
    attempts: int = 0
    last_error: str = ""           # plain words, for people
    status: str = ""               # RFC 3463 code, e.g. "4.4.1"
    diagnostic: str = ""           # e.g. "smtp; 550 5.1.1 no such user"
    remote_mta: str = ""           # e.g. "dns; mx1.example.com"
    updated: float = 0.0

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES


_RECIPIENT_WORDS = ("state", "last_error", "status", "diagnostic", "remote_mta")
_ITEM_WORDS = ("sender", "last_error", "peer", "helo")


def _interned(data: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        value = data.get(key)
        if type(value) is str:
            data[key] = sys.intern(value)
    return data


@dataclass(slots=True)
class QueueItem:
    id: str
    sender: str                    # "" is the null sender (bounces)
    recipients: list[RecipientState]
    arrival: float
    next_attempt: float
    size: int = 0
    attempts: int = 0
    last_error: str = ""
    peer: str = ""
    helo: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    dsn_sent: bool = False
    in_flight: bool = field(default=False, compare=False)

    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.pending]

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("in_flight")
        return data

    @classmethod
    def from_json(cls, data: dict) -> "QueueItem":
        """Rebuild an entry; the words that repeat across a big queue (states, errors, the
        client's name) share one string object each (~40 % of an entry's memory)."""
        data = dict(data)
        data["recipients"] = [RecipientState(**_interned(r, _RECIPIENT_WORDS)) for r in data["recipients"]]
        data.pop("in_flight", None)
        return cls(**_interned(data, _ITEM_WORDS))

    def summary(self) -> dict:
        """The row shown by ``queue list`` and the console."""
        return {
            "id": self.id, "sender": self.sender, "arrival": self.arrival,
            "next_attempt": self.next_attempt, "attempts": self.attempts,
            "last_error": self.last_error, "size": self.size,
            "recipients": [{"address": r.address, "state": r.state, "attempts": r.attempts,
                            "last_error": r.last_error} for r in self.recipients],
        }
