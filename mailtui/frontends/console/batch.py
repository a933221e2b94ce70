"""The batch: the server's events, taken a few times a second and folded into the model.

The mail path never waits for the screen: the server publishes into a bounded
bus subscription, and the console's timer calls :meth:`Batcher.next` every
``TICK`` seconds. It drains whatever is pending, folds it into the
:class:`~.model.ConsoleModel`, marks the panels that changed and returns a
:class:`Frame`: what the screen should draw now. The counters follow every
batch; on a busy server the tables and the log slow down to two redraws a
second, then to one (nobody reads faster, and the mail path gets the time).

Two markers may come down the same stream, and are applied in their place
among the events: :class:`Attached` (an attached server's snapshot: the
model starts over from it) and :class:`HistoryLoaded` (the stored history of
a console's own server). No Textual here.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, fields

from ...events import Event, Notice, Subscription
from . import history
from .model import LOG_BATCH_LINES, Changes, ConsoleModel, Counters, SessionRow

TICK = 0.25          # seconds between two batches applied to the screen
BUSY_BATCH = 200     # events in one batch that make a busy server: the panels redraw less often
PANELS = ("connections", "clients", "dns", "queue", "log")
SESSION_FIELDS = frozenset(f.name for f in fields(SessionRow)) - {"key", "version", "history"}
HISTORY_NOTE = "── stored history (before this console started) ──"


# -- markers: the console's own, never on the wire -------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Attached(Event):
    """A new snapshot of an attached server (see :mod:`mailtui.server.snapshot`)."""

    snapshot: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryLoaded(Event):
    """The stored history of the console's own server, just started."""

    history: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewsChanged(Event):
    """An attached server's views were fetched again: the panels showing them redraw."""

    panels: tuple[str, ...] = ()


MARKERS = (Attached, HistoryLoaded, ViewsChanged)


@dataclass
class Frame:
    """What one batch asks of the screen."""

    status: bool = False                 # redraw the status lines
    dropped: int = 0                     # events lost so far, when more were lost since the last frame
    alerts: list[Event] = field(default_factory=list)
    redraw: bool = False                 # redraw the panel on show, and write ``log``, this time
    log: list[Event] = field(default_factory=list)
    log_skipped: int = 0                 # lines a burst had no room for
    notes: list[tuple[str, str]] = field(default_factory=list)   # (text, style) for the log, at once


class Batcher:
    """Owns the subscription's far end, the set of panels to redraw and the lines due in the log.

    ``log_records`` are the captured log records (see :func:`~.runner.capture_logs`);
    they join each batch as notices.
    """

    def __init__(self, subscription: Subscription, model: ConsoleModel, log_records: deque[logging.LogRecord]):
        self.subscription = subscription
        self.model = model
        self.log_records = log_records
        self.dirty = set(PANELS)
        self._dropped_reported = 0
        self._log_pending: deque[Event] = deque(maxlen=LOG_BATCH_LINES)
        self._log_skipped = 0
        self._since_redraw = 0
        self._notes: list[tuple[str, str]] = []
        self._history_shown = False

    def mark(self, *panels: str) -> None:
        """``panels`` (all of them if none are named) changed: redraw them when next shown."""
        self.dirty.update(panels or PANELS)

    def take(self, panel: str) -> bool:
        """Whether ``panel`` changed since it was last drawn; it counts as drawn from now."""
        if panel not in self.dirty:
            return False
        self.dirty.discard(panel)
        return True

    def next(self) -> Frame:
        events = self.subscription.drain()
        self._take_log_records(events)
        changes = self._fold(events)
        frame = Frame(alerts=changes.alerts, status=changes.listeners or changes.counters or bool(events))
        frame.notes, self._notes = self._notes, []
        dropped = self.subscription.dropped
        if dropped > self._dropped_reported:
            self._dropped_reported = frame.dropped = dropped
        self.dirty.update(flag for flag in ("connections", "dns", "queue") if getattr(changes, flag))
        if changes.registry:
            self.dirty.add("clients")
        self._log_skipped += changes.log_skipped + max(0, len(self._log_pending) + len(changes.log)
                                                       - LOG_BATCH_LINES)
        self._log_pending.extend(changes.log)
        self._since_redraw += 1
        every = 1 if len(events) <= BUSY_BATCH else 2 if len(events) <= 4 * BUSY_BATCH else 4
        if self._since_redraw >= every:
            self._since_redraw = 0
            frame.redraw = True
            frame.log, frame.log_skipped = list(self._log_pending), self._log_skipped
            self._log_pending.clear()
            self._log_skipped = 0
        return frame

    def _fold(self, events: list[Event]) -> Changes:
        """Fold ``events`` into the model; a marker among them is applied in its place."""
        changes, start = Changes(), 0
        for index, event in enumerate(events):
            if isinstance(event, MARKERS):
                merge(changes, self.model.apply(events[start:index]))
                start = index + 1
                self._take_marker(event, changes)
        if start:
            merge(changes, self.model.apply(events[start:]))
            return changes
        return self.model.apply(events)

    def _take_marker(self, marker: Event, changes: Changes) -> None:
        if isinstance(marker, ViewsChanged):
            self.dirty.update(marker.panels)
            changes.counters = True
            return
        if isinstance(marker, Attached):
            snapshot = marker.snapshot
            totals = snapshot.get("status", {}).get("totals", {})
            self.model.restart(Counters(**{f.name: int(totals.get(f.name, 0)) for f in fields(Counters)}))
            for row in snapshot.get("sessions", []):
                state = {k: v for k, v in row.items() if k in SESSION_FIELDS}
                self.model.sessions[f"{row.get('proto')}:{row.get('session')}"] = SessionRow(
                    key=f"{row.get('proto')}:{row.get('session')}", **state)
            stored = snapshot.get("history", {})
        else:
            stored = marker.history   # type: ignore[attr-defined]
        self.model.add_history(history.session_rows(stored.get("connections", [])),
                               history.dns_lookups(stored.get("dns", [])))
        if not self._history_shown:   # the log keeps what it wrote: the stored deliveries go in once
            self._history_shown = True
            lines = history.delivery_lines(stored.get("deliveries", []))
            if lines:
                self._notes += [(HISTORY_NOTE, "dim bold"), *((line, "dim") for line in lines),
                                ("── live ──", "dim bold")]
        self.mark()
        changes.listeners = changes.counters = True

    def _take_log_records(self, events: list[Event]) -> None:
        """Captured log records join the batch as notices (errors pop up, warnings are only logged)."""
        while self.log_records:
            record = self.log_records.popleft()
            level = "error" if record.levelno >= logging.ERROR else "info"
            text = (record.getMessage().splitlines() or [""])[0]
            events.append(Notice(level=level, text=f"[{record.name}] {text}", at=record.created))


def merge(into: Changes, other: Changes) -> None:
    """Fold ``other`` into ``into``: flags add up, lists join."""
    for name in ("connections", "dns", "queue", "registry", "listeners", "counters"):
        setattr(into, name, getattr(into, name) or getattr(other, name))
    into.log += other.log
    into.log_skipped += other.log_skipped
    into.alerts += other.alerts
