"""Faults: kill -9, a full or unwritable disk, damaged state files, DNS down.

The promises checked here: a message that got its 250 is delivered (locally
exactly once) or still queued after any crash; storage trouble during DATA
is a 4xx, never a 250, and leaves no partial copy behind; damaged TinyDB
files are reported and recovered from at start, not a crash; a DNS server
that does not answer defers mail, it never bounces it.

Real faults, no mocks: SIGKILL of a ``mailtui serve`` process, a small tmpfs
that fills up, a file size limit (RLIMIT_FSIZE), a Maildir whose ``tmp/`` is
not a directory, a read-only bind mount. Mounting needs root; those tests
skip where it is not allowed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import resource
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from dnsworld import MX_HOST_2, free_port
from harness import RunningServer, mailtui, make_config
from test_crash import wait_port
from wire import Dialog, RawMX, unstuff

from mailtui.events import Bounced, Deferred
from mailtui.store.index import read_index, shard_name, shard_of

pytestmark = pytest.mark.timeout(120)

MSG = b"Subject: hi\r\n\r\nhello\r\n"


# -- a `mailtui serve` process -------------------------------------------------------------

class Serve:
    """``python -m mailtui serve`` on a config of its own; output kept in a file."""

    def __init__(self, tmp_path: Path, extra: str = ""):
        self.data = tmp_path / "data"
        self.port = free_port()
        self.output = tmp_path / "serve.out"
        self.config = tmp_path / "mailtui.toml"
        self.config.write_text(
            f'[server]\nhostname = "mail.test"\ndata_dir = "{self.data}"\nlocal_domains = ["localhost"]\n'
            f'[smtp]\nlisten = ["127.0.0.1:{self.port}"]\n[pop3]\nlisten = ["127.0.0.1:0"]\n'
            f'[imap]\nlisten = ["127.0.0.1:0"]\n'
            f'[logs]\nflush_interval = 0.1\n{extra}')
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        res = mailtui(*args, config=self.config, stdin=stdin)
        assert res.returncode == 0, res.stderr
        return res

    def setup(self) -> "Serve":
        self.cli("client", "add", "loop", "--network", "127.0.0.0/8")
        self.cli("mailbox", "add", "bob@localhost", "--password-stdin", stdin="fault test password\n")
        return self

    def start(self, preexec=None) -> "Serve":
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("MAILTUI_CONFIG", None)
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailtui", "--config", str(self.config), "serve"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, preexec_fn=preexec)
        wait_port(self.port, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise AssertionError("mailtui serve did not stop on SIGTERM")
        return proc.returncode

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def mailbox(self) -> list[bytes]:
        box = self.data / "mail" / "localhost" / "bob"
        return [p.read_bytes() for sub in ("new", "cur") for p in sorted((box / sub).glob("*"))]

    def spool(self) -> list[Path]:
        return sorted((self.data / "spool").glob("*.msg"))          # one file a message


@pytest.fixture
def serve(tmp_path):
    made: list[Serve] = []

    def make(extra: str = "") -> Serve:
        s = Serve(tmp_path, extra)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def tag_of(data: bytes) -> str:
    return message_from_bytes(data)["Message-ID"].strip("<>").split("@")[0]


# -- kill -9 -------------------------------------------------------------------------------

def sender(port: int, acked: list, stop: threading.Event, worker: int) -> None:
    """Send until stopped, through every crash; ``acked`` gets (tag, rcpts) after each 250."""
    n = 0
    routes = (["bob@localhost"], ["far@mx.test"], ["bob@localhost", "far@mx.test"])
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as c:
                c.ehlo("crash.test")
                while not stop.is_set():
                    n += 1
                    tag, rcpts = f"w{worker}-{n}", routes[n % 3]
                    c.sendmail("a@crash.test", rcpts, f"Message-ID: <{tag}@crash.test>\r\n\r\n{tag}\r\n".encode())
                    acked.append((tag, rcpts))
        except (smtplib.SMTPException, OSError):
            time.sleep(0.05)


def test_kill9_at_random_points_loses_nothing_and_delivers_locally_once(serve, dns_world):
    mx_port = free_port(("127.0.0.1", "127.0.0.2", MX_HOST_2))
    s = serve(f'[dns]\nnameservers = ["{dns_world.endpoint}"]\ntimeout = 1.0\n'
              f'[delivery]\nremote_port = {mx_port}\nretry_intervals = [0.3]\nmax_attempts = 1000\n'
              f'connect_timeout = 1.0\ncommand_timeout = 3.0\n').setup()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acked: list = []
    stop = threading.Event()
    kills = 0
    with RawMX(MX_HOST_2, mx_port) as mx:
        workers = [threading.Thread(target=sender, args=(s.port, acked, stop, w)) for w in range(4)]
        try:
            s.start()
            for w in workers:
                w.start()
            for _ in range(3):               # intake, local delivery, spool writes, remote
                time.sleep(rng.uniform(0.2, 1.2))  # delivery and queue updates all run now
                s.kill()
                kills += 1
                time.sleep(rng.uniform(0, 0.2))
                s.start()
            time.sleep(0.5)
            stop.set()
            for w in workers:
                w.join(15)
            deadline = time.monotonic() + 30
            while s.spool() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not s.spool(), f"queue did not drain (seed {seed})"
            assert s.stop() == 0
        finally:
            stop.set()
            s.kill()
        remote = [tag_of(unstuff(tx.raw[2:-3])) for tx in mx.transactions]

    assert len(acked) >= 30, f"too few messages before the kills to prove anything (seed {seed})"
    local = [tag_of(data) for data in s.mailbox()]
    assert len(local) == len(set(local)), f"a message was delivered twice locally (seed {seed})"
    for tag, rcpts in acked:
        if "bob@localhost" in rcpts:
            assert tag in local, f"acknowledged {tag} lost from the mailbox (seed {seed})"
        if "far@mx.test" in rcpts:
            assert tag in remote, f"acknowledged {tag} never reached the remote MX (seed {seed})"
    # Remote delivery is at least once: a kill between the MX's 250 and the spool
    # update sends that message again, as with any MTA. Only in-flight messages can.
    duplicates = len(remote) - len(set(remote))
    assert duplicates <= kills * 20, f"{duplicates} remote duplicates after {kills} kills (seed {seed})"


# -- a full disk ---------------------------------------------------------------------------

def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def mounts():
    """Mount helper: ``mounts(args..., target)``; skips where mounting is not allowed."""
    done: list[Path] = []

    def do(*args: str) -> Path:
        target = Path(args[-1])
        if os.geteuid() != 0 or shutil.which("mount") is None or not mount(*args):
            pytest.skip("mounting is not permitted here")
        done.append(target)
        return target

    yield do
    for target in reversed(done):
        umount(target)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of ``directory`` until only about ``leave`` octets are free."""
    filler = directory / ".filler"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * max(0, free - leave))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def data_reply(port: int, rcpts: list[str], body: bytes = MSG) -> bytes:
    with Dialog(port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@remote.test>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts)
               + b"DATA\r\n")
        replies = [c.reply() for _ in range(len(rcpts) + 2)]
        assert all(r[:3] in (b"250", b"354") for r in replies), replies
        return c.cmd(body + b".")


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and p.name != ".filler")


def test_disk_full_during_data_is_452_and_stores_nothing(tmp_path, mounts):
    data = tmp_path / "data"
    for sub in ("mail", "spool"):
        (data / sub).mkdir(parents=True)
        mounts("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data / sub))
    srv = RunningServer(make_config(data)).start()
    try:
        srv.add_client("loopback", "127.0.0.0/8")
        srv.add_mailbox("bob@localhost")
        assert data_reply(srv.smtp_port, ["bob@localhost"]).startswith(b"250")  # the Maildir exists
        before_mail, before_spool = files_in(data / "mail"), files_in(data / "spool")
        big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 2000            # 160 kB
        fillers = [fill(data / "mail", 64 * 1024), fill(data / "spool", 64 * 1024)]
        for rcpts in (["bob@localhost"], ["far@remote.test"], ["bob@localhost", "far@remote.test"]):
            assert data_reply(srv.smtp_port, rcpts, big).startswith(b"452 4.3.1"), rcpts
        assert files_in(data / "mail") == before_mail       # no copy, no leftover in tmp/
        assert files_in(data / "spool") == before_spool
        assert len(srv.core.queue) == 0
        for filler in fillers:
            filler.unlink()
        assert data_reply(srv.smtp_port, ["bob@localhost", "far@remote.test"], big).startswith(b"250")
        assert len(srv.maildir_files("bob@localhost")) == 2 and len(srv.core.queue) == 1
    finally:
        srv.stop()


def test_file_size_limit_during_data_is_452_and_the_server_lives(serve):
    """RLIMIT_FSIZE: writes past it fail with EFBIG (Python ignores SIGXFSZ, so nobody dies)."""
    s = serve('[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n[delivery]\nretry_intervals = [3600]\n').setup()
    limit = 256 * 1024

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    s.start(preexec=limit_file_size)
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 5000              # 400 kB
    for rcpts in (["bob@localhost"], ["far@remote.test"], ["bob@localhost", "far@remote.test"]):
        assert data_reply(s.port, rcpts, big).startswith(b"452 4.3.1"), rcpts
        assert s.proc.poll() is None, "the server died of SIGXFSZ"
    assert s.mailbox() == [] and s.spool() == []
    assert not [p for p in (s.data / "spool").iterdir() if p.is_file()]   # nor a temporary file
    assert not list((s.data / "mail" / "localhost" / "bob" / "tmp").glob("*"))
    assert data_reply(s.port, ["bob@localhost", "far@remote.test"]).startswith(b"250")
    assert len(s.mailbox()) == 1 and len(s.spool()) == 1
    assert s.stop() == 0


# -- an unwritable data directory ------------------------------------------------------------

@pytest.fixture
def server(tmp_path):
    srv = RunningServer(make_config(tmp_path / "data", dns={"nameservers": ["127.0.0.1:1"], "timeout": 0.2},
                                    delivery={"retry_intervals": [3600]})).start()
    srv.add_client("loopback", "127.0.0.0/8")
    srv.add_mailbox("bob@localhost")
    srv.add_mailbox("carol@localhost")
    try:
        yield srv
    finally:
        srv.stop()


def test_maildir_tmp_not_a_directory_is_4xx(server):
    assert data_reply(server.smtp_port, ["bob@localhost"]).startswith(b"250")
    box = server.data_dir / "mail" / "localhost"
    for name in ("bob", "carol"):      # bob's Maildir is known to the server, carol's is new
        tmp = box / name / "tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.write_bytes(b"not a directory")
    for rcpts in (["bob@localhost"], ["carol@localhost"], ["far@remote.test", "bob@localhost"]):
        reply = data_reply(server.smtp_port, rcpts)
        assert reply.startswith(b"451 4.3.0"), (rcpts, reply)
    assert len(server.maildir_files("bob@localhost")) == 1 and server.maildir_files("carol@localhost") == []
    assert len(server.core.queue) == 0 and not list((server.data_dir / "spool").glob("*"))  # rolled back
    for name in ("bob", "carol"):
        (box / name / "tmp").unlink()
        (box / name / "tmp").mkdir()
    assert data_reply(server.smtp_port, ["bob@localhost", "carol@localhost"]).startswith(b"250")


def test_spool_not_a_directory_rolls_back_the_local_copies(server):
    spool = server.data_dir / "spool"
    spool.rename(spool.with_name("spool.away"))
    spool.write_bytes(b"not a directory")
    try:
        reply = data_reply(server.smtp_port, ["bob@localhost", "far@remote.test", "carol@localhost"])
        assert reply.startswith(b"451 4.3.0"), reply
        # The client will send it again: a copy kept now would be delivered twice.
        assert server.maildir_files("bob@localhost") == [] and server.maildir_files("carol@localhost") == []
    finally:
        spool.unlink()
        spool.with_name("spool.away").rename(spool)
    assert data_reply(server.smtp_port, ["bob@localhost", "far@remote.test"]).startswith(b"250")
    assert len(server.maildir_files("bob@localhost")) == 1 and len(server.core.queue) == 1


def test_read_only_data_directory_is_4xx(server, mounts):
    mail = server.data_dir / "mail"
    mounts("--bind", str(mail), str(mail))
    mounts("-o", "remount,ro,bind", str(mail))
    reply = data_reply(server.smtp_port, ["bob@localhost"])
    assert reply[:1] == b"4" and reply.startswith(b"451 4.3.0"), reply
    assert server.maildir_files("bob@localhost") == []


# -- damaged state files --------------------------------------------------------------------

def test_damaged_state_files_at_start_are_reported_and_recovered(serve):
    s = serve('[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n'
              '[delivery]\nretry_intervals = [3600]\nmax_attempts = 100\n').setup()
    s.cli("client", "add", "spare", "--network", "192.0.2.0/24")   # the backup now has bob too
    s.start()
    assert data_reply(s.port, ["far@remote.test"]).startswith(b"250")
    assert data_reply(s.port, ["far2@remote.test"]).startswith(b"250")
    assert s.stop() == 0
    [queued, other] = s.spool()
    data = s.data
    state = (data / "state.json").read_bytes()
    (data / "state.json").write_bytes(state[: len(state) // 2])      # truncated mid-write
    (data / "queue.json").write_bytes(b"\x00garbage{{{")                 # the index of older versions
    shard = data / "queue-index" / shard_name(shard_of(queued.stem))
    shard.write_bytes(b"\x00garbage{{{")                               # a damaged index shard
    (data / "logs.json").write_bytes(b'{"connections": {"1": {"at"')
    other.write_bytes(b"{not json")                                  # one envelope is damaged

    s.start()
    assert data_reply(s.port, ["bob@localhost"]).startswith(b"250")   # clients and mailboxes are back
    rows = json.loads(s.cli("queue", "list", "--json").stdout)
    assert [row["id"] for row in rows] == [queued.stem]                # rebuilt from the spool
    assert s.stop() == 0
    out = s.text()
    assert "state.json is unreadable" in out and "recovered from state.json.bak" in out
    assert "logs.json is unreadable" in out
    assert not (data / "queue.json").exists()                           # the index is rebuilt, sharded
    assert [row["id"] for row in read_index(data / "queue-index")] == [queued.stem]
    assert f"{other.name} unreadable" in out and "Traceback" not in out
    assert (data / "state.json.damaged").exists() and (data / "spool" / "corrupt" / other.name).exists()


def test_damaged_state_without_a_backup_starts_empty_and_says_so(serve):
    s = serve().setup()
    for name in ("state.json", "state.json.bak"):
        (s.data / name).write_bytes(b"\xff\xfe not json")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.port, timeout=5) as c:   # nobody is registered: refused, safely
        c.ehlo("client.test")
        assert c.mail("a@remote.test")[0] == 550
    assert s.stop() == 0
    out = s.text()
    assert "state.json is unreadable" in out and "starting it empty" in out and "Traceback" not in out
    assert s.cli("mailbox", "list").stdout.strip().lower() in ("", "no mailboxes")


# -- DNS down --------------------------------------------------------------------------------

@contextlib.contextmanager
def blackhole_dns():
    """A UDP port that takes DNS queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_dns_down_defers_and_never_bounces(tmp_path, kind):
    with blackhole_dns() as silent:
        nameserver = silent if kind == "silent" else f"127.0.0.1:{free_port(udp=True)}"
        srv = RunningServer(make_config(tmp_path / "data", dns={"nameservers": [nameserver], "timeout": 0.5},
                                        delivery={"retry_intervals": [0.2], "max_attempts": 50})).start()
        try:
            srv.add_client("loopback", "127.0.0.0/8")
            srv.add_mailbox("bob@localhost")
            with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
                c.sendmail("bob@localhost", ["far@remote.test"], MSG)   # a bounce would come back to bob
            srv.wait_for(lambda: len(srv.events_of(Deferred)) >= 2, timeout=10, what="two deferrals")
            [item] = srv.call(srv.core.queue.items)
            assert item.recipients[0].state == "deferred" and item.recipients[0].status == "4.4.3"
            assert re.search(r"DNS|nameserver", item.recipients[0].last_error)
            assert not srv.events_of(Bounced)
            assert srv.maildir_files("bob@localhost") == []
        finally:
            srv.stop()


def test_a_client_leaving_while_its_message_is_stored_strands_nothing(server):
    """The client hangs up right after the final dot, while the spool is being written.

    It got no 250 and will send again; what matters here is that whatever was
    written is a complete queue entry that the running server knows about, not
    one that waits unqueued in the spool until the next restart.
    """
    body = b"Subject: quick exit\r\n\r\n" + (b"y" * 70 + b"\r\n") * 1500
    for i in range(30):
        with Dialog(server.smtp_port) as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<far@remote.test>\r\nDATA\r\n")
            [c.reply() for _ in range(3)]
            c.send(body + b".\r\n")
            time.sleep(0.0002 * i)
            c.sock.shutdown(socket.SHUT_WR)
    time.sleep(0.5)
    spooled = {p.stem for p in (server.data_dir / "spool").glob("*.msg")}
    queued = {item.id for item in server.call(server.core.queue.items)}
    assert spooled == queued
