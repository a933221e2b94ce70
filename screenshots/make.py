"""Regenerate the console screenshots from the demo: ``python screenshots/make.py``.

Runs the demo world (DNS, remote mail hosts and traffic, all on loopback) with
the console in a headless 120x36 terminal, waits until every panel has data,
and saves one SVG per panel, the help screen and the registration form next
to this file.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mailtui.frontends.console.app import MailtuiApp  # noqa: E402
from mailtui.frontends.console.runner import capture_logs  # noqa: E402
from mailtui.frontends.console.widgets import LiveTable  # noqa: E402
from mailtui.frontends.demo.world import DemoWorld  # noqa: E402

SIZE = (120, 36)


async def wait_until(pilot, predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        await pilot.pause(0.2)


async def shoot(app: MailtuiApp, pilot, world: DemoWorld) -> None:
    model = app.model
    await wait_until(pilot, app.lifecycle.ready.is_set, "the server to start")
    for _ in range(2):  # a fuller queue: busy.test defers every attempt
        await world.send("busy")
    await wait_until(pilot, lambda: any(r.outcome == "refused" for r in model.sessions.values())
                     and model.counters.delivered >= 6 and model.counters.bounced >= 2
                     and len(model.dns) >= 20 and len(app.core.queue) >= 3
                     and any(item.attempts >= 2 for item in app.core.queue.items()),
                     "traffic on every panel")
    app.clear_notifications()

    async def shot(name: str) -> None:
        await pilot.pause(0.5)
        app.save_screenshot(f"{name}.svg", str(HERE))
        print(f"screenshots/{name}.svg")

    # Connections with a refused session selected: its detail says how to register it.
    await pilot.press("1")
    connections = app.query_one("#connections-table", LiveTable)
    refused = [row for row in connections.rows if row.outcome == "refused"][-1]
    connections.select_key(refused.key)
    await shot("connections")
    await pilot.press("2")
    await shot("clients")
    await pilot.press("3")
    await shot("dns")
    await pilot.press("4")
    queue = app.query_one("#queue-table", LiveTable)
    queue.select_key(max(queue.rows, key=lambda row: row.attempts).key)
    await shot("queue")
    await pilot.press("5")
    await shot("log")
    await pilot.press("question_mark")
    await shot("help")
    await pilot.press("escape", "1")
    connections.select_key(refused.key)
    await pilot.press("r")
    await shot("register")
    await pilot.press("escape")
    await app.lifecycle.stop()


async def main() -> None:
    async with DemoWorld(seed=7) as world:
        app = MailtuiApp(world.config)
        world.start_traffic(app.lifecycle.ready.wait)
        with capture_logs(app.log_records):
            async with app.run_test(size=SIZE) as pilot:
                await shoot(app, pilot, world)


if __name__ == "__main__":
    asyncio.run(main())
