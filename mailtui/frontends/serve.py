"""``mailtui serve``: the core, headless, with one printed line per event.

Every ``status_every`` seconds, and at once on SIGUSR1, it also prints one
status line (counts over the period, sessions open, queue size, event-loop
lag p99 and max): the figures to watch in ``journalctl -u mailtui``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from rich.console import Console

from ..config import Config
from ..events import EventBus
from ..server.core import AlreadyRunning, Core
from .describe import describe, render
from .errors import CliError
from .loop import install_signal_handlers, run


STATUS_EVERY = 60.0


async def run_headless(config: Config, console: Console, stop: asyncio.Event | None = None,
                       status_every: float = STATUS_EVERY) -> int:
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
    if not any(li.ok for li in core.listeners):
        await core.stop()
        raise CliError("no listener could be bound; see the messages above")

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

    reporter = core.status_reporter()
    status_now = asyncio.Event()

    def print_status() -> None:
        line = reporter.report().line()
        if console.is_terminal:
            console.print(line, style="dim", markup=False, soft_wrap=True)
        else:
            console.file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            console.file.flush()

    async def status_lines() -> None:
        while True:
            try:
                async with asyncio.timeout(status_every):
                    await status_now.wait()
            except TimeoutError:
                pass
            status_now.clear()
            print_status()

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGUSR1, status_now.set)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
        pass
    tasks = [asyncio.create_task(printer()), asyncio.create_task(status_lines())]
    await asyncio.sleep(0)  # print the listener events first
    try:
        await stop.wait()
    finally:
        console.print("stopping ...", style="dim")
        try:
            loop.remove_signal_handler(signal.SIGUSR1)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        await core.stop()
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        emit(sub.drain())
    return 0


def serve(config: Config) -> None:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run(run_headless(config, Console(highlight=False)))
