"""Run a real mailtui Core on loopback for tests, or the ``mailtui`` command.

The core runs in its own thread and event loop (as it does in production:
one loop owns everything), so tests can use blocking clients such as
smtplib, poplib, swaks and curl against it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mailtui.config import Config, from_mapping, with_overrides
from mailtui.events import Event, EventBus
from mailtui.server.core import Core

PASSWORD = "correct horse battery"
SUBMISSION = {"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"]}   # make_config(..., submission=SUBMISSION)


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """A config bound to free loopback ports with fast timers, plus overrides."""
    base = from_mapping({
        "server": {"hostname": "mail.test", "data_dir": str(data_dir),
                   "local_domains": ["localhost", "example.test"]},
        "smtp": {"listen": ["127.0.0.1:0"], "auth_failure_delay": 0.05},
        "pop3": {"listen": ["127.0.0.1:0"], "auth_failure_delay": 0.05},
        "imap": {"listen": ["127.0.0.1:0"], "auth_failure_delay": 0.05},
        "dns": {"nameservers": ["127.0.0.1:1"], "timeout": 1.0},
        "delivery": {"retry_intervals": [0.3], "max_attempts": 3, "connect_timeout": 2.0,
                     "command_timeout": 5.0},
        "logs": {"flush_interval": 0.1},
    })
    return with_overrides(base, **sections) if sections else base


def tls_context() -> ssl.SSLContext:
    """A client TLS context that takes the test server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def mailtui(*args: str, config: Path | None = None, stdin: str | None = None, timeout: float = 30):
    """Run ``python -m mailtui *args`` as a sysadmin would, with no config from the environment."""
    cmd = [sys.executable, "-m", "mailtui"]
    if config is not None:
        cmd += ["--config", str(config)]
    env = dict(os.environ, COLUMNS="200")
    env.pop("MAILTUI_CONFIG", None)
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=env)


def write_config(path: Path, data_dir: Path, extra: str = "") -> Path:
    """A config file for the CLI on free loopback ports; ``extra`` is appended TOML."""
    path.write_text(f'[server]\nhostname = "mail.test"\ndata_dir = "{data_dir}"\n'
                    f'local_domains = ["localhost", "example.test"]\n'
                    f'[smtp]\nlisten = ["127.0.0.1:0"]\n[pop3]\nlisten = ["127.0.0.1:0"]\n'
                    f'[imap]\nlisten = ["127.0.0.1:0"]\n{extra}')
    return path


class RunningServer:
    """A Core in a background event loop, with helpers to poke it."""

    def __init__(self, config: Config):
        self.config = config
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.add_listener(self.events.append)
        self.loop = asyncio.new_event_loop()
        self.core = Core(config, bus=self.bus)
        self._thread = threading.Thread(target=self.loop.run_forever, name="mailtui-core", daemon=True)

    def start(self) -> "RunningServer":
        self._thread.start()
        self.run(self.core.start())
        return self

    def stop(self) -> None:
        try:
            self.run(self.core.stop(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def run(self, coro, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10) -> Any:
        async def wrapper():
            return fn(*args)
        return self.run(wrapper(), timeout)

    @property
    def smtp_port(self) -> int:
        return self.core.port("smtp")

    @property
    def pop3_port(self) -> int:
        return self.core.port("pop3")

    @property
    def submission_port(self) -> int:
        """The STARTTLS submission listener (587-style); needs ``submission=SUBMISSION``."""
        return self.core.port("submission")

    @property
    def submissions_port(self) -> int:
        """The implicit-TLS submission listener (465-style)."""
        return self.core.port("submissions")

    @property
    def imap_port(self) -> int:
        return self.core.port("imap")

    @property
    def data_dir(self) -> Path:
        return self.config.server.data_dir

    def add_mailbox(self, address: str, password: str = PASSWORD) -> None:
        self.call(self.core.registry.add_mailbox, address, password)

    def add_client(self, name: str, *networks: str) -> None:
        self.call(self.core.registry.add_client, name, list(networks))

    def maildir_files(self, address: str) -> list[Path]:
        local, _, domain = address.partition("@")
        box = self.data_dir / "mail" / domain / local
        return sorted(p for sub in ("new", "cur") for p in (box / sub).glob("*") if p.is_file())

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def events_of(self, cls: type) -> list:
        return [e for e in list(self.events) if isinstance(e, cls)]
