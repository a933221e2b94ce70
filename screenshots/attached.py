"""The attached console and the browser view: ``python screenshots/attached.py``.

Runs the demo world's server on its own (as ``mailtui serve`` would), lets
traffic build a history, then attaches a console to it (a headless 120x36
terminal: ``attached.svg``) and opens ``mailtui web`` in Debian's chromium
through Playwright (``browser.png``), next to this file.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mailtui.config import load  # noqa: E402
from mailtui.frontends.config_dump import dump  # noqa: E402
from mailtui.frontends.console.app import MailtuiApp  # noqa: E402
from mailtui.frontends.console.runner import capture_logs  # noqa: E402
from mailtui.frontends.console.widgets import LiveTable  # noqa: E402
from mailtui.frontends.demo.world import DemoWorld  # noqa: E402
from mailtui.server.core import Core  # noqa: E402

SIZE = (120, 36)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def console_shot(config_path: Path, world: DemoWorld, core: Core) -> None:
    app = MailtuiApp(load(config_path))
    with capture_logs(app.log_records):
        async with app.run_test(size=SIZE) as pilot:
            await asyncio.wait_for(app.lifecycle.ready.wait(), 20)
            before = core.stats.totals.accepted
            await world.send("stranger")
            await world.send("local")
            await wait_until(lambda: core.stats.totals.accepted > before and app.model.counters.refused >= 2,
                             "live traffic on the attached console")
            await pilot.pause(1.0)
            app.clear_notifications()
            connections = app.query_one("#connections-table", LiveTable)
            refused = [row for row in connections.rows if row.outcome == "refused" and not row.history][-1]
            connections.select_key(refused.key)
            await pilot.pause(0.5)
            app.save_screenshot("attached.svg", str(HERE))
            print("screenshots/attached.svg")
            await app.lifecycle.stop()


async def browser_shot(config_path: Path) -> None:
    from playwright.async_api import async_playwright

    web = await asyncio.create_subprocess_exec(sys.executable, "-m", "mailtui", "--config", str(config_path), "web",
                                               "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(web.stdout.readline(), 20)).decode()
        url = re.search(r"(http://\S+/)", line).group(1)
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(config_path.parent / "chromium"), executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                headless=True, viewport={"width": 1280, "height": 760})
            page = await context.new_page()
            await page.goto(url)
            await page.wait_for_timeout(6000)    # the tab's console starts, attaches and draws
            await page.mouse.click(640, 380)
            await page.keyboard.press("2")       # the Clients panel
            await page.wait_for_timeout(1500)
            await page.screenshot(path=str(HERE / "browser.png"))
            print("screenshots/browser.png")
            await context.close()
    finally:
        web.terminate()
        await web.wait()


async def main() -> None:
    async with DemoWorld(seed=7) as world:
        folder = tempfile.TemporaryDirectory(prefix="mailtui-shot-")
        config_path = Path(folder.name) / "mailtui.toml"
        config_path.write_text(dump(world.config))
        core = Core(world.config)            # the service, as `mailtui serve` runs it
        await core.start()
        try:
            traffic = world.start_traffic()
            await wait_until(lambda: core.stats.totals.delivered >= 6 and core.stats.totals.refused >= 1
                             and core.stats.totals.bounced >= 1, "a history on every panel")
            traffic.cancel()
            await core.store.flush()
            await console_shot(config_path, world, core)
            await browser_shot(config_path)
        finally:
            await core.stop()
            folder.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
