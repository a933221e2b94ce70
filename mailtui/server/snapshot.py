"""What a console that attaches is shown first: the server's state in one JSON object.

Everything here is taken synchronously on the event loop, so no event can
slip between the snapshot and the stream that follows it (see
:class:`~mailtui.admin.attach.AttachHub`). It is bounded whatever the server
holds: the first ``QUEUE_ROWS`` queued messages (and the total), the newest
``HISTORY_ROWS`` rows of each stored log.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol

from ..admin.registry import Registry
from ..store.db import LOG_TABLES, Store
from ..store.queue import Queue
from .sessions import OpenSessions

PROTOCOL = 1
QUEUE_ROWS = 500       # as many as the console's queue table keeps
HISTORY_ROWS = 200     # per stored log (connections, dns, deliveries)
PARTS = ("status", "sessions", "registry", "queue", "history")


class Core(Protocol):
    """The running server's parts a snapshot reads (:class:`~.core.Core` has them)."""

    queue: Queue
    registry: Registry
    store: Store
    sessions: OpenSessions
    status: Callable[[], dict]


def queue_rows(core: Core, limit: int = QUEUE_ROWS) -> dict:
    items = core.queue.items(limit)
    return {"size": len(core.queue),
            "items": [item.to_json() | {"in_flight": item.in_flight} for item in items]}


def registry_rows(core: Core) -> dict:
    registry = core.registry
    return {"clients": [{"name": c.name, "networks": list(c.networks), "note": c.note, "created": c.created}
                        for c in registry.clients()],
            "mailboxes": [{"address": m.address, "created": m.created} for m in registry.mailboxes()]}


def history_rows(core: Core, limit: int = HISTORY_ROWS) -> dict:
    """The newest stored rows of each log, oldest first."""
    return {table: list(reversed(core.store.recent(table, limit))) for table in LOG_TABLES}


def take(core: Core, parts: Iterable[str] | None = None) -> dict:
    """The parts asked for (all by default); unknown names are ignored."""
    wanted = set(parts or PARTS)
    makers = {"status": core.status, "sessions": core.sessions.rows, "registry": lambda: registry_rows(core),
              "queue": lambda: queue_rows(core), "history": lambda: history_rows(core)}
    return {"protocol": PROTOCOL} | {name: makers[name]() for name in PARTS if name in wanted}
