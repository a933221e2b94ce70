"""A queued message as the queue keeps it while nobody looks at it: its id, when it is due, when it came.

At 500,000 deferred messages a whole :class:`~.entry.QueueItem` in memory
(sender, recipients with their states and errors, the client's name) costs
~740 bytes each, plus the cyclic GC's walks over them: most of the server's
memory, for messages nobody will look at before their next attempt. The
scheduler needs only the due time, and the spool file has everything else
(it is the truth anyway). So a message picked up from the spool, and one
whose attempt has ended, is a :class:`Waiting` (~330 bytes of RSS with its
key, dict slot and heap entry, measured at 500,000); the queue reads the
whole entry back from its file when it is due, shown or asked about
(``Queue._hydrate``), and keeps only this again when the attempt ends
(``Queue.release``). What an attempt changed and did not save is lost then,
as after a crash: the envelope on disk is what counts.
"""

from __future__ import annotations

PENDING_STATES = ("queued", "deferred")


class Waiting:
    """The scheduling part of a pending message; ``in_flight`` is always False (a message being
    delivered is a whole QueueItem)."""

    __slots__ = ("id", "next_attempt", "arrival")
    in_flight = False

    def __init__(self, id: str, next_attempt: float, arrival: float) -> None:
        self.id = id
        self.next_attempt = next_attempt
        self.arrival = arrival

    def pending(self) -> bool:
        return True


class Done(Waiting):
    """An envelope the scan found with nothing pending: its files are to go."""

    __slots__ = ()

    def pending(self) -> bool:
        return False


def waiting_of(data: dict) -> Waiting:
    """The scheduling part of an envelope's JSON (raises KeyError/TypeError/ValueError on a damaged one)."""
    recipients = data["recipients"]
    if not isinstance(recipients, list):
        raise TypeError("recipients is not a list")
    pending = any(r["state"] in PENDING_STATES for r in recipients)
    return (Waiting if pending else Done)(str(data["id"]), float(data["next_attempt"]), float(data["arrival"]))
