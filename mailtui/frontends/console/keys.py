"""Keys typed in a burst land where they were meant to, as over a slow SSH link.

Textual hands each key to the widget focused when the key is read, and a key
that moves the focus (Tab, or ``a`` opening a form) takes effect only once it
has travelled up the widget tree to the app's bindings. Keys that arrive
together (a paste, type-ahead over SSH) therefore all go to the old focus:
"lab<Tab>10.0.0.0/24" fills one field, and the name typed right after ``a``
goes to the panel behind the form that is still opening.

:class:`TypeAhead` takes keys one at a time: the next is handed over only
when the console has settled (every widget's queue empty). An action that
opens a dialog from a worker calls :func:`expect_dialog`; the keys that follow
wait until the dialog is on screen with its focus set (or a second has passed).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Coroutine

from textual import events
from textual.app import App
from textual.dom import DOMNode

SETTLE_LIMIT = 0.25     # seconds a key may wait for the previous one to be handled
DIALOG_LIMIT = 1.0      # seconds keys wait for a dialog that was asked for
POLL = 0.005


class TypeAhead(App[None]):
    """An app layer that serializes keys (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._typed: deque[events.Key] = deque()
        self._key_busy = False
        self._dialog_from: list[object] | None = None   # the screens there were when a dialog was asked for
        self._settling: asyncio.Task | None = None
        self._round = 0     # which wait is the current one: a superseded wait hands over nothing

    def expect_dialog(self) -> None:
        """A dialog is about to open: the keys typed from now on are for it."""
        self._dialog_from = list(self.screen_stack)
        self._key_busy = True
        self._start(self._wait_for_dialog)

    async def on_event(self, event: events.Event) -> None:
        if not isinstance(event, events.Key) or event.is_forwarded:
            await super().on_event(event)
            return
        if self._key_busy or self._typed:
            self._typed.append(event)
            return
        await self._hand_over(event)

    async def _hand_over(self, event: events.Key) -> None:
        self._key_busy = True
        await super().on_event(event)       # priority bindings, then to the focused widget
        if self._dialog_from is None:
            self._start(self._settle)

    def _start(self, wait: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        if self._settling is not None:
            self._settling.cancel()
        self._round += 1
        self._settling = asyncio.create_task(wait(self._round))

    def _quiet(self) -> bool:
        return self._message_queue.empty() and all(node._message_queue.empty() for node in list(self._registry))

    async def _settle(self, round: int) -> None:
        """Wait until every widget has handled what the last key set off (twice quiet in a row)."""
        loop = asyncio.get_running_loop()
        deadline, quiet, looks = loop.time() + SETTLE_LIMIT, 0, 0
        while quiet < 2 and loop.time() < deadline:
            looks += 1
            await asyncio.sleep(0 if looks < 50 else POLL)   # a key takes a few turns; then do not spin
            quiet = quiet + 1 if self._quiet() else 0
        self.call_later(self._next_key, round)

    async def _wait_for_dialog(self, round: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DIALOG_LIMIT
        while loop.time() < deadline and not (self.screen not in (self._dialog_from or ()) and self.screen.focused):
            await asyncio.sleep(POLL)
        self._dialog_from = None
        await self._settle(round)

    def on_unmount(self) -> None:
        if self._settling is not None:
            self._settling.cancel()

    async def _next_key(self, round: int) -> None:
        """Runs in the app's own message loop, after what the last key queued there."""
        if round != self._round or self._dialog_from is not None:
            return
        self._key_busy = False
        if self._typed:
            await self._hand_over(self._typed.popleft())


def expect_dialog(node: DOMNode) -> None:
    """Say that the action under way opens a dialog (a no-op in an app without :class:`TypeAhead`)."""
    if isinstance(node.app, TypeAhead):
        node.app.expect_dialog()
