"""The pieces of remote delivery over one spool directory, for the tests in tests/send.

A real queue, store and resolver, the real transfer agent and scheduler; only
``submit`` (where DSNs go) is a recorder. With tests/dnsworld.py's dnsmasq and
fake mail hosts this is the whole of remote delivery, on loopback.

The fixtures (``smtp_port``, ``harnesses``) live here, not in a conftest.py:
a second ``conftest`` module would shadow tests/conftest.py for the test
modules that import from it. Test modules import them (``*_fixture``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
from dataclasses import replace
from pathlib import Path

import pytest
from dnsworld import EventLog, free_port

from mailtui.config import Config, Endpoint
from mailtui.dns.resolver import Resolver
from mailtui.events import EventBus
from mailtui.send.attempt import TransferAgent
from mailtui.send.courier import Courier
from mailtui.send.scheduler import Scheduler
from mailtui.store.db import Store
from mailtui.store.queue import Queue, QueueItem

BODY = (b"From: Alice <alice@local.test>\n"
        b"To: Bob <bob@mx.test>\n"
        b"Subject: remote delivery\n"
        b"Message-ID: <1@local.test>\n"
        b"\n"
        b"Hello Bob.\n"
        b".a line starting with a dot\n"
        b".\n"
        b"bye\n")
WIRE_BODY = BODY.replace(b"\n", b"\r\n")
LOOPBACKS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


class Dsns:
    """A ``submit`` that records DSNs (or fails, when told to)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.error: Exception | None = None

    async def submit(self, sender: str, recipients: list[str], body: bytes) -> str:
        if self.error is not None:
            raise self.error
        self.sent.append((sender, recipients, body))
        return f"DSN{len(self.sent)}"

    def parsed(self, index: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.sent[index][2], policy=email.policy.default)


def make_config(tmp_path: Path, nameservers: tuple[Endpoint, ...], smtp_port: int,
                dns_timeout: float = 1.0, **delivery) -> Config:
    settings = {"remote_port": smtp_port, "retry_intervals": (0.2, 0.2), "max_attempts": 3,
                "retry_jitter": 0.0, "connect_timeout": 1.0, "command_timeout": 3.0,
                "max_concurrency": 4, "max_per_domain": 2} | delivery
    # dataclasses.replace, not config.with_overrides: these are typed values, not TOML.
    base = Config()
    return replace(
        base,
        server=replace(base.server, hostname="mail.local.test", data_dir=tmp_path,
                       local_domains=("local.test",)),
        dns=replace(base.dns, nameservers=nameservers, timeout=dns_timeout),
        delivery=replace(base.delivery, **settings))


class Harness:
    """Queue + resolver + transfer agent + scheduler over one spool directory."""

    def __init__(self, tmp_path: Path, config: Config, dsns: Dsns | None = None,
                 courier: Courier | None = None):
        self.tmp_path = tmp_path
        self.config = config
        self.bus = EventBus()
        self.events = EventLog(self.bus)
        self.store = Store(tmp_path / "db")
        self.queue = Queue(tmp_path / "spool", store=self.store)
        self.queue.load()
        self.resolver = Resolver(config.dns.nameservers, config.dns.timeout, self.bus, self.store)
        self.dsns = dsns or Dsns()
        self.transfer = TransferAgent(config=config, queue=self.queue, resolver=self.resolver,
                                      bus=self.bus, submit=self.dsns.submit, store=self.store,
                                      courier=courier, rng=random.Random(7))
        self.scheduler = Scheduler(config=config, queue=self.queue, bus=self.bus,
                                   transfer=self.transfer, stop_grace=1.0)
        self.task: asyncio.Task | None = None

    def start(self) -> Harness:
        self.task = asyncio.create_task(self.scheduler.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            await asyncio.wait_for(self.scheduler.stop(), 5)
            await asyncio.wait_for(self.task, 5)
            self.task = None

    async def enqueue(self, recipients: list[str], sender: str = "alice@local.test",
                      body: bytes = BODY, **kw) -> QueueItem:
        return await self.queue.enqueue(sender, recipients, body, **kw)

    async def wait_settled(self, msg_id: str, timeout: float = 10.0) -> None:
        """Wait until the message has left the queue and its spool files are gone."""
        files = [self.queue.dir / f"{msg_id}{ext}" for ext in (".msg", ".json")]

        async def gone() -> None:
            while self.queue.get(msg_id) is not None or any(f.exists() for f in files):
                await asyncio.sleep(0.02)
        await asyncio.wait_for(gone(), timeout)


@pytest.fixture(name="smtp_port")
def smtp_port_fixture() -> int:
    """A port free for SMTP on every loopback address the fake mail hosts use."""
    return free_port(LOOPBACKS)


@pytest.fixture(name="harnesses")
async def harnesses_fixture():
    """Makes harnesses; each one still running at the end is stopped."""
    made: list[Harness] = []

    def make(tmp_path: Path, config: Config, dsns: Dsns | None = None,
             courier: Courier | None = None) -> Harness:
        h = Harness(tmp_path, config, dsns, courier)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.stop()


async def until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def spool_files(tmp_path: Path) -> list[str]:
    # dot-files are atomic_write's temporaries of a save in progress
    return sorted(p.name for p in (tmp_path / "spool").iterdir() if p.is_file() and not p.name.startswith("."))
