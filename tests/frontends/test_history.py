"""A console that runs its own server: the stored history after a restart, and quitting only when asked."""

from __future__ import annotations

import asyncio
import socket

import pytest
from harness import RunningServer, make_config
from test_attach import send
from test_console import on_screen, screen_text, table, until

from mailtui.frontends.console.app import MailtuiApp, QuitDialog
from mailtui.frontends.console.batch import HISTORY_NOTE
from mailtui.frontends.console.widgets import LiveTable

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def history(tmp_path):
    """A data directory whose server took one message and refused another, then stopped."""
    srv = RunningServer(make_config(tmp_path / "data")).start()
    try:
        srv.add_client("lab", "127.0.0.1/32")
        assert send(srv.smtp_port) == "accepted"
        assert send(srv.smtp_port, "127.0.0.9") != "accepted"
        srv.wait_for(lambda: len(srv.core.store.recent("connections")) == 2, what="the stored connections")
    finally:
        srv.stop()
    return tmp_path / "data"


async def test_after_a_restart_the_console_shows_the_stored_history(history):
    app = MailtuiApp(make_config(history))
    async with app.run_test(size=(120, 36)) as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        assert not app.lifecycle.attached
        connections = table(app, "connections")
        await until(pilot, lambda: len(connections.rows) == 2, "the stored connections")
        assert [(row.peer, row.outcome, row.history) for row in connections.rows] == \
            [("127.0.0.1", "accepted", True), ("127.0.0.9", "refused", True)]
        await until(pilot, lambda: "No connections yet" not in screen_text(app), "the rows on screen")
        await pilot.press("5")
        log = app.query_one("#log-tab", LiveTable)
        texts = lambda: [line.text.plain for line in log.rows]  # noqa: E731
        await until(pilot, lambda: any(HISTORY_NOTE in text for text in texts()), "the stored deliveries")
        assert any("delivered to mailbox postmaster@localhost" in text for text in texts())

        # A refused connection from before the restart can still be registered.
        await pilot.press("1")
        connections.select_key(connections.rows[-1].key)
        await pilot.press("r")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ClientForm", "the form")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.core.registry.match("127.0.0.9") == "host-127-0-0-9", "the registration")
        await app.lifecycle.stop()


async def test_quitting_a_console_that_owns_its_server_asks_first(tmp_path):
    app = MailtuiApp(make_config(tmp_path / "data"))
    async with app.run_test() as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        port = app.core.port("smtp")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitDialog), "the question")
        await on_screen(pilot, "Stop the mail server?")
        await pilot.press("n")            # no: the server runs on
        await until(pilot, lambda: not isinstance(app.screen, QuitDialog), "the answer")
        assert app.lifecycle.running
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitDialog), "the question again")
        await pilot.press("enter")        # Enter says yes
        await until(pilot, lambda: app.lifecycle.phase == "stopped", "the stop")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.parametrize("key", ["y", "ctrl+q"])
async def test_y_in_the_question_or_ctrl_q_anywhere_quits(tmp_path, key):
    app = MailtuiApp(make_config(tmp_path / "data"))
    async with app.run_test() as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        if key == "y":
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitDialog), "the question")
        await pilot.press(key)
        await until(pilot, lambda: app.lifecycle.phase == "stopped", "the stop")
    assert app.return_code == 0
