"""Console polish, driven by Pilot: filter and sort, details, copy, figures, 80x24, wording, bursts of keys.

Each was found by trying the console as a new user would. Scenes with fixed
data use the stand-in core of test_console; what needs mail uses a real
server on loopback.
"""

from __future__ import annotations

import asyncio

import pytest
import test_console
from test_console import NOW, console, on_screen, scene_ready, screen_text, send, table, until
from textual import events
from textual.keys import _character_to_key
from textual.widgets import Input

from mailtui import events as ev
from mailtui.frontends.console.dialogs import ClientForm, DetailView, HelpScreen, MailboxForm, MessageView
from mailtui.frontends.console.model import Counters, SessionRow
from mailtui.frontends.console.widgets import FilterBar
from mailtui.frontends.console.widgets import QueuePanel, QueueRow
from mailtui.frontends.console.widgets.connections import COLUMNS, session_cells
from mailtui.frontends.console.widgets.queue import empty_text
from mailtui.frontends.console.widgets.table import TableState
from mailtui.frontends.console.widgets.view import Column, Order, RowView

pytestmark = pytest.mark.timeout(30)
scene = test_console.scene   # the fixture: the console on the stand-in core's fixed scene


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def bar(app, panel: str) -> FilterBar:
    return app.query_one(f"#{panel}-panel").query_one(FilterBar)


def bar_text(app, panel: str) -> str:
    shown = bar(app, panel)
    return f"{shown.input.value} | {shown.query_one('#filter-state').render()}" if shown.display else ""


KEY_NAMES = {"tab", "enter", "escape", "space"}


async def burst(pilot, *keys: str) -> None:
    """Keys as a slow SSH link delivers them: all at once, with no pause for the console to catch up.

    Each of ``keys`` is a key name (tab, enter ...) or text, typed a character at a time.
    """
    for key in keys:
        for char in ([key] if key in KEY_NAMES else key):
            name = char if len(char) > 1 or char.isalnum() else _character_to_key(char)
            pilot.app._driver.send_message(events.Key(name, " " if char == "space" else
                                                      char if len(char) == 1 else None))
    await pilot.pause()


# -- filter, sort, follow ----------------------------------------------------------------------

async def test_slash_filters_the_table_in_any_case_and_esc_clears_it(scene):
    async with scene.run_test(size=(80, 24)) as pilot:
        await scene_ready(pilot)
        connections = table(scene, "connections")
        assert len(connections.rows) == 5 and not bar(scene, "connections").display
        await pilot.press("slash")
        assert isinstance(scene.focused, Input)
        await pilot.press(*"OFFICE")
        assert [r.client for r in connections.rows] == ["office", "office"]
        assert bar_text(scene, "connections") == "OFFICE | 2 of 5 match"
        await pilot.press("enter")                      # keeps the filter, back to the table
        assert scene.focused is connections and "filter: OFFICE" in screen_text(scene)
        await pilot.press("escape")
        assert len(connections.rows) == 5 and not bar(scene, "connections").display

        await pilot.press("slash", *"stranger")        # HELO is not on screen at 80 columns: it counts too
        assert [r.peer for r in connections.rows] == ["203.0.113.5"]
        await pilot.press("escape")                     # Esc in the field clears it as well
        assert len(connections.rows) == 5 and scene.focused is connections

        await pilot.press("5", "slash", *"bounced")    # the Log
        log = scene.query_one("#log-tab")
        assert log.rows and all("bounced" in line.text.plain for line in log.rows)
        assert "1 of" in bar_text(scene, "log")


async def test_s_cycles_the_sort_column_S_reverses_and_a_header_click_sorts(scene):
    async with scene.run_test(size=(100, 30)) as pilot:
        await scene_ready(pilot)
        await pilot.press("3")
        dns = table(scene, "dns")
        arrival = [e.at for e in dns.rows]
        await pilot.press("s")                          # by Time
        assert dns.order == Order("time") and "Time ▲" in screen_text(scene)
        await pilot.press("s")                          # by Name
        names = [e.name for e in dns.rows]
        assert names == sorted(names) and "Name ▲" in screen_text(scene)
        await pilot.press("S")
        assert [e.name for e in dns.rows] == sorted(names, reverse=True) and "Name ▼" in screen_text(scene)
        assert "sorted by Name (reversed)" in bar_text(scene, "dns")

        header = screen_text(scene).splitlines()[4]
        await pilot.click(dns, offset=(header.index("Took") + 1, 0))
        took = [e.duration for e in dns.rows if not e.cached]
        assert dns.order == Order("took") and took == sorted(took)
        await pilot.click(dns, offset=(header.index("Took") + 1, 0))
        assert dns.order == Order("took", reverse=True)
        await pilot.click(dns, offset=(header.index("Took") + 1, 0))
        assert dns.order == Order() and [e.at for e in dns.rows] == arrival

        await pilot.press("S")                          # arrival order reversed: newest first, still followed
        assert [e.at for e in dns.rows] == arrival[::-1] and dns.cursor == 0
        assert "newest first" in bar_text(scene, "dns")


async def test_a_table_says_when_it_stops_following_new_rows(scene):
    async with scene.run_test(size=(100, 30)) as pilot:
        await scene_ready(pilot)
        connections = table(scene, "connections")
        assert connections.following and not bar(scene, "connections").display
        await pilot.press("up")
        held = connections.cursor_row
        assert "paused — End to follow" in bar_text(scene, "connections")
        assert "paused — End to follow" in screen_text(scene)
        scene.core.bus.publish(ev.ConnectionOpened(session="S9", proto="smtp", peer="192.0.2.99", registered=False))
        await until(pilot, lambda: len(connections.rows) == 6, "the new row")
        assert connections.cursor_row is held          # paused: the cursor stays
        await pilot.press("end")
        assert connections.cursor_row.session == "S9" and not bar(scene, "connections").display
        scene.core.bus.publish(ev.ConnectionOpened(session="S10", proto="smtp", peer="192.0.2.98", registered=False))
        await until(pilot, lambda: connections.cursor_row.session == "S10", "the cursor to follow")


def test_the_filter_and_the_order_are_plain_rules():
    rows = [{"k": n, "name": name, "size": size} for n, (name, size) in
            enumerate((("Bob", 10), ("alice", 9), ("Carol", 100), ("bob", 2)))]
    view = RowView([Column("name", "Name", 8), Column("size", "Size", 5, sort=lambda r: r["size"])],
                   lambda r: {"name": r["name"], "size": str(r["size"])})
    view.filter = "BO"
    assert [r["k"] for r in view.apply(rows)] == [0, 3]
    view.filter, view.order = "", Order("name")
    assert [r["k"] for r in view.apply(rows)] == [1, 0, 3, 2]        # case-blind and stable
    view.order = Order("size")
    assert [r["k"] for r in view.apply(rows)] == [3, 1, 0, 2]        # numbers as numbers, not text
    view.order = Order(None, reverse=True)
    assert [r["k"] for r in view.apply(rows)] == [3, 2, 1, 0]
    assert Order("size").next_column(["name", "size"]) == Order()
    assert Order().next_column(["name", "size"]) == Order("name")
    assert TableState(filter="x", shown=1, total=3, paused=True).describe() == "1 of 3 match · paused — End to follow"
    assert TableState().describe() == ""


# -- Enter and y ----------------------------------------------------------------------------------

async def test_enter_opens_a_detail_on_every_panel_and_y_copies(scene):
    async with scene.run_test(size=(80, 24)) as pilot:
        await scene_ready(pilot)
        for key, expected, copied in (
                ("1", ("POP3 session P1", "Peer", "192.0.2.10:50123", "transaction"), "192.0.2.10"),
                ("2", ("Client backup-mx", "198.51.100.7/32", "1 accepted, 0 refused"), "backup-mx"),
                ("3", ("DNS MX partner.example", "Question", "answered from the cache"), "partner.example"),
                ("5", ("Bounced at", "recipient", "550 5.1.1 no such user"), "19A2B3C4D7000000")):
            await pilot.press(key, "enter")
            view = await until(pilot, lambda: isinstance(scene.screen, DetailView) and scene.screen, f"detail {key}")
            shown = screen_text(scene)
            assert all(text in shown for text in expected), shown
            await pilot.press("y")
            if copied:
                assert scene.clipboard == copied and "Copied" in notes(scene)[-1]
            await pilot.press("escape")
            await until(pilot, lambda: scene.screen is not view, "the detail to close")
            await pilot.press("y")                         # y on the panel copies the same
            if copied:
                assert scene.clipboard == copied

        await pilot.press("4", "enter")                    # the queue's detail is the message itself
        await until(pilot, lambda: isinstance(scene.screen, MessageView), "the message view")
        assert "Subject: hi" in screen_text(scene)
        await pilot.press("escape", "y")
        assert scene.clipboard == "19A2B3C4D5E0F0A1B"


async def test_a_refused_session_detail_offers_to_register(scene):
    async with scene.run_test(size=(100, 30)) as pilot:
        await scene_ready(pilot)
        assert table(scene, "connections").select_key("smtp:S2")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(scene.screen, DetailView), "the detail")
        shown = screen_text(scene)
        assert "at mail: 550 5.7.1 Client host [203.0.113.5] is not registered" in shown
        assert "r register this address" in shown
        await pilot.press("r")
        form = await until(pilot, lambda: isinstance(scene.screen, ClientForm) and scene.screen, "the form")
        assert form.query_one("#networks", Input).value == "203.0.113.5/32"


# -- figures --------------------------------------------------------------------------------------

async def test_clients_show_what_each_client_sent(tmp_path):
    async with console(tmp_path) as (app, pilot):
        app.core.registry.add_client("lab", ["127.0.0.1/32"])
        port = app.core.port("smtp")
        assert await asyncio.to_thread(send, port, "a@example.org", ["postmaster@example.test"]) == "accepted"
        refusal = await asyncio.to_thread(send, port, "a@example.org", ["nobody@example.test"])
        assert refusal.startswith("refused")
        await pilot.press("2")
        clients = table(app, "clients")
        await until(pilot, lambda: clients.rows, "the client row")
        await until(pilot, lambda: "lab" in screen_text(app) and " 1       1 " in screen_text(app), "the figures")
        assert app.core.stats.totals.clients["lab"].accepted == 1
        assert "s ago" in screen_text(app) or "now" in screen_text(app)
        assert "1 accepted, 1 refused since the server started" in screen_text(app)


# -- 80x24 ----------------------------------------------------------------------------------------------

async def test_at_80x24_the_help_scrolls_to_its_last_row(scene):
    async with scene.run_test(size=(80, 24)) as pilot:
        await scene_ready(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(scene.screen, HelpScreen), "the help")
        last = "Listening"
        assert last not in screen_text(scene)
        await pilot.press("end")
        await pilot.pause(0.2)
        assert last in screen_text(scene) and "SMTP 127.0.0.1:2525" in screen_text(scene)


async def test_at_80x24_notifications_leave_the_form_buttons_free(scene):
    async with scene.run_test(size=(80, 24), notifications=True) as pilot:
        await scene_ready(pilot)
        for keys, form_type in ((("2", "a"), ClientForm), (("m",), MailboxForm)):
            await pilot.press(*keys)
            form = await until(pilot, lambda: isinstance(scene.screen, form_type) and scene.screen, "the form")
            for n in range(2):
                scene.notify(f"notice {n}: something happened on the server while the form was open",
                             severity="warning")
            await pilot.pause(0.5)
            toasts = [t.region for t in form.query("Toast")]
            assert len(toasts) == 2
            for button in form.query("Button"):
                assert not any(button.region.overlaps(toast) for toast in toasts), (button, toasts)
            await pilot.press("escape")
            scene.clear_notifications()


async def test_at_80x24_a_long_result_wraps_under_the_table(scene):
    async with scene.run_test(size=(80, 24)) as pilot:
        await scene_ready(pilot)
        assert table(scene, "connections").select_key("smtp:S2")
        await pilot.pause(0.2)
        shown = screen_text(scene)
        assert "is not registered" in shown and "press r to" in shown and "register 203.0.113.5" in shown


async def test_at_80x24_the_queue_detail_wraps_and_scrolls(scene):
    async with scene.run_test(size=(80, 24)) as pilot:
        await scene_ready(pilot)
        await pilot.press("4")
        recipients = tuple((f"user{n}@far-away-domain-{n}.example", "deferred",
                            f"451 4.4.1 mx{n}.far-away-domain-{n}.example did not answer in time, will try again")
                           for n in range(6))
        row = QueueRow(key="19A2B3C4D5E9F0A1B", sender="alice@example.test", recipients=recipients, attempts=3,
                       next_attempt=NOW + 60, last_error=recipients[0][2], in_flight=False, size=2200,
                       arrival=NOW - 600)
        # The panel draws the scene's own queue when it is shown: show the long row after that.
        await until(pilot, lambda: scene.focused is scene.query_one("#queue-table"), "the queue panel")
        await pilot.pause()
        scene.query_one(QueuePanel).show([row])
        pane = scene.query_one("#queue-panel DetailPane")
        await until(pilot, lambda: pane.max_scroll_y > 0, "the detail to overflow")
        assert "user5@" not in screen_text(scene)
        assert "did not answer in time, will try again" in screen_text(scene)   # wrapped, not cut
        pane.scroll_end(animate=False)
        await until(pilot, lambda: "user5@far-away-domain-5.example" in screen_text(scene), "the last recipient")


# -- wording --------------------------------------------------------------------------------------

def test_an_empty_queue_says_what_became_of_its_messages():
    assert empty_text(None) == "The queue is empty."
    assert empty_text(Counters(delivered=4, bounced=1)) == "The queue is empty. So far 4 delivered, 1 bounced."


async def test_the_register_hint_goes_once_the_address_is_registered(tmp_path):
    async with console(tmp_path) as (app, pilot):
        refusal = await asyncio.to_thread(send, app.core.port("smtp"), "a@example.org", ["postmaster@example.test"])
        assert refusal.startswith("refused")
        connections = table(app, "connections")
        await until(pilot, lambda: connections.rows and connections.rows[-1].closed, "the refused session")
        await on_screen(pilot, "press r to register 127.0.0.1")
        await app.core.admin.call("client_add", {"name": "lab", "networks": ["127.0.0.0/8"]})   # as the CLI would
        await until(pilot, lambda: "press r to register" not in screen_text(app), "the hint to go")
        assert "127.0.0.1 is registered now, as lab" in screen_text(app) and "→ lab" in screen_text(app)
        await pilot.press("r")
        assert "already registered as the client lab" in notes(app)[-1]
        await app.core.admin.call("client_remove", {"name": "lab"})
        await until(pilot, lambda: "press r to register 127.0.0.1" in screen_text(app), "the hint to come back")


# -- keys in a burst --------------------------------------------------------------------------------

async def test_keys_typed_in_a_burst_land_in_the_fields_they_were_meant_for(tmp_path):
    async with console(tmp_path) as (app, pilot):
        app.core.registry.add_client("office", ["192.0.2.0/24"])
        await pilot.press("2")
        await until(pilot, lambda: table(app, "clients").rows, "the client row")
        # a opens the form; "lab" is its name, Tab moves on, then the network; an e or d reaching
        # the table behind would edit or remove "office".
        await burst(pilot, "a", "lab", "tab", "10.0.0.0/24", "tab", "made", "space", "by", "space", "ed")
        form = await until(pilot, lambda: isinstance(app.screen, ClientForm) and app.screen, "the form")
        await until(pilot, lambda: form.query_one("#note", Input).value == "made by ed", "the typing")
        assert form.query_one("#name", Input).value == "lab"
        assert form.query_one("#networks", Input).value == "10.0.0.0/24"
        await burst(pilot, "enter")
        await until(pilot, lambda: app.core.registry.get_client("lab") is not None, "the new client")
        assert app.core.registry.get_client("lab").note == "made by ed"
        assert app.core.registry.get_client("office") is not None and app.screen is app.screen_stack[0]

        await burst(pilot, "m", "bob@example.test", "tab")   # and the mailbox form, opened and filled at once
        form = await until(pilot, lambda: isinstance(app.screen, MailboxForm) and app.screen, "the mailbox form")
        await until(pilot, lambda: form.focused is form.query_one("#password"), "the focus on the password")
        assert form.query_one("#address", Input).value == "bob@example.test"
        await pilot.press("escape")


# -- snapshots ---------------------------------------------------------------------------------

def test_snapshot_a_filtered_paused_table(scene, snap_compare):
    """Connections at 80x24: filtered on "office", the cursor off the newest row."""
    keys = ("slash", *"office", "enter", "up")
    assert snap_compare(scene, press=keys, terminal_size=(80, 24), run_before=scene_ready)


def test_snapshot_a_sorted_table(scene, snap_compare):
    """DNS sorted by Name, reversed."""
    assert snap_compare(scene, press=("3", "s", "s", "S"), terminal_size=(100, 30), run_before=scene_ready)


def test_snapshot_a_refused_session_in_detail(scene, snap_compare):
    async def open_it(pilot) -> None:
        await scene_ready(pilot)
        table(pilot.app, "connections").select_key("smtp:S2")
        await pilot.press("enter")

    assert snap_compare(scene, terminal_size=(80, 24), run_before=open_it)


def test_snapshot_clients_with_figures_at_80x24(scene, snap_compare):
    assert snap_compare(scene, press=("2",), terminal_size=(80, 24), run_before=scene_ready)


@pytest.mark.parametrize("proto", ["smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps"])
def test_every_protocol_fits_the_proto_column(proto):
    width = next(column.width for column in COLUMNS if column.key == "proto")
    label = session_cells(SessionRow(key="k", session="M1", at=NOW, proto=proto, peer="192.0.2.1"))["proto"]
    assert 4 <= len(label) <= width and label[0] == proto[0]
