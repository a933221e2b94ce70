"""The console's DNS records screen (``r`` on the DNS panel), driven by Pilot against a real server and dnsmasq.

The world publishes example.test's MX and DKIM key as mailtui suggests, an
SPF record that does not authorise the mail host, and no DMARC record; the
mail host mail.test is 127.0.0.1, with its PTR.
"""

from __future__ import annotations

import asyncio

import pytest
from dnsworld import DNSMASQ, DnsWorld
from harness import make_config
from test_console import screen_text, until
from textual.widgets import TextArea

from mailtui.frontends.console.app import MailtuiApp
from mailtui.frontends.console.dialogs.dnsrecords import DnsRecordsScreen
from mailtui.mailauth.dkimkeys import DkimKeys

pytestmark = [pytest.mark.timeout(45), pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed")]


@pytest.fixture
def world(tmp_path):
    key = DkimKeys(tmp_path / "data").active("example.test")      # made before the server ever ran
    w = DnsWorld(mx=(("example.test", "mail.test", 10),), hosts=(("mail.test", "127.0.0.1"),), null_mx=(),
                 txt=(("example.test", "v=spf1 ip4:127.0.0.99 -all"), (key.record_name, key.record))).start()
    try:
        yield w
    finally:
        w.close()


def status_of(lines: list[str], text: str) -> str:
    """The status the one record line holding ``text`` ends with: present, missing, different ..."""
    [line] = [line for line in lines if text in line and not line.startswith(";")]
    return line.rsplit("\t; ", 1)[1].split(" - ")[0]


async def test_the_records_screen_checks_each_record_one_line_each(tmp_path, world):
    app = MailtuiApp(make_config(tmp_path / "data", dns={"nameservers": [str(world.endpoint)], "timeout": 1.0}))
    async with app.run_test(size=(120, 36)) as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        await pilot.press("3", "r")
        await until(pilot, lambda: isinstance(app.screen, DnsRecordsScreen), "the records screen")
        text = app.screen.query_one(TextArea)
        await until(pilot, lambda: "; the MTA-STS policy file" in text.text, "the report", timeout=15)
        lines = text.text.split("\n")
        assert lines[0].startswith("; example.test: the records to publish")
        assert status_of(lines, "\tMX\t") == "present"
        assert status_of(lines, "mailtui._domainkey.example.test.") == "present"
        [dkim] = [line for line in lines if line.startswith("mailtui._domainkey.example.test.")]
        assert '"v=DKIM1; k=rsa; p=' in dkim
        assert len(dkim) > 300                     # longer than the screen is wide, and still one line
        assert status_of(lines, '"v=spf1 mx -all"').startswith("different")
        assert status_of(lines, "_dmarc.example.test.") == "missing"
        assert any("mail.test" in line and "PTR" in line and "present" in line for line in lines)
        assert not text.soft_wrap and text.document.line_count == len(lines)
        await until(pilot, lambda: text.max_scroll_x > 0, "a view wider than the screen")
        await pilot.press(*["down"] * lines.index(dkim), "end")       # the end of the key's line comes into view
        await until(pilot, lambda: text.scroll_x > 0, "the view to scroll sideways")

        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DnsRecordsScreen), "the screen to close")
        checks = [e for e in app.model.dns if e.purpose == "CHECK"]
        assert {e.name.rstrip(".") for e in checks} >= {"example.test", "mailtui._domainkey.example.test"}
        await until(pilot, lambda: "CHECK" in screen_text(app), "the lookups with their purpose in the DNS panel")
        await app.lifecycle.stop()
