"""``mailtui demo``: its loopback world, headless, and with the console."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from mailtui.dns.resolver import PermanentDnsError, Resolver
from mailtui.frontends.console.app import MailtuiApp
from mailtui.frontends.demo.world import DemoWorld, DemoZone, demo_records

pytestmark = pytest.mark.timeout(40)

HOSTS = {"accept": "127.0.0.2", "defer": "127.0.0.3", "reject": "127.0.0.4", "down": "127.0.0.6"}


def ask(zone: DemoZone, name: str, rtype: str) -> dns.message.Message:
    return dns.message.from_wire(zone.answer(dns.message.make_query(name, rtype).to_wire()))


def test_the_zone_answers_for_test_only():
    zone = DemoZone(demo_records(HOSTS))
    mx = ask(zone, "partner.test", "MX")
    assert mx.rcode() == dns.rcode.NOERROR and [r.to_text() for r in mx.answer[0]] == ["10 mx.partner.test."]
    assert [r.to_text() for r in ask(zone, "mx.busy.test", "A").answer[0]] == ["127.0.0.3"]
    assert [r.to_text() for r in ask(zone, "nullmx.test", "MX").answer[0]] == ["0 ."]
    nodata = ask(zone, "mx.partner.test", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    nx = ask(zone, "nowhere.test", "MX")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(zone, "example.com", "MX").rcode() == dns.rcode.REFUSED   # nothing leaves the machine
    assert zone.answer(b"garbage") is None


async def test_the_world_resolves_over_its_own_dns():
    async with DemoWorld() as world:
        resolver = Resolver(world.config.dns.nameservers, timeout=2)
        hosts = await resolver.mail_hosts("backup.test")
        down, accept = ("127.0.0.6", "127.0.0.2") if world.spread_out else ("127.0.0.1", "127.0.0.1")
        assert [(h.name, h.addresses) for h in hosts] == [("mx1.backup.test", [down]), ("mx2.backup.test", [accept])]
        with pytest.raises(PermanentDnsError, match="null MX"):
            await resolver.mail_hosts("nullmx.test")
        with pytest.raises(PermanentDnsError, match="NXDOMAIN"):
            await resolver.mail_hosts("nowhere.test")
        data_dir = world.data_dir
    assert not data_dir.exists()   # the temporary data directory goes with the world


async def test_every_panel_is_working_within_seconds():
    async with DemoWorld(interval=(0.3, 0.6), seed=1) as world:
        app = MailtuiApp(world.config, welcome=world.hint())
        world.start_traffic(app.lifecycle.ready.wait)
        async with app.run_test(size=(120, 36)) as pilot:
            model = app.model
            deadline = time.monotonic() + 15
            checks = {
                "an accepted session": lambda: any(r.outcome == "accepted" for r in model.sessions.values()),
                "a refused session": lambda: any(r.outcome == "refused" for r in model.sessions.values())
                or not world.spread_out,
                "a login": lambda: any(r.login for r in model.sessions.values()),
                "DNS lookups": lambda: len(model.dns) >= 5,
                "a queued message with an attempt": lambda: any(i.attempts for i in app.core.queue.items()),
                "local and remote deliveries": lambda: model.counters.delivered >= 3,
                "a bounce": lambda: model.counters.bounced >= 1,
            }
            while (missing := [what for what, ok in checks.items() if not ok()]) and time.monotonic() < deadline:
                await pilot.pause(0.2)
            assert not missing, f"after 15 s still no {missing}"
            for key, table in (("1", "#connections-table"), ("2", "#clients-table"), ("3", "#dns-table"),
                               ("4", "#queue-table")):
                await pilot.press(key)
                assert app.query_one(table).rows, table
            await pilot.press("q", "q")      # quit; q again says yes to stopping the demo's server
            await asyncio.wait_for(_stopped(pilot), 10)


async def _stopped(pilot) -> None:
    while pilot.app.lifecycle.phase != "stopped":
        await pilot.pause(0.1)


def test_headless_demo_prints_the_traffic_and_cleans_up():
    result = subprocess.run([sys.executable, "-m", "mailtui", "demo", "--headless", "--seconds", "3"],
                            capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in out + result.stderr
    for expected in ("SMTP listening on 127.0.0.1:", "(client office)", "delivered to mailbox",
                     "via mx.partner.test", "deferred kim", "bounced", "DNS MX partner.test", "logged in as"):
        assert expected in out, expected
    match = re.search(r"data in (\S+)", out.replace("\n", " "))
    assert match and not Path(match.group(1).rstrip(";")).exists()
