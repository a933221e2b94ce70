"""``mailtui serve``: the core, headless, with one printed line per event."""

from __future__ import annotations

import asyncio
import logging
import time

from rich.console import Console

from ..config import Config
from ..events import EventBus
from ..server.core import AlreadyRunning, Core
from .describe import describe, render
from .errors import CliError
from .loop import install_signal_handlers, run


async def run_headless(config: Config, console: Console, stop: asyncio.Event | None = None) -> int:
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
                  f"data in {config.server.data_dir} (config: {config.source})", markup=False, soft_wrap=True)
    failed = [li for li in core.listeners if not li.ok]
    if failed:  # running half-deaf would hide it from systemd: exit non-zero instead
        await core.stop()
        raise CliError("cannot listen on " + "; ".join(
            f"{li.proto.upper()} {li.address}: {li.error}" for li in failed))

    def emit(events) -> None:
        if console.is_terminal:
            for event in events:
                line = render(event)
                if line is not None:
                    console.print(line, soft_wrap=True)
            return
        # Not a terminal (journald, a file): plain lines, one write per batch.
        lines = []
        for event in events:
            text = describe(event)
            if text is not None:
                lines.append(f"{time.strftime('%H:%M:%S', time.localtime(event.at))} {text}\n")
        if lines:
            console.file.write("".join(lines))
            console.file.flush()

    async def printer() -> None:
        while True:
            await sub.wait()
            await asyncio.sleep(0.05)  # let a burst gather: one write per batch
            emit(sub.drain())
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
        emit(sub.drain())
    return 0


def serve(config: Config) -> None:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run(run_headless(config, Console(highlight=False)))
