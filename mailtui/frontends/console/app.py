"""The console application: the server and its live view in one event loop.

When a server already owns the data directory (``mailtui serve``), the console
attaches to it over its control socket (:mod:`.attached`) and quitting leaves
it running. Otherwise the app builds its own server (a
:class:`~mailtui.server.core.Core`, or anything that is a
:class:`~.backend.MailServer`), starts it when mounted, on Textual's own
loop, and stops it on quit, after asking (:mod:`.lifecycle`). The mail path
never waits for the screen: a timer takes the pending events a few times a
second (:mod:`.batch`) and redraws only the panel on show. The admin's
workflows are a layer below (:mod:`.workflows`); this module composes the
screen and moves around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from typing import Callable, Iterable

from rich.terminal_theme import TerminalTheme
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from ... import __version__
from ...config import Config
from ...dns.resolver import Resolver
from ...events import Event, EventBus, ListenerFailed, Notice
from ...server.core import Core
from ...server.snapshot import history_rows
from .attached import AttachedServer
from .backend import MailServer, ServerFactory
from .batch import PANELS, TICK, Batcher, Frame, HistoryLoaded
from .dialogs import ConfirmDialog, HelpScreen
from .dialogs.dnsrecords import DnsRecordsScreen
from .keys import TypeAhead
from .lagview import LagView
from .lifecycle import ServerLifecycle
from .model import MAX_ROWS, ConsoleModel
from .widgets import (
    ActivityLog,
    ClientsPanel,
    ConnectionsPanel,
    DnsPanel,
    LiveTable,
    LogPanel,
    MailboxRow,
    QueuePanel,
    QueueRow,
    StatusBar,
)
from .widgets.status import short_error
from .workflows import AdminWorkflows

log = logging.getLogger(__name__)
LOGS = "ActivityLog, LogPanel"   # where the activity is written: the dock and the Log panel

# Textual's dark ANSI palette draws magenta as red; keep it purple, so a delivery
# attempt or a refusal never reads as a bounce.
DARK_ANSI = TerminalTheme(
    (12, 12, 12), (217, 217, 217),
    [(26, 26, 26), (244, 0, 95), (152, 224, 36), (253, 151, 31), (157, 101, 255), (174, 129, 255),
     (88, 209, 235), (196, 197, 181), (98, 94, 76)],
    [(244, 0, 95), (152, 224, 36), (224, 213, 97), (157, 101, 255), (190, 150, 255), (88, 209, 235),
     (246, 246, 239)],
)


class QuitDialog(ConfirmDialog):
    """Stop the console's own server? ``q`` again, ``y`` or Enter says yes."""

    BINDINGS = [Binding("q", "answer(True)", "Quit", show=False)]

    def __init__(self) -> None:
        super().__init__("Quit", "Stop the mail server? It stops taking and delivering mail until it is "
                         "started again (mail waiting in the queue is kept).", confirm="Stop and quit",
                         danger=False)


class MailtuiApp(AdminWorkflows, TypeAhead):
    """``core_factory(config, bus=bus)`` builds the server of its own (tests pass a stand-in).

    With ``attach`` (the default) the console attaches to the server that owns
    the data directory, if one does; with ``attach_only`` it never runs one of
    its own (a browser tab, see :mod:`mailtui.frontends.web`).
    """

    TITLE = "mailtui"
    CSS_PATH = "console.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]

    BINDINGS = [
        *(Binding(str(n), f"show_panel('{panel}')", panel.capitalize(), show=False)
          for n, panel in enumerate(PANELS, 1)),
        Binding("question_mark,f1", "help", "Help"),
        Binding("t", "toggle_theme", "Theme", show=False),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit_now", "Quit", show=False, priority=True),
    ]

    def __init__(self, config: Config, *, core_factory: ServerFactory = Core,
                 clock: Callable[[], float] = time.time, welcome: str = "", intro: str = "",
                 handle_signals: bool = False, attach: bool = True, attach_only: bool = False) -> None:
        super().__init__()
        self.config = config
        self.clock = clock
        self.welcome = welcome      # a notification at start
        self.intro = intro          # a line in the activity log at start
        self.handle_signals = handle_signals
        bus = EventBus()
        subscription = bus.subscribe(maxsize=50_000)   # before the server starts: its first events count
        self.lifecycle = ServerLifecycle(core_factory(config, bus=bus), on_change=self._phase_changed,
                                         attach=(lambda: AttachedServer(config, bus=bus)) if attach else None,
                                         data_dir=config.server.data_dir, attach_only=attach_only)
        self._shown_phase = ""
        self._parent_pid = os.getppid()
        self._hung_up = False
        self.model = ConsoleModel()
        self.log_records: deque[logging.LogRecord] = deque(maxlen=200)
        self.batch = Batcher(subscription, self.model, self.log_records)
        self.loop_lag = LagView()   # the header's loop-lag figures, of whichever server is shown
        self._tick_failed = False

    # -- layout ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with TabbedContent(initial="connections", id="panels"):
            with TabPane("Connections", id="connections"):
                yield ConnectionsPanel(id="connections-panel")
            with TabPane("Clients", id="clients"):
                yield ClientsPanel(self.clock, id="clients-panel")
            with TabPane("DNS", id="dns"):
                yield DnsPanel(id="dns-panel")
            with TabPane("Queue", id="queue"):
                yield QueuePanel(self.clock, id="queue-panel")
            with TabPane("Log", id="log"):
                yield LogPanel(id="log-panel")
        yield ActivityLog(id="log-dock")
        yield Footer()

    def on_mount(self) -> None:
        self.ansi_theme_dark = DARK_ANSI
        self._show_status()
        self.set_interval(TICK, self._tick, name="console-tick")
        self.set_interval(1.0, self._second, name="console-second")
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig, handler in ((signal.SIGTERM, self.action_quit_now), (signal.SIGINT, self.action_quit_now),
                                 (signal.SIGHUP, self.hang_up)):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, handler)
        self.query_one("#connections-table", LiveTable).focus()
        self.run_worker(self._start_server(), name="core-start", group="core", exit_on_error=False)

    @property
    def core(self) -> MailServer:  # type: ignore[override]
        """The server shown: the console's own, or the one it attached to."""
        return self.lifecycle.server

    @property
    def active_panel(self) -> str:
        return self.query_one(TabbedContent).active

    @property
    def closing(self) -> bool:
        """Whether the screen is being taken down: Textual removes the widgets (marking them all at
        once, then children first) before the app's own timers stop, and a tick or a second may come
        in between, with some panels half gone."""
        try:
            return not self.query_one(TabbedContent).display
        except NoMatches:
            return True

    # -- the server --------------------------------------------------------------------

    async def _start_server(self) -> None:
        await self.lifecycle.start()
        if self.lifecycle.problem:
            problem = self.lifecycle.problem
            self.notify(problem, title="Could not start the server", severity="error", timeout=60)
            self._write_note(f"✗ {problem}", "bold red")
        elif self.lifecycle.attached:
            return
        elif self.lifecycle.running:
            store = getattr(self.core, "store", None)   # (a stand-in server may keep none)
            if store is not None:
                self.core.bus.publish(HistoryLoaded(history=history_rows(self.core)))
            listeners = self.core.listeners
            if listeners and not any(li.ok for li in listeners):
                self.notify("No listener could be bound: this server receives no mail. "
                            "See the status line; fix the config and restart.",
                            title="Not listening", severity="error", timeout=30)
            self.batch.mark()
            if self.welcome:
                self.notify(self.welcome, timeout=10)
            if self.intro or self.welcome:
                self._write_note(self.intro or self.welcome, "bold")

    def _write_note(self, text: str, style: str) -> None:
        for activity in self.query(LOGS):
            activity.write_note(text, style)

    async def on_unmount(self) -> None:
        self.loop_lag.close()
        await self.lifecycle.stop()

    async def _shutdown_then_exit(self) -> None:
        await self.lifecycle.stop()
        self.exit()

    def action_quit(self) -> None:  # type: ignore[override]
        """An attached console quits at once; one with its own server asks before stopping mail."""
        if self.lifecycle.running and not self.lifecycle.attached:
            self.run_worker(self._ask_then_quit(), name="quit", group="quit", exclusive=True, exit_on_error=False)
        else:
            self.action_quit_now()

    def hang_up(self) -> None:
        """The terminal is gone: stop (or detach from) the server, then end at once.

        Nothing is left to restore on a terminal that hung up, and Textual's
        orderly exit can wait forever on one; the server has been stopped
        cleanly by then.
        """
        async def stop_then_end() -> None:
            await self.lifecycle.stop()
            os._exit(0)

        if not self._hung_up:
            self._hung_up = True
            self.run_worker(stop_then_end(), name="hang-up", group="core", exclusive=True, exit_on_error=False)

    async def _ask_then_quit(self) -> None:
        if await self.push_screen_wait(QuitDialog()):
            self.action_quit_now()

    def action_quit_now(self) -> None:
        """Quit without asking (stopping the console's own server cleanly)."""
        if self.lifecycle.phase not in ("stopping", "stopped"):
            self.run_worker(self._shutdown_then_exit(), name="shutdown", group="core", exclusive=True,
                            exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A console action that failed is a message, never the end of the console (or the server)."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            log.error("%s failed", event.worker.name, exc_info=error)
            self.notify(f"{event.worker.name} failed: {error!r}", title="Console error", severity="error")
            if event.worker.name == "shutdown":
                self.exit()

    # -- drawing -----------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._draw(self.batch.next())
        except Exception as exc:  # a drawing bug must not take the mail server down with the console
            log.exception("the console could not apply a batch")
            if not self._tick_failed:
                self._tick_failed = True
                self.notify(f"the console could not show some events: {exc!r}", title="Console error",
                            severity="error", timeout=15)

    def _draw(self, frame: Frame) -> None:
        if self.closing:
            return
        if frame.dropped:
            self.notify(f"{frame.dropped} events were not shown: the console fell behind (counters are low)",
                        severity="warning", timeout=5)
        for alert in frame.alerts:
            self._alert(alert)
        if frame.status:
            self._show_status()
        for text, style in frame.notes:
            self._write_note(text, style)
        if frame.redraw:
            if frame.log or frame.log_skipped:
                for activity in self.query(LOGS):
                    activity.write_events(frame.log, frame.log_skipped)
            self._sync(self.active_panel)

    def _second(self) -> None:
        if self.handle_signals and os.getppid() != self._parent_pid:
            self.hang_up()     # whoever showed this console is gone (tmux killed, `mailtui web` stopped)
        if self.closing:
            return
        self._show_status()
        if self.active_panel == "queue":
            panel = self.query_one(QueuePanel)
            if panel.shows_attempts:
                self.batch.mark("queue")
                self._sync("queue")
            panel.tick()

    def _alert(self, event: Event) -> None:
        if isinstance(event, ListenerFailed):
            self.notify(f"{event.proto.upper()} cannot listen on {event.address}: {short_error(event.error)}",
                        title="Listener failed", severity="error", timeout=30)
        elif isinstance(event, Notice):
            self.notify(event.text, severity="error" if event.level == "error" else "warning", timeout=8)

    def _phase_changed(self) -> None:
        """The lifecycle's phase changed: the status line shows it; an attached console's comings and goings
        are said once each."""
        phase, before = self.lifecycle.phase, self._shown_phase
        self._shown_phase = phase
        if self.lifecycle.attached and phase != before:
            if phase == "running":
                pid = getattr(self.core, "pid", 0)
                text = (f"Attached to the mail server (pid {pid}); quitting this console leaves it running"
                        if before in ("", "starting") else f"The mail server is back (pid {pid}): attached again")
                self.notify(text, title="Attached", timeout=6)
                self._write_note(f"● {text}", "bold")
            elif phase == "waiting" and before in ("", "starting", "running"):
                self.notify(self.lifecycle.problem, title="The mail server is not running", severity="error",
                            timeout=30)
                self._write_note(f"✗ {self.lifecycle.problem}", "bold red")
        self._show_status()

    def _show_status(self) -> None:
        try:
            status = self.query_one(StatusBar)
        except NoMatches:  # not mounted yet, or shutting down
            return
        if not status.display:   # being taken down, its parts half gone
            return
        phase = self.lifecycle.phase
        pid = getattr(self.core, "pid", 0)   # (0 until the first snapshot: not attached yet, whatever the phase)
        note = (f"attached to pid {pid}" if pid else "attaching") if self.lifecycle.attached else ""
        status.show_listeners(self.core.listeners if phase != "starting" else [], phase, self.lifecycle.problem,
                              note=note)
        now = self.clock()
        queued = len(self.core.queue) if self.lifecycle.running else 0
        rate = self.model.rate
        status.show_counters(self.model.counters, queued, rate.per_minute(now), rate.series(now))
        self.loop_lag.follow(self.core.lag if self.lifecycle.running else None)
        status.show_lag(self.loop_lag.latest())

    def _sync(self, panel: str) -> None:
        """Redraw ``panel`` if something changed since it was last drawn."""
        if panel == "log" or (panel in ("queue", "clients") and not self.lifecycle.running):
            return
        if not self.batch.take(panel):
            return
        if panel == "connections":
            if self.model.registry_stale and self.lifecycle.running:   # a registration ends "press r" hints
                self.model.reconcile(self.core.admin.registry.clients())
            self.query_one(ConnectionsPanel).show(list(self.model.sessions.values()))
        elif panel == "dns":
            self.query_one(DnsPanel).show(list(self.model.dns))
        elif panel == "queue":
            items = self.core.queue.items(MAX_ROWS)
            self.query_one(QueuePanel).show([QueueRow.of(item) for item in items], self.model.counters)
        elif panel == "clients":
            self.run_worker(self._load_registry, group="registry", exclusive=True, exit_on_error=False)

    async def _load_registry(self) -> None:
        registry, maildirs = self.core.admin.registry, self.core.admin.maildirs
        clients = list(registry.clients())
        addresses = [m.address for m in registry.mailboxes()]
        panel = self.query_one(ClientsPanel)
        panel.show(clients, [MailboxRow(a) for a in addresses], self.core.stats.totals)
        counts = await asyncio.to_thread(lambda: [maildirs.count(a) for a in addresses])
        panel.show(clients, [MailboxRow(a, n) for a, n in zip(addresses, counts)])

    # -- navigation ------------------------------------------------------------------------

    def action_show_panel(self, panel: str) -> None:
        self.query_one(TabbedContent).active = panel
        self._focus_panel(panel)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        panel = event.pane.id or ""
        self.query_one("#log-dock").set_class(panel == "log", "-hidden")
        self._sync(panel)
        self._focus_panel(panel)

    def _focus_panel(self, panel: str) -> None:
        target = {"connections": "#connections-table", "clients": "#clients-table", "dns": "#dns-table",
                  "queue": "#queue-table", "log": "#log-tab"}[panel]
        self.query_one(target).focus()

    def on_dns_panel_show_records(self, message: DnsPanel.ShowRecords) -> None:
        # The server's own resolver when it runs here; attached to another process, one of our own.
        resolver = getattr(self.core, "resolver", None) or Resolver(self.config.dns.nameservers,
                                                                     self.config.dns.timeout)
        self.push_screen(DnsRecordsScreen(self.config, resolver))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.about()))

    def about(self) -> list[tuple[str, str]]:
        cfg = self.config
        listeners = ", ".join(f"{li.proto.upper()} {li.bound or li.address}{'' if li.ok else ' (failed)'}"
                              for li in self.core.listeners)
        server = (f"attached to pid {getattr(self.core, 'pid', '?')} (quitting leaves it running)"
                  if self.lifecycle.attached else "this console's own (quitting stops it)")
        return [("Version", f"mailtui {__version__}"), ("Server", server), ("Config", cfg.source),
                ("Data", str(cfg.server.data_dir)), ("Hostname", cfg.server.hostname),
                ("Domains", ", ".join(cfg.server.local_domains)), ("Listening", listeners or "—")]

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Single-letter keys belong to the dialog on top, not to the panels behind it.
        if action in ("quit", "show_panel", "help", "toggle_theme") and self.screen.is_modal:
            return False
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for panel in PANELS:
            yield SystemCommand(f"Show {panel}", f"Switch to the {panel} panel",
                                lambda panel=panel: self.action_show_panel(panel))
        yield SystemCommand("Register a client", "Allow a network to send mail through this server",
                            self.add_client)
        yield SystemCommand("Create a mailbox", "Add a local account (POP3 login and address)",
                            self.add_mailbox)
        yield SystemCommand("Retry all queued messages", "Make every queued message due now",
                            self.retry_all)
        row = self.query_one("#connections-table", LiveTable).cursor_row
        if row is not None and row.can_register:
            yield SystemCommand(f"Register {row.peer}", "Register the selected connection's address as a client",
                                lambda: self.add_client(row.peer))
        yield SystemCommand("Help", "Show every key", self.action_help)
        yield SystemCommand("Toggle light/dark", "Switch between the light and the dark theme",
                            self.action_toggle_theme)
