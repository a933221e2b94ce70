"""Starting and stopping the console's server, or attaching to one; and why it is not running.

The console attaches to the server that owns its data directory if one runs
(``mailtui serve`` as a service), and otherwise starts its own, and stops it
when it quits. Which is decided by trying the data directory's lock, as the
CLI's admin commands do, and a server that wins the race to the lock
meanwhile (``AlreadyRunning``) is attached to as well. An attached console
follows its server: "waiting" while it is gone, "running" again once it is
back. A server of its own that cannot start (a bad config, a port, a bug) is
a phase and a one-line problem on screen, never the end of the console. No
Textual here: the app shows what this records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Callable, Literal

from ...config import ConfigError
from ...server.core import AlreadyRunning, DataDirLock
from .attached import AttachedServer
from .backend import MailServer

log = logging.getLogger(__name__)

Phase = Literal["starting", "running", "waiting", "failed", "stopping", "stopped"]


def owned_elsewhere(data_dir: Path) -> bool:
    """Whether another process holds the data directory's lock (a server, or an admin command)."""
    lock = DataDirLock(data_dir)
    if lock.acquire():
        lock.release()
        return False
    return True


class ServerLifecycle:
    """``on_change()`` is called whenever the phase changes (the status line shows it).

    ``attach()`` builds the :class:`~.attached.AttachedServer` used when another
    process owns ``data_dir`` (or always, with ``attach_only``); without it the
    console only ever runs ``server``, its own.
    """

    def __init__(self, server: MailServer, on_change: Callable[[], None], *,
                 attach: Callable[[], AttachedServer] | None = None, data_dir: Path | None = None,
                 attach_only: bool = False) -> None:
        self.server = server
        self.on_change = on_change
        self.attach = attach
        self.data_dir = data_dir
        self.attach_only = attach_only
        self.attached = False               # the server is another process's, seen over its control socket
        self.phase: Phase = "starting"
        self.problem = ""                   # why the server is not running, in a line
        self.ready = asyncio.Event()        # the server is up and listening
        self._start_done = asyncio.Event()  # the attempt to start it is over, either way

    @property
    def running(self) -> bool:
        return self.phase == "running"

    async def start(self) -> None:
        """Start the server: afterwards it runs, or ``problem`` says why not (or a quit came first).

        Attached, the phase follows the connection from then on (see :meth:`_follow`).
        """
        try:
            problem = await self._attempt()
            if problem:
                if self.phase == "starting":
                    self.phase = "failed"
                self.problem = problem
            elif self.phase == "starting" and not self.attached:   # quit while starting: stop() takes over
                self.phase = "running"
                self.ready.set()
        finally:
            self._start_done.set()
            self.on_change()

    async def _attempt(self) -> str:
        if self.attach is not None and (self.attach_only or (self.data_dir and owned_elsewhere(self.data_dir))):
            return await self._attach()
        try:
            await self.server.start()
        except AlreadyRunning as exc:
            if self.attach is not None:   # it started between our look at the lock and ours
                return await self._attach()
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

    async def _attach(self) -> str:
        assert self.attach is not None
        server = self.attach()
        server.on_state = self._follow
        self.server, self.attached = server, True
        await server.start()
        return ""

    def _follow(self, state: str, reason: str) -> None:
        """The attached server's connection changed: attached (running) or gone (waiting)."""
        if self.phase in ("stopping", "stopped"):
            return
        if state == "attached":
            self.phase, self.problem = "running", ""
            self.ready.set()
        elif state == "lost":
            self.phase = "waiting"
            self.problem = f"{reason}: waiting for it (this console attaches again when it is back)"
        self.on_change()

    async def stop(self) -> None:
        """Stop the server, or detach from it (idempotent); the console stays up until it exits."""
        if self.phase in ("stopping", "stopped"):
            return
        self.phase = "stopping"
        self.on_change()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):      # (not wait_for: it can drop a cancellation, see control.py)
                await self._start_done.wait()
        if self.server.started:
            try:
                await self.server.stop()
            except Exception:  # the process is exiting anyway: never hang or crash on the way out
                log.exception("the server did not stop cleanly")
        self.phase = "stopped"
        self.on_change()
