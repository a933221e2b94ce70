"""Starting and stopping the console's server, and why it is not running.

The console starts its server when it opens and stops it when it quits. A
server that cannot start (another one owns the data directory, a bad config,
a bug) is a phase and a one-line problem on screen, never the end of the
console. No Textual here: the app shows what this records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable, Literal

from ...config import ConfigError
from ...server.core import AlreadyRunning
from .backend import MailServer

log = logging.getLogger(__name__)

Phase = Literal["starting", "running", "failed", "stopping", "stopped"]


class ServerLifecycle:
    """``on_change()`` is called whenever the phase changes (the status line shows it)."""

    def __init__(self, server: MailServer, on_change: Callable[[], None]) -> None:
        self.server = server
        self.on_change = on_change
        self.phase: Phase = "starting"
        self.problem = ""                   # why the server is not running, in a line
        self.ready = asyncio.Event()        # the server is up and listening
        self._start_done = asyncio.Event()  # the attempt to start it is over, either way

    @property
    def running(self) -> bool:
        return self.phase == "running"

    async def start(self) -> None:
        """Start the server: afterwards it runs, or ``problem`` says why not (or a quit came first)."""
        try:
            problem = await self._attempt()
            if problem:
                if self.phase == "starting":
                    self.phase = "failed"
                self.problem = problem
            elif self.phase == "starting":   # quit while starting: stop() takes over
                self.phase = "running"
                self.ready.set()
        finally:
            self._start_done.set()
            self.on_change()

    async def _attempt(self) -> str:
        try:
            await self.server.start()
        except AlreadyRunning as exc:
            return f"{exc}: quit the other one first, or give this one another server.data_dir"
        except ConfigError as exc:
            return f"config error: {exc}"
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            return f"cannot start the server: {exc.strerror or exc}{where}"
        except Exception as exc:  # a bug: say so on screen rather than crash the console
            log.exception("the server failed to start")
            return f"the server failed to start: {exc!r}"
        return ""

    async def stop(self) -> None:
        """Stop the server (idempotent); the console stays up until it exits."""
        if self.phase in ("stopping", "stopped"):
            return
        self.phase = "stopping"
        self.on_change()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._start_done.wait(), 30)
        if self.server.started:
            try:
                await self.server.stop()
            except Exception:  # the process is exiting anyway: never hang or crash on the way out
                log.exception("the server did not stop cleanly")
        self.phase = "stopped"
        self.on_change()
