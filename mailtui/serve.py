"""``mailtui serve``: the core, headless, with one printed line per event."""

from __future__ import annotations

import asyncio
import logging

from rich.console import Console

from .config import Config
from .core import AlreadyRunning, Core
from .describe import render
from .events import EventBus


async def run_headless(config: Config, console: Console, stop: asyncio.Event | None = None) -> int:
    from .cli import CliError, install_signal_handlers

    bus = EventBus()
    sub = bus.subscribe(maxsize=50_000)
    core = Core(config, bus=bus)
    stop = stop or asyncio.Event()
    install_signal_handlers(asyncio.get_running_loop(), stop)
    try:
        await core.start()
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    console.print(f"mailtui serving {', '.join(config.server.local_domains)} as {config.server.hostname}; "
                  f"data in {config.server.data_dir} (config: {config.source})", markup=False)
    if not any(li.ok for li in core.listeners):
        await core.stop()
        raise CliError("no listener could be bound; see the messages above")

    async def printer() -> None:
        while True:
            await sub.wait()
            for event in sub.drain():
                line = render(event)
                if line is not None:
                    console.print(line, soft_wrap=True)
            if sub.dropped:
                console.print(f"({sub.dropped} events not shown: output too slow)", style="dim")
                sub.dropped = 0

    task = asyncio.create_task(printer())
    await asyncio.sleep(0)  # print the listener events first
    try:
        await stop.wait()
    finally:
        console.print("stopping ...", style="dim")
        await core.stop()
        await asyncio.sleep(0)
        task.cancel()
        for event in sub.drain():
            line = render(event)
            if line is not None:
                console.print(line, soft_wrap=True)
    return 0


def serve(config: Config) -> None:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from .loop import run

    run(run_headless(config, Console(highlight=False)))
