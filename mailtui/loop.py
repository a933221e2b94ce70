"""Run a coroutine on the fastest event loop available (uvloop when installed)."""

from __future__ import annotations

import asyncio
import os


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
