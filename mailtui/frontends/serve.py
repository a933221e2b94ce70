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
from ..server.status import StatusReporter
from .describe import describe, render
from .errors import CliError
from .loop import install_signal_handlers, run

STATUS_EVERY = 60.0


def emit(console: Console, events) -> None:
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


async def print_events(console: Console, sub) -> None:
    while True:
        await sub.wait()
        await asyncio.sleep(0.05)  # let a burst gather: one write per batch
        emit(console, sub.drain())
        if sub.dropped:
            console.print(f"({sub.dropped} events not shown: output too slow)", style="dim")
            sub.dropped = 0


async def print_status(console: Console, reporter: StatusReporter, every: float, now: asyncio.Event) -> None:
    """The status line every ``every`` seconds, and whenever ``now`` is set (SIGUSR1)."""
    while True:
        try:
            async with asyncio.timeout(every):
                await now.wait()
        except TimeoutError:
            pass
        now.clear()
        line = reporter.report().line()
        if console.is_terminal:
            console.print(line, style="dim", markup=False, soft_wrap=True)
        else:
            console.file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            console.file.flush()


def _on_sigusr1(loop: asyncio.AbstractEventLoop, callback=None) -> None:
    """Install (or, without ``callback``, remove) the SIGUSR1 handler, where signals can be had."""
    try:
        if callback is None:
            loop.remove_signal_handler(signal.SIGUSR1)
        else:
            loop.add_signal_handler(signal.SIGUSR1, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
        pass


async def run_headless(config: Config, console: Console, stop: asyncio.Event | None = None,
                       status_every: float = STATUS_EVERY) -> int:
    bus = EventBus()
    sub = bus.subscribe(maxsize=50_000)
    core = Core(config, bus=bus)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    install_signal_handlers(loop, stop)
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
    status_now = asyncio.Event()
    _on_sigusr1(loop, status_now.set)
    tasks = [asyncio.create_task(print_events(console, sub)),
             asyncio.create_task(print_status(console, core.status_reporter(), status_every, status_now))]
    await asyncio.sleep(0)  # print the listener events first
    try:
        await stop.wait()
    finally:
        console.print("stopping ...", style="dim")
        _on_sigusr1(loop)
        await core.stop()
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        emit(console, sub.drain())
    return 0


def serve(config: Config) -> None:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run(run_headless(config, Console(highlight=False)))
