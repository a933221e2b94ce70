"""Consoles attached to ``mailtui serve`` while it takes a load, and how late they see its events.

    python bench/run.py --attached [--only local-10x4k,attached-10x4k]

The ``attached-10x4k`` load is ``local-10x4k`` with, attached to the server
over its control socket for the whole round:

* three real consoles (``mailtui console --attach``), each under a pty whose
  output is read as a terminal reads it;
* one browser tab (``mailtui web``, Debian's chromium driven by Playwright, at
  nice 10 like the consoles: it stands in for the administrator's own machine);
* a probe: the console's own attach and batch code (``AttachedServer``,
  ``Batcher``, ``ConsoleModel``) without the drawing, in a process of its
  own, which notes for every ``MessageAccepted`` how long after the event it
  was folded into the model, on the console's own tick (what the screen
  draws at that tick). The issue's target: within 0.5 s at 500 msg/s.

Its rate is compared with ``local-10x4k`` of the same run (target ≥ 0.9×).
``python bench/attached.py --probe CONFIG`` runs the probe alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import log, stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ESCAPES = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]")


class PtyConsole:
    """``mailtui console --attach`` in a 200x50 pty, its output drained as a terminal would."""

    def __init__(self, config: Path, env: dict, cwd: Path) -> None:
        import fcntl
        import struct
        import termios
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))

        def controlling_tty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(config), "console",
                                      "--attach"], stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                     env=dict(env, TERM="xterm-256color", COLORTERM="truecolor"),
                                     start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self.master = master
        self.screen = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.screen += chunk
            del self.screen[:-200_000]

    def attached(self) -> bool:
        return b"attached to pid" in ESCAPES.sub(b"", bytes(self.screen))

    def stop(self) -> None:
        stop_process(self.proc, timeout=20, group=True)
        try:
            os.close(self.master)
        except OSError:
            pass


class BrowserTab:
    """``mailtui web`` and one chromium tab on it (Playwright, Debian's chromium)."""

    def __init__(self, config: Path, env: dict, cwd: Path) -> None:
        self.web = subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(config), "web", "--listen",
                                     "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    cwd=cwd, env=env, start_new_session=True)
        url = re.search(r"(http://\S+/)", self.web.stdout.readline() or "")
        if url is None:
            self.stop()
            raise RuntimeError("mailtui web did not start")
        from playwright.sync_api import sync_playwright
        self._playwright = sync_playwright().start()
        self.profile = profile = tempfile.mkdtemp(prefix="mailtui-bench-chromium-")
        self.context = self._playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 800})
        give_way(profile)
        self.frames = 0
        page = self.context.new_page()
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        page.goto(url.group(1), timeout=30_000)
        self.page = page

    def _frame(self, payload) -> None:
        self.frames += 1

    def attached(self) -> bool:
        self.page.wait_for_timeout(200)
        return self.frames > 5

    def stop(self) -> None:
        for close in (lambda: self.context.close(), lambda: self._playwright.stop()):
            try:
                close()
            except Exception:
                pass
        stop_process(self.web, timeout=20, group=True)
        shutil.rmtree(getattr(self, "profile", ""), ignore_errors=True)


def give_way(marker: str, niceness: int = 10) -> None:
    """Lower the CPU priority of every thread of the processes whose command line holds ``marker``.

    The browser stands in for the administrator's own machine (through an SSH
    tunnel it runs there, not on the mail server); the consoles lower their own
    priority (mailtui.frontends.loop.give_way), and so does ``mailtui web``.
    """
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or marker.encode() not in (entry / "cmdline").read_bytes():
                continue
            for task in (entry / "task").iterdir():
                os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
        except OSError:
            continue


class AttachedLoad:
    """Everything attached to one target for one round; ``stop()`` returns the probe's figures."""

    def __init__(self, target, *, consoles: int = 3, browser: bool = True) -> None:
        from targets import mailtui_env
        code = target.code
        env = mailtui_env(code=code)
        self.parts: list = [PtyConsole(target.config, env, code) for _ in range(consoles)]
        if browser:
            self.parts.append(BrowserTab(target.config, env, code))
        self.probe = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--probe", str(target.config)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=code, env=env)
        deadline = time.monotonic() + 60
        while not all(part.attached() for part in self.parts):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the consoles did not attach within 60 s")
            time.sleep(0.2)
        time.sleep(1.0)   # past their first snapshot and drawing
        log(f"attached: {consoles} consoles{' and a browser tab' if browser else ''}, and the lag probe")

    def stop(self) -> dict:
        figures: dict = {}
        if self.probe.poll() is None:
            try:
                out, _ = self.probe.communicate("stop\n", timeout=20)
                figures = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                self.probe.kill()
                self.probe.wait()
        for part in self.parts:
            part.stop()
        return figures


# -- the probe (a process of its own) ---------------------------------------------------------

async def probe(config_path: str) -> dict:
    """Attach as a console does; fold on the console's tick; note each message's lag until stdin closes."""
    from collections import deque

    from mailtui.config import load
    from mailtui.events import EventBus, MessageAccepted
    from mailtui.frontends.console.attached import AttachedServer
    from mailtui.frontends.console.batch import TICK, Batcher
    from mailtui.frontends.console.model import ConsoleModel

    bus = EventBus()
    subscription = bus.subscribe(maxsize=50_000)
    lags: list[float] = []

    class Timed:
        """The subscription, as the batch drains it: each message's lag is noted then."""

        dropped = property(lambda self: subscription.dropped)

        def drain(self):
            events = subscription.drain()
            now = time.time()
            lags.extend(now - e.at for e in events if isinstance(e, MessageAccepted))
            return events

    batch = Batcher(Timed(), ConsoleModel(), deque())   # type: ignore[arg-type]
    server = AttachedServer(load(config_path), bus=bus)
    await server.start()
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    while not stdin_closed.done():
        await asyncio.sleep(TICK)
        batch.next()
    await server.stop()
    lags.sort()
    pick = (lambda q: round(lags[min(len(lags) - 1, int(q * len(lags)))], 3)) if lags else (lambda q: None)
    return {"lag_messages": len(lags), "lag_p50_s": pick(0.5), "lag_p99_s": pick(0.99),
            "lag_max_s": round(lags[-1], 3) if lags else None,
            "lag_mean_s": round(statistics.fmean(lags), 3) if lags else None,
            "lag_over_0.5s": sum(lag > 0.5 for lag in lags), "resyncs": max(0, server.attaches - 1),
            "dropped": subscription.dropped}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probe", metavar="CONFIG", required=True, help="attach to the server of CONFIG; print the "
                                                                    "lag figures as JSON when stdin says stop")
    args = p.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(json.dumps(asyncio.run(probe(args.probe))), flush=True)


if __name__ == "__main__":
    main()
