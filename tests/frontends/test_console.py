"""The console, driven by Pilot against a real server on loopback, and its snapshots.

The app owns its Core, as it does for a sysadmin; mail is sent with smtplib
from a thread so the app's loop (which is also the server's) keeps running.
Snapshot scenes use a stand-in core with fixed data and a frozen clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import smtplib
import socket
import time
from collections import deque
from pathlib import Path

import pytest
from harness import PASSWORD, make_config
from rich.console import Console
from textual.widgets import Input, Static

from mailtui import events as ev
from mailtui.admin.verbs import Admin
from mailtui.config import from_mapping
from mailtui.frontends.console.app import MailtuiApp, QuitDialog
from mailtui.frontends.console.batch import BUSY_BATCH, PANELS, Batcher
from mailtui.frontends.console.dialogs import ClientForm, ConfirmDialog, MailboxForm
from mailtui.frontends.console.model import MAX_ROWS, ConsoleModel
from mailtui.frontends.console.widgets import LiveTable
from mailtui.frontends.console.widgets.table import Column, fit_columns
from mailtui.server.core import DataDirLock, Listener, open_state
from mailtui.server.lag import LagStats
from mailtui.server.stats import ServerStats

pytestmark = pytest.mark.timeout(30)


# -- helpers -----------------------------------------------------------------------------------

async def until(pilot, predicate, what: str = "condition", timeout: float = 8.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.1)


async def on_screen(pilot, *texts: str, timeout: float = 8.0) -> str:
    """What the terminal shows, once it shows every one of ``texts``.

    A change reaches the screen at its next refresh, a little after the model
    and the widgets have it (longer on a loaded machine): read it right after
    a change and the layout may still be the old one.
    """
    def showing() -> str:
        shown = screen_text(pilot.app)
        return shown if all(text in shown for text in texts) else ""
    return await until(pilot, showing, f"the screen to show {texts}", timeout)


def screen_text(app: MailtuiApp) -> str:
    """What the terminal shows, as plain text (as of its last refresh: see :func:`on_screen`)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def send(port: int, sender: str, recipients: list[str], *, helo: str = "client.test") -> str:
    """Send one message; returns "accepted" or the refusal."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=10) as client:
        try:
            client.sendmail(sender, recipients, b"Subject: console test\r\n\r\nhello\r\n")
        except smtplib.SMTPException as exc:
            return f"refused: {exc}"
    return "accepted"


@contextlib.asynccontextmanager
async def console(tmp_path: Path, size=(120, 36), **sections):
    app = MailtuiApp(make_config(tmp_path / "data", **sections))
    async with app.run_test(size=size) as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        yield app, pilot
        await app.lifecycle.stop()


async def type_text(pilot, text: str) -> None:
    """Type into the focused input (the way a paste does: one change per string, not per key)."""
    field = pilot.app.focused
    assert isinstance(field, Input)
    field.insert_text_at_cursor(text)
    await pilot.pause()


def table(app: MailtuiApp, name: str) -> LiveTable:
    return app.query_one(f"#{name}-table", LiveTable)


# -- the Done-when scenarios -----------------------------------------------------------------

async def test_a_message_sent_appears_in_connections(tmp_path):
    async with console(tmp_path) as (app, pilot):
        app.core.registry.add_client("lab", ["127.0.0.1/32"])
        port = app.core.port("smtp")
        assert await asyncio.to_thread(send, port, "sender@example.org", ["postmaster@example.test"],
                                       helo="lab.example") == "accepted"
        rows = table(app, "connections")
        await until(pilot, lambda: any(r.outcome == "accepted" for r in rows.rows), "the accepted session")
        row = rows.rows[-1]
        assert (row.proto, row.peer, row.client, row.helo) == ("smtp", "127.0.0.1", "lab", "lab.example")
        await on_screen(pilot, "lab.example", "1 accepted")
        await until(pilot, lambda: "delivered to mailbox postmaster@localhost" in screen_text(app)
                    or app.model.counters.delivered == 1, "the delivery")
        assert app.model.counters.accepted == 1


async def test_a_refused_client_is_registered_from_connections(tmp_path):
    async with console(tmp_path) as (app, pilot):
        port = app.core.port("smtp")
        refusal = await asyncio.to_thread(send, port, "someone@example.org", ["postmaster@example.test"])
        assert refusal.startswith("refused") and "not registered" in refusal
        connections = table(app, "connections")
        await until(pilot, lambda: connections.rows and connections.rows[-1].outcome == "refused", "the refusal")
        await on_screen(pilot, "press r to register 127.0.0.1")

        await pilot.press("r")
        form = await until(pilot, lambda: isinstance(app.screen, ClientForm) and app.screen, "the form")
        assert form.query_one("#name", Input).value == "host-127-0-0-1"
        assert form.query_one("#networks", Input).value == "127.0.0.1/32"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.core.registry.match("127.0.0.1") == "host-127-0-0-1", "the registration")
        assert not isinstance(app.screen, ClientForm)

        assert await asyncio.to_thread(send, port, "someone@example.org", ["postmaster@example.test"]) == "accepted"
        await until(pilot, lambda: connections.rows[-1].outcome == "accepted"
                    and connections.rows[-1].client == "host-127-0-0-1", "the accepted session")


async def test_a_client_is_added_and_removed_through_the_form(tmp_path):
    async with console(tmp_path) as (app, pilot):
        app.core.registry.add_client("office", ["192.0.2.0/24"])
        await pilot.press("2")
        await pilot.press("a")
        form = await until(pilot, lambda: isinstance(app.screen, ClientForm) and app.screen, "the form")
        message = lambda field: str(form.query_one(f"#{field}-message", Static).render())  # noqa: E731
        await pilot.press(*"Off")
        await type_text(pilot, "ice")
        await pilot.press("enter")  # Enter moves on to the next field to fill in
        await type_text(pilot, "10.0.0.5/24")
        assert "'Office' already exists" in message("name")
        assert "did you mean 10.0.0.0/24" in message("networks")
        assert form.query_one("#save").disabled
        await pilot.press("ctrl+s")  # refused while invalid: the form stays, on the first problem
        assert app.screen is form and form.focused is form.query_one("#name")
        await pilot.press("ctrl+u", *"lab", "tab", "ctrl+u")
        await type_text(pilot, "10.0.0.0/24, 2001:db8::/48")
        assert not form.query_one("#save").disabled
        await pilot.press("enter")   # a valid form: Enter saves
        await until(pilot, lambda: app.core.registry.get_client("lab") is not None, "the new client")
        assert app.core.registry.get_client("lab").networks == ("10.0.0.0/24", "2001:db8::/48")
        clients = table(app, "clients")
        await until(pilot, lambda: [r.name for r in clients.rows] == ["lab", "office"], "the client row")

        assert clients.select_key("lab")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: app.core.registry.get_client("lab") is None, "the removal")
        await until(pilot, lambda: [r.name for r in clients.rows] == ["office"], "the row to go")


async def test_a_mailbox_form_refuses_weak_passwords(tmp_path):
    async with console(tmp_path) as (app, pilot):
        await pilot.press("2", "m")
        form = await until(pilot, lambda: isinstance(app.screen, MailboxForm) and app.screen, "the form")
        await type_text(pilot, "bob@elsewhere.test")
        assert "not a local domain" in str(form.query_one("#address-message", Static).render())
        await pilot.press("ctrl+u")
        await type_text(pilot, "bob@example.test")
        await pilot.press("tab", *"short", "tab")
        assert "shorter than 8" in str(form.query_one("#password-message", Static).render())
        await pilot.press("shift+tab", "ctrl+u")
        await type_text(pilot, PASSWORD)
        await pilot.press("tab")
        await type_text(pilot, PASSWORD[:-1])
        assert "do not match" in str(form.query_one("#again-message", Static).render())
        assert form.query_one("#save").disabled
        await pilot.press(PASSWORD[-1], "enter")
        await until(pilot, lambda: app.core.registry.has_mailbox("bob@example.test"), "the mailbox", timeout=10)
        await until(pilot, lambda: "bob@example.test" in [r.address for r in table(app, "mailboxes").rows],
                    "the mailbox row")


async def test_a_deferred_message_is_retried_now(tmp_path):
    # DNS points at a dead nameserver: every attempt is deferred, the next one in 300 s.
    async with console(tmp_path, delivery={"retry_intervals": [300], "max_attempts": 5},
                       dns={"timeout": 0.3}) as (app, pilot):
        attempts: list[ev.DeliveryAttempt] = []
        app.core.bus.add_listener(lambda e: attempts.append(e) if isinstance(e, ev.DeliveryAttempt) else None)
        app.core.registry.add_client("lab", ["127.0.0.1/32"])
        port = app.core.port("smtp")
        assert await asyncio.to_thread(send, port, "me@example.test", ["you@remote.test"]) == "accepted"
        await pilot.press("4")
        queue = table(app, "queue")
        await until(pilot, lambda: queue.rows and queue.rows[0].attempts == 1 and not queue.rows[0].in_flight,
                    "the deferred message")
        shown = await on_screen(pilot, queue.rows[0].key, "queue 1")
        assert re.search(r"in [45]m\d\ds", shown)  # 300 s, with jitter

        await pilot.press("r")
        await until(pilot, lambda: any(a.attempt == 2 for a in attempts), "a new attempt")
        await until(pilot, lambda: queue.rows and queue.rows[0].attempts == 2, "the attempts count")

        await pilot.press("v")   # and the message can be read
        await until(pilot, lambda: "Subject: console test" in screen_text(app), "the message view")
        await pilot.press("escape")


async def test_every_clients_key_reaches_its_workflow(tmp_path):
    async with console(tmp_path) as (app, pilot):
        app.core.registry.add_client("office", ["192.0.2.0/24"])
        await app.core.admin.mailbox_add("bob@example.test", PASSWORD)
        await pilot.press("2")
        clients, mailboxes = table(app, "clients"), table(app, "mailboxes")
        await until(pilot, lambda: clients.rows and mailboxes.rows, "the rows")
        for keys in (("enter", "e"), ("e",)):   # Enter opens the client's detail, which offers e (edit)
            await pilot.press(*keys)
            form = await until(pilot, lambda: isinstance(app.screen, ClientForm) and app.screen, f"the form {keys}")
            assert form.editing == "office"
            if len(keys) == 2:
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, ClientForm), "the form to close")
        await pilot.press("tab", "tab")   # to the note
        await type_text(pilot, "first floor")
        await pilot.press("enter")
        await until(pilot, lambda: app.core.registry.get_client("office").note == "first floor", "the edit")

        await pilot.press("tab")
        assert app.focused is mailboxes
        for keys in (("enter", "p"), ("p",)):
            await pilot.press(*keys)
            form = await until(pilot, lambda: isinstance(app.screen, MailboxForm) and app.screen, f"the form {keys}")
            assert form.address == "bob@example.test"
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, MailboxForm), "the form to close")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: not app.core.registry.has_mailbox("bob@example.test"), "the removal")
        assert app.core.registry.get_client("office") is not None


async def test_queued_messages_are_retried_bounced_and_deleted(tmp_path):
    async with console(tmp_path, delivery={"retry_intervals": [300], "max_attempts": 5},
                       dns={"timeout": 0.3}) as (app, pilot):
        seen: list[ev.Event] = []
        app.core.bus.add_listener(seen.append)
        app.core.registry.add_client("lab", ["127.0.0.1/32"])
        port = app.core.port("smtp")
        for _ in range(2):
            assert await asyncio.to_thread(send, port, "postmaster@example.test", ["you@remote.test"]) == "accepted"
        await pilot.press("4")
        queue = table(app, "queue")
        settled = lambda tries: len(queue.rows) == 2 and all(  # noqa: E731
            r.attempts == tries and not r.in_flight for r in queue.rows)
        await until(pilot, lambda: settled(1), "two deferred messages")

        await pilot.press("R")
        await until(pilot, lambda: settled(2), "a second attempt for both")

        first, second = (row.key for row in queue.rows)
        assert queue.select_key(first)
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: any(isinstance(e, ev.Bounced) and e.msg_id == first for e in seen), "the bounce")
        await until(pilot, lambda: [r.key for r in queue.rows] == [second], "the bounced row to go")

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: not queue.rows and len(app.core.queue) == 0, "the empty queue")


async def test_a_listener_that_cannot_bind_is_a_message_not_a_crash(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with console(tmp_path, smtp={"listen": [f"127.0.0.1:{port}"]}) as (app, pilot):
            await on_screen(pilot, f"✗ SMTP 127.0.0.1:{port}: Address already in use", "POP3 127.0.0.1:")


async def test_a_console_waits_for_a_server_that_holds_the_data_but_does_not_answer(tmp_path):
    lock = DataDirLock(tmp_path / "data")   # (as a server starting up, or an admin command, holds it)
    assert lock.acquire()
    try:
        app = MailtuiApp(make_config(tmp_path / "data"))
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.lifecycle.phase == "waiting", "the wait")
            assert app.lifecycle.attached
            await on_screen(pilot, "no mail server answers on")
            await pilot.press("q")     # an attached console quits at once
            await until(pilot, lambda: app.lifecycle.phase == "stopped", "the quit")
    finally:
        lock.release()


async def test_the_console_timers_do_nothing_once_the_panels_are_gone(tmp_path):
    """Closing, Textual removes the screen's widgets before the app's own timers stop; a tick or a
    second that comes in between (likelier on a loaded machine) must not take the console down."""
    async with console(tmp_path) as (app, pilot):
        removing = app.query_one("#panels").remove()   # as the console closes: all marked, then children first
        for _ in range(2):
            app.batch.mark("connections")                # something to draw
            app._write_note("a note", "bold")
            app._tick()
            app._second()
            await removing
        assert not app._tick_failed


async def test_quitting_stops_the_server(tmp_path):
    app = MailtuiApp(make_config(tmp_path / "data"))
    async with app.run_test() as pilot:
        await asyncio.wait_for(app.lifecycle.ready.wait(), 10)
        port = app.core.port("smtp")
        await pilot.press("q")     # the console's own server: it asks first
        await until(pilot, lambda: isinstance(app.screen, QuitDialog), "the question")
        assert app.lifecycle.running
        await pilot.press("q")     # q again says yes
        await until(pilot, lambda: app.lifecycle.phase == "stopped", "the stop")
    assert app.return_code == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    lock = DataDirLock(tmp_path / "data")
    assert lock.acquire()   # the data directory is free again
    lock.release()


async def test_every_panel_fits_80x24(tmp_path):
    async with console(tmp_path, size=(80, 24)) as (app, pilot):
        app.core.registry.add_client("lab", ["127.0.0.1/32"])
        await asyncio.to_thread(send, app.core.port("smtp"), "a@example.test", ["postmaster@example.test"])
        await until(pilot, lambda: table(app, "connections").rows, "a session")
        for key, expected in (("1", "Registered as"), ("2", "Registered clients (1)"), ("3", "Rcode"),
                              ("4", "Next try"), ("5", "SMTP listening on")):
            await pilot.press(key)
            shown = await on_screen(pilot, expected)
            assert "q Quit" in shown.splitlines()[-1]


# -- pure parts --------------------------------------------------------------------------------

def test_the_model_stays_bounded_under_a_burst():
    model = ConsoleModel()
    burst = []
    for n in range(5 * MAX_ROWS):
        burst += [ev.ConnectionOpened(session=f"S{n}", proto="smtp", peer="192.0.2.1", registered=False),
                  ev.ClientRefused(session=f"S{n}", proto="smtp", peer="192.0.2.1", stage="mail", reply="550"),
                  ev.ConnectionClosed(session=f"S{n}", proto="smtp", peer="192.0.2.1", result="refused: 550"),
                  ev.DnsLookup(name="x.test", rtype="MX", answer=(), rcode="NXDOMAIN", duration=0.001)]
    changes = model.apply(burst)
    assert len(model.sessions) == MAX_ROWS and len(model.dns) == MAX_ROWS
    assert next(iter(model.sessions.values())).session == f"S{4 * MAX_ROWS}"
    assert model.counters.refused == 5 * MAX_ROWS
    assert changes.connections and changes.dns and not changes.log


def test_a_busy_server_gets_fewer_redraws_but_every_count():
    bus = ev.EventBus()
    batch = Batcher(bus.subscribe(), ConsoleModel(), deque())
    assert all(batch.take(panel) for panel in PANELS)     # all to draw at first, once
    assert batch.next().redraw            # quiet: every tick redraws
    burst = BUSY_BATCH + 1

    def publish() -> None:
        for n in range(burst):
            bus.publish(ev.AuthFailed(session=f"S{n}", proto="smtp", peer="192.0.2.1", login="x"))

    frames = []
    for _ in range(2):
        publish()
        frames.append(batch.next())
    assert [f.redraw for f in frames] == [False, True] and all(f.status for f in frames)
    assert len(frames[1].log) + frames[1].log_skipped == 2 * burst   # drawn or counted, never lost
    assert not batch.take("connections")     # failed logins change no session row


def test_events_the_console_could_not_keep_are_reported_once():
    bus = ev.EventBus()
    records: deque[logging.LogRecord] = deque()
    batch = Batcher(bus.subscribe(maxsize=10), ConsoleModel(), records)
    for n in range(15):
        bus.publish(ev.Notice(level="info", text=f"note {n}"))
    records.append(logging.LogRecord("lib", logging.ERROR, __file__, 1, "it broke\nat line 2", None, None))
    frame = batch.next()
    assert frame.dropped == 5
    assert [e.text for e in frame.alerts] == ["[lib] it broke"]
    assert batch.next().dropped == 0


def test_columns_drop_by_priority_and_the_flexible_one_takes_the_rest():
    columns = [Column("a", "A", 8), Column("b", "B", 10, drop=2), Column("c", "C", 10, drop=1),
               Column("d", "D", 10, flex=True)]
    assert [(c.key, w) for c, w in fit_columns(columns, 80)] == [("a", 8), ("b", 10), ("c", 10), ("d", 47)]
    assert [(c.key, w) for c, w in fit_columns(columns, 40)] == [("a", 8), ("c", 10), ("d", 18)]
    assert [(c.key, w) for c, w in fit_columns(columns, 10)] == [("a", 8), ("d", 10)]


# -- snapshots ---------------------------------------------------------------------------------

NOW = 1_750_000_000.0   # the frozen clock of the scenes


class FixedLag:
    """The loop lag of the scenes: the same figures whenever read, so snapshots do not depend on the machine."""

    def window(self) -> "FixedLag":
        return self

    def take(self) -> LagStats:
        return LagStats(samples=500, p50=0.0004, p99=0.0012, max=0.0031)

    def close(self, window) -> None:
        pass


class SceneCore:
    """Stands in for Core in snapshots: real registry, queue and admin on disk, fixed data, no network."""

    def __init__(self, config, *, bus: ev.EventBus):
        self.config = config
        self.bus = bus
        self.stats = ServerStats()
        bus.add_listener(self.stats.observe)
        self.started = False
        self.lag = FixedLag()
        self.listeners = [Listener("smtp", "127.0.0.1:2525", bound="127.0.0.1:2525", server=object()),
                          Listener("pop3", "127.0.0.1:1100", bound="127.0.0.1:1100", server=object())]

    async def start(self) -> None:
        self.store, self.registry, self.maildirs, self.queue, _ = open_state(self.config, self.bus)
        self.admin = Admin(registry=self.registry, queue=self.queue, maildirs=self.maildirs, bus=self.bus)
        clients = self.store.state.table("clients")
        clients.insert({"name": "office", "networks": ["192.0.2.0/24"], "note": "first floor", "created": NOW})
        clients.insert({"name": "backup-mx", "networks": ["198.51.100.7/32", "2001:db8::25/128"], "note": "",
                        "created": NOW})
        self.store.state.table("mailboxes").insert_multiple(
            {"address": a, "password": "scrypt$x", "created": NOW} for a in ("alice@example.test", "bob@example.test"))
        self.registry.reload()
        for n, (rcpt, error) in enumerate((("kim@busy.example", "451 4.2.0 mailbox busy, try again later"),
                                           ("lee@slow.example", "DNS lookup of slow.example (MX) timed out"))):
            item = await self.queue.enqueue("alice@example.test", [rcpt], b"Subject: hi\r\n\r\nhello\r\n",
                                            msg_id=f"19A2B3C4D5E{n}F0A1B", arrival=NOW - 600)
            item.attempts = item.recipients[0].attempts = 2 + n
            item.recipients[0].state = "deferred"
            item.recipients[0].last_error = item.last_error = error
            item.next_attempt = NOW + 125 + 3000 * n
        self.started = True
        for event in scene_events():
            self.bus.publish(event)

    async def stop(self) -> None:
        self.store.close()
        self.started = False


def scene_events() -> list[ev.Event]:
    out: list[ev.Event] = []
    at = NOW - 200
    for n, (peer, client, helo, tls, result, refusal) in enumerate((
            ("192.0.2.10", "office", "pc10.office.example", True, "1 accepted", ""),
            ("203.0.113.5", "", "stranger.example", False, "refused: 550 5.7.1 Client host [203.0.113.5] "
             "is not registered", "550 5.7.1 Client host [203.0.113.5] is not registered"),
            ("192.0.2.11", "office", "pc11.office.example", False, "2 accepted", ""),
            ("198.51.100.7", "backup-mx", "mx.backup.example", True, "1 accepted", ""))):
        at += 17
        sid = f"S{n + 1}"
        out.append(ev.ConnectionOpened(session=sid, proto="smtp", peer=peer, registered=bool(client),
                                       client=client, at=at))
        out.append(ev.SessionChanged(session=sid, proto="smtp", peer=peer, helo=helo, tls=tls, state="mail", at=at))
        if refusal:
            out.append(ev.ClientRefused(session=sid, proto="smtp", peer=peer, stage="mail", reply=refusal, at=at))
        else:
            for m in range(int(result[0])):
                out.append(ev.MessageAccepted(session=sid, msg_id=f"19A2B3C4D60{n}{m}00", sender="alice@example.test",
                                              recipients=("kim@partner.example",), size=1200, peer=peer,
                                              client=client, login="alice@example.test" if n == 2 else "",
                                              at=at - 60 * n))
                out.append(ev.DeliveredRemote(msg_id=f"19A2B3C4D60{n}{m}00", recipient="kim@partner.example",
                                              remote_mta="mx.partner.example", reply="250 2.0.0 queued", at=at))
        out.append(ev.ConnectionClosed(session=sid, proto="smtp", peer=peer, result=result, at=at + 1))
    out.append(ev.ConnectionOpened(session="P1", proto="pop3", peer="192.0.2.10:50123", registered=False, at=at + 5))
    out.append(ev.SessionChanged(session="P1", proto="pop3", peer="192.0.2.10:50123", tls=True,
                                 login="alice@example.test", state="transaction", at=at + 5))
    out.append(ev.Bounced(msg_id="19A2B3C4D7000000", recipient="nobody@strict.example",
                          error="host mx.strict.example said: 550 5.1.1 no such user", at=at + 6))
    for n, (name, rtype, answer, rcode, took, cached) in enumerate((
            ("partner.example", "MX", ("10 mx.partner.example",), "NOERROR", 0.004, False),
            ("mx.partner.example", "A", ("192.0.2.25",), "NOERROR", 0.002, False),
            ("mx.partner.example", "AAAA", (), "NOERROR", 0.002, False),
            ("nowhere.example", "MX", (), "NXDOMAIN", 0.011, False),
            ("slow.example", "MX", (), "TIMEOUT", 2.0, False),
            ("partner.example", "MX", ("10 mx.partner.example",), "NOERROR", 0.0, True))):
        out.append(ev.DnsLookup(name=name, rtype=rtype, answer=answer, rcode=rcode, duration=took, cached=cached,
                                at=NOW - 100 + n))
    return out


@pytest.fixture
def scene(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)       # the help screen shows the (relative) data directory
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    config = from_mapping({"server": {"hostname": "mail.example.test", "data_dir": "data",
                                      "local_domains": ["example.test"]}}, source="mailtui.toml")
    yield MailtuiApp(config, core_factory=SceneCore, clock=lambda: NOW)
    monkeypatch.undo()
    time.tzset()


async def scene_ready(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.lifecycle.running and len(app.model.dns) == 6, "the scene")
    await pilot.pause(0.3)  # the batch is drawn


@pytest.mark.parametrize("keys", [(), ("2",), ("3",), ("4",), ("5",)],
                         ids=["connections", "clients", "dns", "queue", "log"])
def test_snapshot_panels(scene, snap_compare, keys):
    assert snap_compare(scene, press=keys, terminal_size=(100, 30), run_before=scene_ready)


def test_snapshot_80x24_connections(scene, snap_compare):
    assert snap_compare(scene, terminal_size=(80, 24), run_before=scene_ready)


def test_snapshot_200x50_with_the_activity_log(scene, snap_compare):
    assert snap_compare(scene, press=("4",), terminal_size=(200, 50), run_before=scene_ready)


def test_snapshot_client_form_with_errors(scene, snap_compare):
    async def fill_in(pilot) -> None:
        await scene_ready(pilot)
        await pilot.press("2", "a")
        await type_text(pilot, "office")
        await pilot.press("tab")
        await type_text(pilot, "192.0.2.9/24")

    assert snap_compare(scene, terminal_size=(100, 30), run_before=fill_in)


def test_snapshot_light_theme(scene, snap_compare):
    assert snap_compare(scene, press=("4", "t"), terminal_size=(100, 30), run_before=scene_ready)


def test_snapshot_help(scene, snap_compare):
    assert snap_compare(scene, press=("question_mark",), terminal_size=(100, 30), run_before=scene_ready)


async def test_the_header_shows_the_loop_lag_of_the_console_s_own_server(tmp_path):
    async with console(tmp_path, size=(120, 36)) as (app, pilot):
        await until(pilot, lambda: re.search(r"lag p99 \d+(\.\d)? ms · max \d+(\.\d)? ms", screen_text(app)),
                    "the lag figures in the header")
        assert app.loop_lag.latest().samples > 0
    async with console(tmp_path, size=(80, 24)) as (app, pilot):   # narrow: short, in the sparkline's place
        await until(pilot, lambda: re.search(r"lag \d+(\.\d)?/\d+(\.\d)? ms", screen_text(app).splitlines()[0]),
                    "the short lag figures")
