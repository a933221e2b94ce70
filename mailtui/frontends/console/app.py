"""The console application: the core and its live view in one event loop.

The app owns a :class:`~mailtui.server.core.Core`: it starts it when mounted, on
Textual's own loop, and stops it on quit. The mail path never waits for the
screen: the core publishes into a bounded bus subscription, and one timer
drains it a few times a second, folds the batch into the model and redraws
only the panel on show. Admin actions go through :class:`~mailtui.admin.Admin`,
like the CLI's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from rich.terminal_theme import TerminalTheme
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from ... import __version__
from ...admin.registry import RegistryError, parse_network
from ...admin.verbs import AdminError
from ...config import Config, ConfigError
from ...events import Event, EventBus, ListenerFailed, Notice
from ...server.core import AlreadyRunning, Core
from ..errors import CliError
from ..loop import run
from .dialogs import ClientForm, ConfirmDialog, HelpScreen, MailboxForm, MessageView
from .model import LOG_BATCH_LINES, MAX_ROWS, ConsoleModel
from .widgets import (
    ActivityLog,
    ClientRow,
    ClientsPanel,
    ConnectionsPanel,
    DnsPanel,
    LiveTable,
    MailboxRow,
    QueuePanel,
    QueueRow,
    StatusBar,
)
from .widgets.status import short_error

TICK = 0.25          # seconds between two batches applied to the screen
BUSY_BATCH = 200     # events in one batch that make a busy server: the panels redraw less often
PANELS = ("connections", "clients", "dns", "queue", "log")

CoreFactory = Callable[..., Any]

# Textual's dark ANSI palette draws magenta as red; keep it purple, so a delivery
# attempt or a refusal never reads as a bounce.
DARK_ANSI = TerminalTheme(
    (12, 12, 12), (217, 217, 217),
    [(26, 26, 26), (244, 0, 95), (152, 224, 36), (253, 151, 31), (157, 101, 255), (174, 129, 255),
     (88, 209, 235), (196, 197, 181), (98, 94, 76)],
    [(244, 0, 95), (152, 224, 36), (224, 213, 97), (157, 101, 255), (190, 150, 255), (88, 209, 235),
     (246, 246, 239)],
)


class MailtuiApp(App[None]):
    """``core_factory(config, bus=bus)`` builds the server (tests may pass a stand-in)."""

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

    def __init__(self, config: Config, *, core_factory: CoreFactory = Core, clock: Callable[[], float] = time.time,
                 welcome: str = "", intro: str = "", handle_signals: bool = False) -> None:
        super().__init__()
        self.config = config
        self.clock = clock
        self.welcome = welcome      # a notification at start
        self.intro = intro          # a line in the activity log at start
        self.handle_signals = handle_signals
        self.bus = EventBus()
        self.subscription = self.bus.subscribe(maxsize=50_000)
        self.core = core_factory(config, bus=self.bus)
        self.model = ConsoleModel()
        self.phase = "starting"      # starting, running, failed, stopping, stopped
        self.problem = ""            # why the server is not running
        self.core_ready = asyncio.Event()       # the server is up and listening
        self._start_done = asyncio.Event()      # the attempt to start it is over, either way
        self.log_records: deque[logging.LogRecord] = deque(maxlen=200)
        self._dirty = set(PANELS)
        self._dropped_reported = 0
        self._log_pending: deque[Event] = deque(maxlen=LOG_BATCH_LINES)
        self._log_skipped = 0
        self._since_redraw = 0
        self._tick_failed = False

    # -- layout ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with TabbedContent(initial="connections", id="panels"):
            with TabPane("Connections", id="connections"):
                yield ConnectionsPanel(id="connections-panel")
            with TabPane("Clients", id="clients"):
                yield ClientsPanel(id="clients-panel")
            with TabPane("DNS", id="dns"):
                yield DnsPanel(id="dns-panel")
            with TabPane("Queue", id="queue"):
                yield QueuePanel(self.clock, id="queue-panel")
            with TabPane("Log", id="log"):
                yield ActivityLog(id="log-tab")
        yield ActivityLog(id="log-dock")
        yield Footer()

    def on_mount(self) -> None:
        self.ansi_theme_dark = DARK_ANSI
        self._show_status()
        self.set_interval(TICK, self._tick, name="console-tick")
        self.set_interval(1.0, self._second, name="console-second")
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.action_quit)
        self.query_one("#connections-table", LiveTable).focus()
        self.run_worker(self._start_core(), name="core-start", group="core", exit_on_error=False)

    @property
    def active_panel(self) -> str:
        return self.query_one(TabbedContent).active

    # -- the server --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.phase == "running"

    async def _start_core(self) -> None:
        try:
            await self._start_attempt()
        finally:
            self._start_done.set()
            self._show_status()

    async def _start_attempt(self) -> None:
        try:
            await self.core.start()
        except AlreadyRunning as exc:
            self._fail(f"{exc}: quit the other one first, or give this one another server.data_dir")
        except ConfigError as exc:
            self._fail(f"config error: {exc}")
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            self._fail(f"cannot start the server: {exc.strerror or exc}{where}")
        except Exception as exc:  # a bug: say so on screen rather than crash the console
            logging.getLogger(__name__).exception("the server failed to start")
            self._fail(f"the server failed to start: {exc!r}")
        else:
            if self.phase != "starting":   # quit while starting: stop_core() takes over
                return
            self.phase = "running"
            failed = [li for li in self.core.listeners if not li.ok]
            if failed and len(failed) == len(self.core.listeners):
                self.notify("No listener could be bound: this server receives no mail. "
                            "See the status line; fix the config and restart.",
                            title="Not listening", severity="error", timeout=30)
            self._dirty.update(PANELS)
            self.core_ready.set()
            if self.welcome:
                self.notify(self.welcome, timeout=10)
            if self.intro or self.welcome:
                for log in self.query(ActivityLog):
                    log.write_note(self.intro or self.welcome, "bold")

    def _fail(self, problem: str) -> None:
        if self.phase == "starting":
            self.phase = "failed"
        self.problem = problem
        self.notify(problem, title="The server is not running", severity="error", timeout=60)
        for log in self.query(ActivityLog):
            log.write_note(f"✗ {problem}", "bold red")

    async def stop_core(self) -> None:
        """Stop the server (idempotent); the console stays up until exit()."""
        if self.phase in ("stopping", "stopped"):
            return
        self.phase = "stopping"
        self._show_status()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._start_done.wait(), 30)
        if getattr(self.core, "started", False):
            try:
                await self.core.stop()
            except Exception:  # the process is exiting anyway: never hang or crash on the way out
                logging.getLogger(__name__).exception("the server did not stop cleanly")
        self.phase = "stopped"
        self._show_status()

    async def on_unmount(self) -> None:
        await self.stop_core()

    async def _shutdown_then_exit(self) -> None:
        await self.stop_core()
        self.exit()

    def action_quit(self) -> None:  # type: ignore[override]
        if self.phase not in ("stopping", "stopped"):
            self.run_worker(self._shutdown_then_exit(), name="shutdown", group="core", exclusive=True,
                            exit_on_error=False)

    def action_quit_now(self) -> None:
        self.action_quit()

    # -- the batch -----------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A console action that failed is a message, never the end of the console (or the server)."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            logging.getLogger(__name__).error("%s failed", event.worker.name, exc_info=error)
            self.notify(f"{event.worker.name} failed: {error!r}", title="Console error", severity="error")
            if event.worker.name == "shutdown":
                self.exit()

    def _tick(self) -> None:
        try:
            self._apply_batch()
        except Exception as exc:  # a drawing bug must not take the mail server down with the console
            logging.getLogger(__name__).exception("the console could not apply a batch")
            if not self._tick_failed:
                self._tick_failed = True
                self.notify(f"the console could not show some events: {exc!r}", title="Console error",
                            severity="error", timeout=15)

    def _apply_batch(self) -> None:
        events = self.subscription.drain()
        self._take_log_records(events)
        changes = self.model.apply(events)
        dropped = self.subscription.dropped
        if dropped > self._dropped_reported:
            self._dropped_reported = dropped
            self.notify(f"{dropped} events were not shown: the console fell behind (counters are low)",
                        severity="warning", timeout=5)
        for flag in ("connections", "dns", "queue"):
            if getattr(changes, flag):
                self._dirty.add(flag)
        if changes.registry:
            self._dirty.add("clients")
        self._log_skipped += changes.log_skipped + max(0, len(self._log_pending) + len(changes.log)
                                                       - LOG_BATCH_LINES)
        self._log_pending.extend(changes.log)
        for alert in changes.alerts:
            self._alert(alert)
        if changes.listeners or changes.counters or events:
            self._show_status()
        # The counters follow every batch; on a busy server the tables and the log slow down to two
        # redraws a second, then to one (nobody reads faster, and the mail path gets the time).
        self._since_redraw += 1
        every = 1 if len(events) <= BUSY_BATCH else 2 if len(events) <= 4 * BUSY_BATCH else 4
        if self._since_redraw >= every:
            self._since_redraw = 0
            if self._log_pending or self._log_skipped:
                for log in self.query(ActivityLog):
                    log.write_events(self._log_pending, self._log_skipped)
                self._log_pending.clear()
                self._log_skipped = 0
            self._sync(self.active_panel)

    def _second(self) -> None:
        self._show_status()
        if self.active_panel == "queue":
            self.query_one(QueuePanel).tick()

    def _take_log_records(self, events: list[Event]) -> None:
        """Captured log records join the batch as notices (errors pop up, warnings are only logged)."""
        while self.log_records:
            record = self.log_records.popleft()
            level = "error" if record.levelno >= logging.ERROR else "info"
            text = (record.getMessage().splitlines() or [""])[0]
            events.append(Notice(level=level, text=f"[{record.name}] {text}", at=record.created))

    def _alert(self, event: Event) -> None:
        if isinstance(event, ListenerFailed):
            self.notify(f"{event.proto.upper()} cannot listen on {event.address}: {short_error(event.error)}",
                        title="Listener failed", severity="error", timeout=30)
        elif isinstance(event, Notice):
            self.notify(event.text, severity="error" if event.level == "error" else "warning", timeout=8)

    def _show_status(self) -> None:
        try:
            status = self.query_one(StatusBar)
        except NoMatches:  # shutting down
            return
        listeners = self.core.listeners if self.phase != "starting" else []
        status.show_listeners(listeners, self.phase, self.problem)
        now = self.clock()
        queued = len(self.core.queue) if self.running else 0
        status.show_counters(self.model.counters, queued, self.model.rate.per_minute(now), self.model.rate.series(now))

    def _sync(self, panel: str) -> None:
        """Redraw ``panel`` if something changed since it was last drawn."""
        if panel not in self._dirty or panel == "log":
            return
        if panel != "connections" and panel != "dns" and not self.running:
            return
        self._dirty.discard(panel)
        if panel == "connections":
            self.query_one(ConnectionsPanel).show(list(self.model.sessions.values()))
        elif panel == "dns":
            self.query_one(DnsPanel).show(list(self.model.dns))
        elif panel == "queue":
            items = self.core.queue.items()
            self.query_one(QueuePanel).show([QueueRow.of(item) for item in items[:MAX_ROWS]])
        elif panel == "clients":
            self.run_worker(self._load_registry(), group="registry", exclusive=True, exit_on_error=False)

    async def _load_registry(self) -> None:
        registry = self.core.admin.registry
        clients = [ClientRow(c.name, c.networks, c.note, c.created) for c in registry.clients()]
        addresses = [m.address for m in registry.mailboxes()]
        panel = self.query_one(ClientsPanel)
        panel.show(clients, [MailboxRow(a) for a in addresses])
        maildirs = self.core.admin.maildirs
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

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.about()))

    def about(self) -> list[tuple[str, str]]:
        cfg = self.config
        listeners = ", ".join(f"{li.proto.upper()} {li.bound or li.address}{'' if li.ok else ' (failed)'}"
                              for li in getattr(self.core, "listeners", []))
        return [("Version", f"mailtui {__version__}"), ("Config", cfg.source),
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
                            lambda: self.add_client())
        yield SystemCommand("Create a mailbox", "Add a local account (POP3 login and address)",
                            lambda: self.add_mailbox())
        yield SystemCommand("Retry all queued messages", "Make every queued message due now",
                            lambda: self.queue_action("flush", ""))
        row = self.query_one("#connections-table", LiveTable).cursor_row
        if row is not None and row.can_register:
            yield SystemCommand(f"Register {row.peer}", "Register the selected connection's address as a client",
                                lambda: self.add_client(row.peer))
        yield SystemCommand("Help", "Show every key", self.action_help)
        yield SystemCommand("Toggle light/dark", "Switch between the light and the dark theme",
                            self.action_toggle_theme)

    # -- admin actions -----------------------------------------------------------------------

    async def admin_call(self, op: str, **args: Any) -> Any:
        """Run an admin operation; a refusal becomes a notification and None."""
        if not self.running:
            self.notify("The server is not running.", severity="error")
            return None
        try:
            return await self.core.admin.call(op, args)
        except AdminError as exc:
            self.notify(str(exc), title="Not done", severity="error")
            return None

    async def _confirm(self, title: str, question: str, confirm: str) -> bool:
        return bool(await self.push_screen_wait(ConfirmDialog(title, question, confirm=confirm)))

    @on(ConnectionsPanel.RegisterRequested)
    def _register_requested(self, event: ConnectionsPanel.RegisterRequested) -> None:
        self.add_client(event.address)

    @on(ClientsPanel.ActionRequested)
    def _clients_action(self, event: ClientsPanel.ActionRequested) -> None:
        match event.action:
            case "add_client":
                self.add_client()
            case "edit_client":
                self.edit_client(event.target)
            case "remove_client":
                self.remove_client(event.target)
            case "add_mailbox":
                self.add_mailbox()
            case "set_password":
                self.add_mailbox(event.target)
            case "remove_mailbox":
                self.remove_mailbox(event.target)

    @on(QueuePanel.ActionRequested)
    def _queue_requested(self, event: QueuePanel.ActionRequested) -> None:
        self.queue_action(event.action, event.msg_id)

    @work(group="admin", exit_on_error=False)
    async def add_client(self, address: str = "") -> None:
        """Register a client; with ``address`` (a refused peer), pre-filled for it."""
        if not self.running:
            self.notify("The server is not running.", severity="error")
            return
        taken = [c.name for c in self.core.admin.registry.clients()]
        name, networks = "", []
        if address:
            network = parse_network(address)
            networks = [str(network)]
            base = "host-" + str(network.network_address).replace(".", "-").replace(":", "-")
            name = next(n for n in (base, *(f"{base}-{i}" for i in range(2, 100))) if n not in taken)
        result = await self.push_screen_wait(ClientForm(taken=taken, name=name, networks=networks))
        if result is None:
            return
        done = await self.admin_call("client_add", name=result.name, networks=list(result.networks),
                                     note=result.note)
        if done:
            self.notify(f"{done['name']} may now send from {', '.join(done['networks'])}",
                        title="Client registered")

    @work(group="admin", exit_on_error=False)
    async def edit_client(self, name: str) -> None:
        client = self.core.admin.registry.get_client(name)
        if client is None:
            return
        taken = [c.name for c in self.core.admin.registry.clients()]
        result = await self.push_screen_wait(ClientForm(taken=taken, editing=client.name, networks=client.networks,
                                                        note=client.note))
        if result is None:
            return
        done = await self.admin_call("client_edit", name=client.name,
                                     new_name=result.name if result.name != client.name else None,
                                     networks=list(result.networks), note=result.note)
        if done:
            self.notify(f"{done['name']}: {', '.join(done['networks'])}", title="Client updated")

    @work(group="admin", exit_on_error=False)
    async def remove_client(self, name: str) -> None:
        if await self._confirm("Remove client", f"Remove the client {name}? Its networks may no longer send "
                               "mail (sessions that log in still can).", "Remove"):
            if await self.admin_call("client_remove", name=name):
                self.notify(f"client {name} removed")

    @work(group="admin", exit_on_error=False)
    async def add_mailbox(self, address: str = "") -> None:
        """Create a mailbox, or (with ``address``) set its password."""
        if not self.running:
            self.notify("The server is not running.", severity="error")
            return
        taken = [m.address for m in self.core.admin.registry.mailboxes()]
        result = await self.push_screen_wait(MailboxForm(local_domains=self.config.server.local_domains,
                                                         taken=taken, address=address))
        if result is None:
            return
        try:  # the core hashes with scrypt off the event loop
            await self.core.admin.mailbox_add(result.address, result.password, replace=bool(address))
        except (AdminError, RegistryError, ValueError) as exc:
            self.notify(str(exc), title="Not done", severity="error")
            return
        self.notify(f"mailbox {result.address} {'updated' if address else 'created'}")

    @work(group="admin", exit_on_error=False)
    async def remove_mailbox(self, address: str) -> None:
        if await self._confirm("Remove mailbox", f"Remove the mailbox {address}? Its login stops working; "
                               "its messages stay on disk.", "Remove"):
            if await self.admin_call("mailbox_remove", address=address):
                self.notify(f"mailbox {address} removed")

    @work(group="admin", exit_on_error=False)
    async def queue_action(self, action: str, msg_id: str) -> None:
        if action == "flush":
            done = await self.admin_call("queue_flush")
            if done is not None:
                self.notify(f"{done['flushed']} message(s) due now")
        elif action == "retry":
            done = await self.admin_call("queue_flush", msg_id=msg_id)
            if done is not None:
                self.notify(f"{msg_id}: trying again now" if done["flushed"]
                            else f"{msg_id} is being delivered right now")
        elif action == "bounce":
            if await self._confirm("Bounce message", f"Give up on {msg_id} now and send a bounce "
                                   "to its sender?", "Bounce"):
                if await self.admin_call("queue_bounce", msg_id=msg_id):
                    self.notify(f"{msg_id} bounced")
        elif action == "delete":
            if await self._confirm("Delete message", f"Delete {msg_id} from the queue? No bounce is sent; "
                                   "the message is gone.", "Delete"):
                if await self.admin_call("queue_remove", msg_id=msg_id):
                    self.notify(f"{msg_id} deleted")
        elif action == "view":
            shown = await self.admin_call("queue_show", msg_id=msg_id)
            if shown is not None:
                await self.push_screen_wait(MessageView(shown))
        self._dirty.add("queue")


# -- running it ----------------------------------------------------------------------------

class _LogCapture(logging.Handler):
    """Log records kept for the console, instead of written over the screen.

    The core publishes its own warnings as events, so from mailtui's loggers
    only errors (a bug's traceback) are kept; from libraries, warnings too.
    """

    def __init__(self, sink: deque) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    # aiosmtpd warns on every AUTH that it sets a deprecated attribute itself.
    NOISE = (("mail.log", "login_data is deprecated"),)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mailtui") and (record.levelno < logging.ERROR or record.name == "mailtui.server.core"):
            return
        if any(record.name == name and text in str(record.msg) for name, text in self.NOISE):
            return
        self.sink.append(record)


@contextlib.contextmanager
def capture_logs(sink: deque) -> Iterator[None]:
    """While the console runs, route every log record to ``sink`` (drained by the app)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [_LogCapture(sink)]
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def run_app(app: MailtuiApp, **kwargs: Any) -> None:
    """Run ``app`` with logging kept off the screen; the server is stopped however it ends."""
    with capture_logs(app.log_records):
        try:
            await app.run_async(**kwargs)
        finally:
            await app.stop_core()


def run_console(config: Config) -> None:
    app = MailtuiApp(config, handle_signals=True)
    run(run_app(app))
    for listener in getattr(app.core, "listeners", []):
        if listener.error:
            print(f"mailtui: {listener.proto.upper()} could not listen on {listener.address}: "
                  f"{short_error(listener.error)}", file=sys.stderr)
    if app.problem:
        raise CliError(app.problem)

