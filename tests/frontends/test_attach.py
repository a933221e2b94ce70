"""The console attached to a running server: Pilot against a real Core in another thread and event loop.

The server is a :class:`RunningServer` (as ``mailtui serve`` runs it, with its
own loop and the data directory's lock); the console finds the lock taken and
attaches over the control socket, as it does to a service. Mail is sent with
smtplib from threads, so the console's loop keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
from pathlib import Path

import pytest
from harness import PASSWORD, RunningServer, make_config
from test_console import on_screen, screen_text, table, type_text, until
from textual.widgets import Input

from mailtui import events as ev
from mailtui.admin import attach
from mailtui.events import EventBus
from mailtui.frontends.console.app import MailtuiApp, QuitDialog
from mailtui.frontends.console.attached import AttachedServer
from mailtui.frontends.console.dialogs import ClientForm, ConfirmDialog, MailboxForm

pytestmark = pytest.mark.timeout(60)


def send(port: int, source: str = "127.0.0.1", rcpt: str = "postmaster@example.test") -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        try:
            client.sendmail("someone@example.org", [rcpt], b"Subject: attached\r\n\r\nhello\r\n")
        except smtplib.SMTPException as exc:
            return f"refused: {exc}"
    return "accepted"


@pytest.fixture
def server(tmp_path):
    srv = RunningServer(make_config(tmp_path / "data")).start()
    try:
        yield srv
    finally:
        if srv.core.started:
            srv.stop()


@contextlib.asynccontextmanager
async def attached(data_dir: Path, size=(120, 36), **kwargs):
    app = MailtuiApp(make_config(data_dir), **kwargs)
    async with app.run_test(size=size) as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        assert app.lifecycle.attached
        yield app, pilot
        await app.lifecycle.stop()


async def test_the_console_attaches_with_the_snapshot_then_live_events(server, tmp_path):
    server.add_client("lab", "127.0.0.1/32")
    assert send(server.smtp_port) == "accepted"
    assert send(server.smtp_port, "127.0.0.9").startswith("refused")
    server.wait_for(lambda: len(server.core.store.recent("connections")) == 2, what="the stored connections")
    async with attached(tmp_path / "data") as (app, pilot):
        connections = table(app, "connections")
        await until(pilot, lambda: len(connections.rows) == 2, "the stored connections")
        assert all(row.history for row in connections.rows)
        assert [row.outcome for row in connections.rows] == ["accepted", "refused"]
        shown = await on_screen(pilot, f"attached to pid {server.core.status()['pid']}",
                                f"SMTP 127.0.0.1:{server.smtp_port}", "127.0.0.9")
        assert "No connections yet" not in shown
        assert (app.model.counters.accepted, app.model.counters.refused) == (1, 1)

        assert await asyncio.to_thread(send, server.smtp_port) == "accepted"   # live, from now on
        await until(pilot, lambda: len(connections.rows) == 3 and connections.rows[-1].outcome == "accepted",
                    "the live session")
        assert not connections.rows[-1].history and connections.rows[-1].client == "lab"
        await until(pilot, lambda: app.model.counters.delivered == 2, "the delivery")
        await pilot.press("2")
        await until(pilot, lambda: [r.name for r in table(app, "clients").rows] == ["lab"], "the clients")


async def test_a_refused_client_is_registered_from_an_attached_console(server, tmp_path):
    async with attached(tmp_path / "data") as (app, pilot):
        assert await asyncio.to_thread(send, server.smtp_port, "127.0.0.9") != "accepted"
        connections = table(app, "connections")
        await until(pilot, lambda: connections.rows and connections.rows[-1].outcome == "refused", "the refusal")
        await pilot.press("r")
        form = await until(pilot, lambda: isinstance(app.screen, ClientForm) and app.screen, "the form")
        assert form.query_one("#networks", Input).value == "127.0.0.9/32"
        await pilot.press("ctrl+s")
        server.wait_for(lambda: server.core.registry.match("127.0.0.9") == "host-127-0-0-9", 10,
                        "the registration, in the server")
        await pilot.press("2")
        await until(pilot, lambda: [r.name for r in table(app, "clients").rows] == ["host-127-0-0-9"],
                    "the new client, fetched again")
        assert await asyncio.to_thread(send, server.smtp_port, "127.0.0.9") == "accepted"


async def test_forms_and_queue_actions_reach_the_server(server, tmp_path):
    server.add_client("lab", "127.0.0.1/32")
    async with attached(tmp_path / "data") as (app, pilot):
        await pilot.press("2", "m")
        await until(pilot, lambda: isinstance(app.screen, MailboxForm), "the mailbox form")
        await type_text(pilot, "carol@example.test")
        await pilot.press("tab")
        await type_text(pilot, PASSWORD)
        await pilot.press("tab")
        await type_text(pilot, PASSWORD)
        await pilot.press("enter")
        server.wait_for(lambda: server.core.registry.has_mailbox("carol@example.test"), 10, "the mailbox")

        # Remote mail meets a dead nameserver: it waits in the queue.
        assert await asyncio.to_thread(send, server.smtp_port, "127.0.0.1", "you@remote.test") == "accepted"
        await pilot.press("4")
        queue = table(app, "queue")
        await until(pilot, lambda: len(queue.rows) == 1, "the queued message")
        msg_id = queue.rows[0].key
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the question")
        await pilot.press("y")
        server.wait_for(lambda: server.core.queue.get(msg_id) is None, 10, "the removal, in the server")
        await until(pilot, lambda: not queue.rows, "the row to go")
        assert server.events_of(ev.QueueChanged)[-1].action == "remove"


async def test_the_console_says_when_the_server_stops_and_attaches_again(server, tmp_path):
    async with attached(tmp_path / "data") as (app, pilot):
        await asyncio.to_thread(server.stop)
        await until(pilot, lambda: app.lifecycle.phase == "waiting", "the console to notice")
        await on_screen(pilot, "the mail server stopped: waiting for it")
        again = await asyncio.to_thread(lambda: RunningServer(make_config(tmp_path / "data")).start())
        try:
            await until(pilot, lambda: app.lifecycle.phase == "running", "the console to attach again")
            await on_screen(pilot, f"SMTP 127.0.0.1:{again.smtp_port}")
            assert await asyncio.to_thread(send, again.smtp_port, "127.0.0.9") != "accepted"
            connections = table(app, "connections")
            await until(pilot, lambda: connections.rows and connections.rows[-1].outcome == "refused"
                        and not connections.rows[-1].history, "a live event from the new server")
        finally:
            await asyncio.to_thread(again.stop)


async def test_a_console_that_fell_behind_starts_over_from_a_new_snapshot(server, tmp_path, monkeypatch):
    monkeypatch.setattr(attach, "BUS_QUEUE", 20)   # the server's stream overflows at once
    async with attached(tmp_path / "data") as (app, pilot):
        first = app.core.attaches
        server.call(lambda: [server.bus.publish(ev.Notice(level="info", text=str(n))) for n in range(200)])
        await until(pilot, lambda: app.core.attaches == first + 1, "the new snapshot")
        assert app.lifecycle.phase == "running" and server.core.control.hub.resyncs == 1
        assert await asyncio.to_thread(send, server.smtp_port, "127.0.0.9") != "accepted"
        await until(pilot, lambda: app.model.counters.refused == 1, "events after the new snapshot")


async def test_two_consoles_attach_at_once_and_quitting_leaves_the_server_running(server, tmp_path):
    async with attached(tmp_path / "data") as (one, one_pilot):
        async with attached(tmp_path / "data") as (two, two_pilot):
            assert len(server.core.control.hub.consoles) == 2
            assert await asyncio.to_thread(send, server.smtp_port, "127.0.0.9") != "accepted"
            for app, pilot in ((one, one_pilot), (two, two_pilot)):
                await until(pilot, lambda app=app: app.model.counters.refused == 1, "the refusal on each console")
            await two_pilot.press("q")      # attached: no question
            await until(two_pilot, lambda: two.lifecycle.phase == "stopped", "the quit")
            assert not isinstance(two.screen, QuitDialog)
        server.wait_for(lambda: len(server.core.control.hub.consoles) == 1, what="one console to go")
        assert await asyncio.to_thread(send, server.smtp_port, "127.0.0.9") != "accepted"   # still serving
        await until(one_pilot, lambda: one.model.counters.refused == 2, "the other console, still live")
    assert server.core.started


async def test_a_console_for_the_browser_waits_for_a_server(tmp_path):
    app = MailtuiApp(make_config(tmp_path / "data"), attach_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.lifecycle.phase == "waiting", "the wait")
        assert "attached to pid" not in await on_screen(pilot, "no mail server answers on", "attaching")
        assert not (tmp_path / "data" / "mailtui.lock").exists()   # it never tried to run one
        srv = await asyncio.to_thread(lambda: RunningServer(make_config(tmp_path / "data")).start())
        try:
            await until(pilot, lambda: app.lifecycle.phase == "running", "the attach", timeout=10)
        finally:
            await app.lifecycle.stop()
            await asyncio.to_thread(srv.stop)


async def test_an_attached_console_shows_the_server_s_loop_lag(server, tmp_path, monkeypatch):
    monkeypatch.setattr(attach, "LAG_EVERY", 0.2)
    async with attached(tmp_path / "data") as (app, pilot):
        await until(pilot, lambda: app.core.lag.latest is not None, "the server's lag line")
        assert app.core.lag.latest.samples > 0      # the server's probe, sent over the stream
        await until(pilot, lambda: re.search(r"lag p99 \d+(\.\d)? ms · max \d+(\.\d)? ms", screen_text(app)),
                    "the lag figures in the header")


async def test_a_console_stopped_just_as_the_snapshot_arrives_detaches(server, tmp_path, monkeypatch):
    """A terminal that hangs up while the console attaches (an SSH link dropping) must still end it.

    The stop comes exactly between the snapshot's arrival and the attaching
    task's next step: on Python 3.11 ``asyncio.wait_for`` then returned the
    snapshot and dropped the cancellation, the task followed the stream for
    ever and ``stop()`` (and the console) waited for it for ever.
    """
    remote = AttachedServer(make_config(tmp_path / "data"), bus=EventBus())
    loop, stopping = asyncio.get_running_loop(), []
    readline = asyncio.StreamReader.readline

    async def snapshot_then_stop(reader: asyncio.StreamReader) -> bytes:
        line = await readline(reader)
        if asyncio.get_running_loop() is loop and b'"snapshot"' in line and not stopping:
            stopping.append(asyncio.ensure_future(remote.stop()))   # runs before the attaching task resumes
        return line

    monkeypatch.setattr(asyncio.StreamReader, "readline", snapshot_then_stop)
    await remote.start()
    deadline = loop.time() + 10
    while not stopping and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert stopping, "the snapshot never came"
    await asyncio.wait_for(asyncio.shield(stopping[0]), 5)
    assert remote._task.done()
    await asyncio.to_thread(server.wait_for, lambda: not server.core.control.hub.consoles, what="the detach")
