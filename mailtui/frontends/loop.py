"""Run a coroutine on the fastest event loop available (uvloop when installed), stopping on signals."""

from __future__ import annotations

import asyncio
import os
import signal


def new_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("MAILTUI_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(coro):
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)


def install_signal_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (the front end then stops the core cleanly)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


VIEWER_NICENESS = 10


def give_way() -> None:
    """Lower this process's CPU priority: it only watches a server that runs in another process.

    An attached console (or ``mailtui web`` and the consoles of its tabs)
    then takes the CPU the server leaves: on a busy machine the mail goes
    first, and the console shows it a little later.
    """
    try:
        current = os.nice(0)
        if current < VIEWER_NICENESS:
            os.nice(VIEWER_NICENESS - current)
    except OSError:
        pass
