"""The headless server: every part wired together in one asyncio loop.

``Core`` owns the data directory (an exclusive lock while it runs), opens the
store, rebuilds the queue from the spool (in the background: mail is
accepted meanwhile), binds the SMTP, submission, POP3 and IMAP listeners and
runs the delivery loop, the batched store writer and the loop-lag probe. Front
ends (``mailtui serve``, the console) only start it, stop it, read its event
bus, its status (:meth:`Core.status`, :meth:`Core.status_reporter`) and call
:attr:`Core.admin`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..access.imap.server import ImapServer
from ..access.pop3 import Pop3Server
from ..addresses import AddressError, parse_address
from ..admin.attach import AttachHub
from ..admin.control import ControlServer, socket_path
from ..admin.registry import Registry
from ..admin.throttle import LoginThrottle
from ..admin.verbs import Admin
from ..config import Config
from ..dns.resolver import Resolver
from ..events import EventBus, ListenerFailed, ListenerStarted, Notice, RegistryChanged
from ..mailauth.dkimkeys import DkimKeyError, DkimKeys
from ..mailauth.dkimsign import DkimSigner
from ..mailauth.mtasts import MtaSts
from ..mailauth.verdict import AuthPolicy
from ..receive.intake import Envelope, Intake
from ..receive.listen import end_smtp_sessions, listen
from ..receive.policy import Policy
from ..receive.rules import InboundRules
from ..receive.senderauth import SenderAuth
from ..receive.smtp import SmtpContext
from ..receive.submission import SubmissionRules
from ..send.attempt import TransferAgent
from ..send.scheduler import Scheduler
from ..store.db import Store
from ..store.mailboxes import MailStore
from ..store.maildir import Maildirs
from ..store.queue import Queue
from ..store.safeio import DirSyncer
from ..wire import hostport
from . import snapshot
from .lag import LagProbe
from .metrics import Metrics, MetricsServer
from .sessions import OpenSessions
from .stats import ServerStats
from .status import StatusReporter
from .tls import server_context

log = logging.getLogger(__name__)

SCAN_GRACE = 1.0   # seconds start-up waits for the spool scan before listening anyway


def pin_mmap_threshold() -> None:
    """Keep glibc from holding freed 16 MiB blocks in every executor thread's heap.

    Each password check (scrypt, 16 MiB) runs in an executor thread. After the
    first such block is freed, glibc raises its mmap threshold, so the next
    ones come from that thread's arena and stay resident: with six threads,
    ~70 MiB of RSS that never shrinks (measured: a 10,000-message IMAP open
    went from +68 MiB over idle to -10 MiB). A fixed threshold keeps big
    blocks mmap'd and returned on free.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)       # M_MMAP_THRESHOLD; fixing it disables the dynamic one
    except (OSError, AttributeError):      # not glibc: nothing to do
        pass


class AlreadyRunning(Exception):
    """Another mailtui process owns this data directory."""


@dataclass
class Listener:
    proto: str
    address: str          # as configured
    bound: str = ""       # actual host:port once bound
    error: str = ""
    server: asyncio.AbstractServer | None = None

    @property
    def ok(self) -> bool:
        return self.server is not None

    @property
    def port(self) -> int:
        return int(self.bound.rsplit(":", 1)[1]) if self.bound else 0


class DataDirLock:
    """An exclusive flock on ``data_dir/mailtui.lock`` (released by the kernel on exit)."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "mailtui.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid written by the process that holds the lock (None if unknown)."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_state(config: Config, bus: EventBus | None = None, on_problem=None, *, load_queue: bool = True):
    """Open store, registry, maildirs and queue of a data directory (no network).

    Without ``load_queue`` the queue starts empty, for :meth:`Queue.start_scan`.
    """
    data_dir = config.server.data_dir
    store = Store(data_dir, log_caps={"connections": config.logs.max_connections,
                                      "dns": config.logs.max_dns,
                                      "deliveries": config.logs.max_deliveries},
                  on_problem=on_problem)

    def changed(what: str, name: str, action: str) -> None:
        if bus is not None:
            bus.publish(RegistryChanged(what=what, name=name, action=action))

    registry = Registry(store, config.server.local_domains, on_change=changed)
    syncer = DirSyncer()
    maildirs = Maildirs(data_dir / "mail", syncer=syncer)
    queue = Queue(data_dir / "spool", store=store, syncer=syncer, on_problem=on_problem)
    if load_queue:
        queue.load()
    return store, registry, maildirs, queue, syncer


class Core:
    def __init__(self, config: Config, *, bus: EventBus | None = None):
        self.config = config
        self.bus = bus or EventBus()
        self.stats = ServerStats()
        self.bus.add_listener(self.stats.observe)
        self.sessions = OpenSessions()      # for consoles that attach later
        self.lag = LagProbe()
        self._status_lag = self.lag.window()        # the control socket's ``status``
        self._status_since = time.monotonic()
        self.bus.add_listener(self.sessions.observe)
        self.listeners: list[Listener] = []
        self._lock = DataDirLock(config.server.data_dir)
        self._tasks: list[asyncio.Task] = []
        self.started = False

    def _notice(self, text: str, level: str = "warning") -> None:
        log.warning("%s", text)
        self.bus.publish(Notice(level=level, text=text))

    async def start(self) -> None:
        cfg = self.config
        pin_mmap_threshold()
        if not self._lock.acquire():
            pid = self._lock.holder()
            raise AlreadyRunning(f"another mailtui server owns this data directory"
                                 f"{f' (pid {pid})' if pid else ''}: {cfg.server.data_dir}")
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        """Start in this order: state and the spool scan, the services, the listeners, control and tasks."""
        self.lag.start()
        scan = self._open_state()
        await self._build_services()
        # A small spool is whole before the listeners open (most starts); a
        # big one goes on in the background while mail is accepted.
        await asyncio.wait([scan], timeout=SCAN_GRACE)
        await self._bind_listeners()
        await self._bind_metrics()
        await self._start_control()
        self._start_background()
        self.started = True

    def _open_state(self) -> asyncio.Task:
        """Open the data directory and start the spool scan (the task that rebuilds the queue)."""
        self.store, self.registry, self.maildirs, self.queue, self._syncer = open_state(
            self.config, self.bus, self._notice, load_queue=False)
        scan = self.queue.start_scan(self._scanned)
        self._tasks.append(scan)
        self.maildirs.ensure(self.config.postmaster_mailbox)
        return scan

    async def _build_services(self) -> None:
        """Everything that handles mail, from the bottom up; nothing listens yet."""
        cfg = self.config
        self.tls_context = server_context(cfg)
        self.policy = Policy(cfg, self.registry)
        self.logins = LoginThrottle()  # one count of failed logins for every protocol
        self.signer = await self._dkim_signer()
        self.intake = Intake(maildirs=self.maildirs, queue=self.queue, bus=self.bus, store=self.store,
                             signer=self.signer)
        self.resolver = Resolver(cfg.dns.nameservers, cfg.dns.timeout, bus=self.bus, store=self.store)
        self.delivery = self._build_delivery()
        self.admin = Admin(registry=self.registry, queue=self.queue, maildirs=self.maildirs,
                           delivery=self.delivery, bus=self.bus, status=self.status)
        self._build_smtp()
        self._build_access()

    def _build_delivery(self) -> Scheduler:
        """The scheduler (what is due, how many in flight) and its transfer agent (one attempt each)."""
        cfg = self.config
        sts = MtaSts(self.resolver, cfg.server.data_dir, ca_file=cfg.mta_sts.ca_file,
                     fetch_timeout=cfg.mta_sts.fetch_timeout) if cfg.mta_sts.enforce else None
        transfer = TransferAgent(config=cfg, queue=self.queue, resolver=self.resolver, bus=self.bus,
                                 submit=self.submit, store=self.store, mta_sts=sts)
        return Scheduler(config=cfg, queue=self.queue, bus=self.bus, transfer=transfer)

    def _build_smtp(self) -> None:
        """SMTP from outside (sender authentication checks) and submission from users."""
        cfg = self.config
        sender_auth = SenderAuth(self.resolver, cfg.server.hostname, AuthPolicy.from_config(cfg.auth),
                                 check=cfg.auth.check_inbound)
        rules = InboundRules(self.policy, auth_requires_tls=cfg.smtp.auth_require_tls,
                             message_checks=(sender_auth,))
        self.smtp = SmtpContext(config=cfg, registry=self.registry, policy=self.policy, intake=self.intake,
                                bus=self.bus, store=self.store, tls_context=self.tls_context,
                                logins=self.logins, rules=rules)
        self.submission = SmtpContext(config=cfg, registry=self.registry, policy=self.policy, intake=self.intake,
                                      bus=self.bus, store=self.store, tls_context=self.tls_context,
                                      logins=self.logins, rules=SubmissionRules(self.policy), proto="submission")

    def _build_access(self) -> None:
        """POP3 and IMAP on the one set of folders."""
        cfg = self.config
        self.mail = MailStore(self.maildirs, syncer=self._syncer)   # the folders IMAP and POP3 share
        self.pop3 = Pop3Server(config=cfg.pop3, hostname=cfg.server.hostname, registry=self.registry,
                               mail=self.mail, bus=self.bus, tls_context=self.tls_context,
                               store=self.store, logins=self.logins)
        self.imap = ImapServer(config=cfg.imap, hostname=cfg.server.hostname, registry=self.registry,
                               store=self.mail, bus=self.bus, tls_context=self.tls_context,
                               max_message_size=cfg.smtp.max_message_size, logins=self.logins, db=self.store)

    async def _bind_listeners(self) -> None:
        """Open every configured mail listener; one that cannot bind is reported, not fatal."""
        cfg = self.config
        for proto, endpoints, start in (
                ("smtp", cfg.smtp.listen, lambda h, p: listen(self.smtp, h, p)),
                ("submission", cfg.submission.listen, lambda h, p: listen(self.submission, h, p)),
                ("submissions", cfg.submission.tls_listen,
                 lambda h, p: listen(self.submission, h, p, implicit_tls=True)),
                ("pop3", cfg.pop3.listen, self._plain_server(self.pop3.handle)),
                ("pop3s", cfg.pop3.tls_listen, self._tls_server(self.pop3.handle)),
                ("imap", cfg.imap.listen, self._plain_server(self.imap.handle)),
                ("imaps", cfg.imap.tls_listen, self._tls_server(self.imap.handle_tls))):
            for ep in endpoints:
                await self._bind(proto, ep, start)

    async def _bind_metrics(self) -> None:
        """The Prometheus scrape endpoint, when configured."""
        cfg = self.config
        if not cfg.metrics.listen:
            return
        scrape_lag = self.lag.window()          # each scrape: the worst lag since the previous one
        self.metrics = Metrics(self.stats, queue_size=lambda: len(self.queue),
                               lag=lambda: scrape_lag.take().max)
        self.bus.add_listener(self.metrics.observe)
        scrape = MetricsServer(self.metrics)
        for ep in cfg.metrics.listen:
            await self._bind("metrics", ep, scrape.serve)

    async def _start_control(self) -> None:
        """The control socket (CLI commands, attached consoles); the server runs on without it."""
        hub = AttachHub(self.bus, lambda parts: snapshot.take(self, parts), lag=self.lag)
        self.control = ControlServer(self.admin, socket_path(self.config.server.data_dir), hub)
        try:
            await self.control.start()
        except OSError as exc:
            self._notice(f"control socket unavailable ({exc}); CLI commands will not reach this server")

    def _start_background(self) -> None:
        """The batched store writer and the delivery loop."""
        self._tasks.append(asyncio.create_task(self.store.run_flusher(self.config.logs.flush_interval),
                                               name="store-flusher"))
        self._tasks.append(asyncio.create_task(self.delivery.run(), name="delivery"))

    def _scanned(self, found: int, seconds: float) -> None:
        if found:
            self._notice(f"{found} queued message(s) picked up from the spool ({seconds:.1f}s)", "info")

    def status_reporter(self) -> StatusReporter:
        """A reader of the status (counts, queue, loop lag) since its previous report."""
        return StatusReporter(self.stats, self.queue, self.lag)

    async def _dkim_signer(self) -> DkimSigner | None:
        """The signer of the intake, each local domain's key made now (in a thread: RSA takes a while)."""
        cfg = self.config
        if not cfg.dkim.sign:
            return None
        signer = DkimSigner(DkimKeys(cfg.server.data_dir, cfg.dkim.selector), cfg.is_local_domain)
        try:
            await asyncio.get_running_loop().run_in_executor(None, signer.prepare, cfg.server.local_domains)
        except (DkimKeyError, OSError) as exc:
            self._notice(f"DKIM key: {exc}; relayed mail of that domain is refused (451) until it is fixed",
                         "error")
        return signer

    @staticmethod
    def _plain_server(handler):
        """A listener factory for a plain TCP protocol (POP3 110, IMAP 143)."""
        def start(host: str, port: int):
            return asyncio.start_server(handler, host, port, reuse_address=True)
        return start

    def _tls_server(self, handler):
        """A listener factory for implicit TLS (RFC 8314: IMAP 993, POP3 995)."""
        def start(host: str, port: int):
            return asyncio.start_server(handler, host, port, ssl=self.tls_context, reuse_address=True,
                                        ssl_handshake_timeout=30.0)
        return start

    async def _bind(self, proto: str, ep, start) -> None:
        listener = Listener(proto, str(ep))
        try:
            server = await start(ep.host, ep.port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno == 13 and ep.port < 1024:
                reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            listener.error = reason
            self.bus.publish(ListenerFailed(proto=proto, address=str(ep), error=reason))
        else:
            listener.server = server
            host, port = server.sockets[0].getsockname()[:2]
            listener.bound = hostport(host, port)
            self.bus.publish(ListenerStarted(proto=proto, address=listener.bound))
        self.listeners.append(listener)

    def status(self) -> dict:
        """What ``mailtui status`` prints: who is serving what, the totals so far, and the
        loop lag since the previous ``status`` (or since start)."""
        cfg = self.config
        since, self._status_since = self._status_since, time.monotonic()
        return {"version": __version__, "pid": os.getpid(), "hostname": cfg.server.hostname,
                "config": cfg.source, "data_dir": str(cfg.server.data_dir),
                "listeners": [{"proto": li.proto, "address": li.address, "bound": li.bound, "ok": li.ok,
                               "error": li.error} for li in self.listeners],
                "queue": len(self.queue), "scanning": self.queue.scanning, "totals": self.stats.snapshot(),
                "lag": self._status_lag.take().as_dict() | {"period_s": round(time.monotonic() - since, 3)}}

    def port(self, proto: str) -> int:
        """The first bound port of ``proto`` (tests bind port 0)."""
        return next(li.port for li in self.listeners if li.proto == proto and li.ok)

    async def submit(self, sender: str, recipients: list[str], data: bytes) -> str:
        """Inject a server-made message (a DSN): local mailboxes or the queue."""
        envelope = Envelope(sender=sender)
        for rcpt in recipients:
            try:
                addr = parse_address(rcpt)
            except AddressError as exc:
                raise ValueError(f"cannot deliver to {rcpt!r}: {exc}") from None
            key = self.policy.local_key(addr)
            if key == "":
                raise ValueError(f"no local mailbox {rcpt}")
            if key:
                envelope.local.setdefault(key, []).append(rcpt)
            else:
                envelope.remote.append(rcpt)
        return await self.intake.accept(envelope, data)

    async def _end_sessions(self) -> None:
        """End every open session of every protocol, all at once, each within a fraction of a second."""
        smtp = [s for s in (getattr(self, "smtp", None), getattr(self, "submission", None)) if s is not None]
        ending = [end_smtp_sessions(smtp)]
        if hasattr(self, "pop3"):
            ending.append(self.pop3.close_all())
        if hasattr(self, "imap"):
            ending.append(self.imap.close_all())
        await asyncio.gather(*ending)

    async def stop(self) -> None:
        """Stop listening, finish or hand back in-flight work, write state, unlock."""
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()
        delivery = getattr(self, "delivery", None)
        if delivery is not None and self.started:
            await delivery.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        await self._end_sessions()
        for listener in self.listeners:
            if listener.server is not None:
                try:
                    await asyncio.wait_for(listener.server.wait_closed(), 2)
                except asyncio.TimeoutError:
                    pass
                listener.server = None
        if hasattr(self, "control"):
            await self.control.stop()
        if hasattr(self, "store"):
            self.store.close()
        self.lag.stop()
        self._lock.release()
        self.started = False
