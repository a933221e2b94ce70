"""``mailtui demo``: the console on a self-contained world on loopback.

Nothing to configure and nothing leaves the machine: :mod:`.world`
starts a DNS server and remote mail hosts on 127.0.0.0/8, writes a config
for a server on free ports, and sends traffic at it; this module runs that
server with the console (or headless, printing events like ``mailtui
serve``) and removes the temporary data directory afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from rich.console import Console

from .world import DemoWorld


async def _headless(world: DemoWorld, console: Console, seconds: float) -> None:
    from ..serve import run_headless

    stop = asyncio.Event()
    world.start_traffic()
    if seconds > 0:
        asyncio.create_task(_stop_later(world, seconds, stop))
    await run_headless(world.config, console, stop)


async def _stop_later(world: DemoWorld, seconds: float, stop: asyncio.Event) -> None:
    """Stop ``seconds`` after every kind of traffic was shown once (a slow machine still shows it all)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(world.shown_all.wait(), 60)
    await asyncio.sleep(seconds)
    stop.set()


async def _console(world: DemoWorld, seconds: float) -> None:
    from ..console.app import MailtuiApp
    from ..console.runner import run_app

    app = MailtuiApp(world.config, welcome=world.hint(), intro=world.describe(), handle_signals=True)
    world.start_traffic(app.lifecycle.ready.wait)

    async def quit_later(pilot) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(world.shown_all.wait(), 60)
        await asyncio.sleep(seconds)
        pilot.app.action_quit_now()

    await run_app(app, auto_pilot=quit_later if seconds > 0 else None)


def run_demo(headless: bool = False, seconds: float = 0) -> None:
    from ..loop import run

    console = Console(highlight=False)

    async def main() -> None:
        async with DemoWorld() as world:
            for note in world.notes:
                console.print(f"note: {note}", style="yellow", markup=False)
            if headless:
                console.print(world.describe(), markup=False)
                await _headless(world, console, seconds)
            else:
                await _console(world, seconds)

    if headless:
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    run(main())
