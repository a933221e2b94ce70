"""The DNS records screen: what ``mailtui dns`` prints, checked against the DNS now.

The same report as the command (:mod:`mailtui.frontends.dnsrecords`): each
local domain's records to publish as zone-file lines, each with what the DNS
answers (present, missing, different), then the mail host's A/AAAA and PTR.
The check runs in a worker through the server's resolver (its lookups show
in the DNS panel, purpose CHECK). Each record stays on one line, never
wrapped: the view scrolls sideways, and a selection copies as it is.
"""

from __future__ import annotations

import asyncio

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static, TextArea

from ....config import Config
from ....dns.resolver import Resolver
from ...dnsrecords import all_lines, domains_of, load_keys, reports
from ...errors import CliError

CHECKING = "; checking the DNS …"


async def record_lines(config: Config, resolver: Resolver) -> list[str]:
    """The report's lines, or one comment line saying why there is none."""
    try:
        domains = domains_of(config, None)
        keys = await asyncio.to_thread(load_keys, config, domains)
    except CliError as exc:
        return [f"; {exc}"]
    return all_lines(await reports(config, keys, resolver))


class DnsRecordsScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Close"), Binding("r", "check", "Check again")]
    DEFAULT_CSS = """
    #records-text { height: 1fr; margin-top: 1; border: none; padding: 0; }
    """

    def __init__(self, config: Config, resolver: Resolver) -> None:
        super().__init__()
        self.config = config
        self.resolver = resolver

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="records-dialog"):
            yield Label("DNS records to publish", classes="dialog-title")
            yield TextArea(CHECKING, read_only=True, soft_wrap=False, id="records-text")
            yield Static("← → ↑ ↓ scroll · select, then Ctrl+C copies · r check again · Esc close",
                         classes="dialog-hint")
        yield Footer()

    @property
    def text(self) -> TextArea:
        return self.query_one("#records-text", TextArea)

    def on_mount(self) -> None:
        self.text.focus()
        self.action_check()

    def action_check(self) -> None:
        self.text.load_text(CHECKING)
        self.run_worker(self._check(), name="DNS records check", group="dns-records", exclusive=True,
                        exit_on_error=False)

    async def _check(self) -> None:
        lines = await record_lines(self.config, self.resolver)
        self.text.load_text("\n".join(lines))
