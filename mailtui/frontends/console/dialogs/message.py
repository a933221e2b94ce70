"""A queued message: envelope, recipient states, headers and text (read only)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

from ....wire import printable

STATE_STYLES = {"deferred": "yellow", "failed": "red", "delivered": "green", "queued": ""}


def message_text(shown: dict) -> Text:
    """The result of ``Admin.queue_show`` as text for people."""
    text = Text()
    arrived = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(shown["arrival"]))
    text.append("From      ", style="bold")
    text.append(f"<{shown['sender']}>\n" if shown["sender"] else "<> (a bounce)\n")
    text.append("Arrived   ", style="bold")
    text.append(f"{arrived} · {shown['size']} bytes · {shown['attempts']} attempt(s)\n")
    for rcpt in shown["recipients"]:
        text.append("To        ", style="bold")
        text.append(f"{rcpt['address']} ")
        text.append(rcpt["state"], style=STATE_STYLES.get(rcpt["state"], ""))
        if rcpt.get("last_error"):
            text.append(f" — {printable(rcpt['last_error'], keep_lines=True)}", style="dim")
        text.append("\n")
    text.append("\n")
    text.append(printable(shown["text"].replace("\r\n", "\n"), keep_lines=True))
    if shown["size"] > len(shown["text"]):
        text.append("\n… (only the beginning is shown)", style="dim italic")
    return text


class MessageView(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,v", "dismiss", "Close")]

    def __init__(self, shown: dict) -> None:
        super().__init__()
        self.shown = shown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="message-dialog"):
            yield Label(f"Queued message {self.shown['id']}", classes="dialog-title")
            with VerticalScroll(id="message-body"):
                yield Static(message_text(self.shown), markup=False)
            yield Static("↑ ↓ PgUp PgDn scroll", classes="dialog-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#message-body").focus()
