"""The servers under test: mailtui (``serve`` or the console) and a throwaway Postfix.

Each target lives in its own fresh work directory (a fresh data_dir / queue
per round), listens on 127.0.0.1 and free ports only, and exposes what the
loads need: its SMTP port, the ``new/`` folder of the test mailbox, whether
its queue is empty, and CPU / memory figures read from /proc.
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from common import (REPO, count_tree, cpu_seconds, thread_cpu_seconds, free_port, log, proc_status_kib,
                    stop_process, tree_cpu_seconds, tree_rss_kib, wait_port, which)

# Where the mailtui package under test is imported from (run.py may point it at a snapshot).
CODE = REPO

MAILBOX = "rcpt@localhost"
PASSWORD = "bench-password-1"
SINK_DOMAIN = "sink.test"


def mailtui_env(loop: str = "auto", code: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code or CODE), COLUMNS="200")
    env.pop("MAILTUI_CONFIG", None)
    if loop == "asyncio":
        env["MAILTUI_LOOP"] = "asyncio"
    return env


def mailtui_cli(config: Path, *args: str, stdin: str | None = None, code: Path | None = None) -> None:
    res = subprocess.run([sys.executable, "-m", "mailtui", "--config", str(config), *args],
                         input=stdin, capture_output=True, text=True, cwd=code or CODE,
                         env=mailtui_env(code=code), timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"mailtui {' '.join(args)} failed: {res.stderr.strip()}")


def console_available() -> bool:
    return any((CODE / "mailtui" / sub / "app.py").is_file() for sub in ("frontends/console", "console"))


def make_registry_template(folder: Path, code: Path | None = None) -> Path:
    """Register the client network and mailbox once, with the CLI; returns the state.json to copy."""
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "template.toml"
    cfg.write_text(f'[server]\nhostname = "mail.bench.test"\ndata_dir = "{data}"\n'
                   f'local_domains = ["localhost"]\n')
    mailtui_cli(cfg, "client", "add", "bench", "--network", "127.0.0.0/8", code=code)
    mailtui_cli(cfg, "mailbox", "add", MAILBOX, "--password-stdin", stdin=PASSWORD + "\n", code=code)
    return data / "state.json"


def tree_from_git(rev: str, into: Path) -> Path:
    """``mailtui/`` as of git revision ``rev``, extracted into ``into`` (the repository is not touched)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "mailtui"],
                             capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise SystemExit(f"--tree {rev}: not a directory, nor a git revision of {REPO}: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=120)
    return into


class MailtuiTarget:
    """``python -m mailtui --config C serve`` (or the console under a pty) on a fresh data_dir."""

    name = "mailtui"

    def __init__(self, workdir: Path, registry_state: Path, *, dns_port: int | None = None,
                 sink_port: int | None = None, console: bool = False, output: str = "devnull",
                 loop: str = "auto", code: Path | None = None, delivery: str = ""):
        self.code = code or CODE
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config = workdir / "mailtui.toml"
        self.console = console
        self.output = output
        self.loop = loop
        self.smtp_port = free_port()
        self.pop3_port = free_port()
        self.imap_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._pty_master: int | None = None
        self._out = None
        self.data_dir.mkdir(parents=True, mode=0o700)
        shutil.copy2(registry_state, self.data_dir / "state.json")
        text = (f'[server]\nhostname = "mail.bench.test"\ndata_dir = "{self.data_dir}"\n'
                f'local_domains = ["localhost"]\n'
                f'[smtp]\nlisten = ["127.0.0.1:{self.smtp_port}"]\n'
                f'[pop3]\nlisten = ["127.0.0.1:{self.pop3_port}"]\n')
        if (self.code / "mailtui" / "access" / "imap").is_dir():   # (older trees have no [imap])
            text += f'[imap]\nlisten = ["127.0.0.1:{self.imap_port}"]\nmax_connections_per_user = 100\n'
        if dns_port:
            text += f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\ntimeout = 2.0\n'
        if sink_port:
            text += f'[delivery]\nremote_port = {sink_port}\n{delivery}'
        self.config.write_text(text)

    # -- paths the loads look at --

    @property
    def maildir(self) -> Path:
        return self.data_dir / "mail" / "localhost" / "rcpt"

    @property
    def maildir_new(self) -> Path:
        return self.maildir / "new"

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    def queued(self) -> int:
        try:
            with os.scandir(self.spool) as it:
                return sum(1 for e in it if e.name.endswith(".json"))
        except FileNotFoundError:
            return 0

    # -- life cycle --

    def launch(self) -> None:
        """Start the server process and return at once."""
        cmd = [sys.executable, "-m", "mailtui", "--config", str(self.config)]
        env = mailtui_env(self.loop, self.code)
        if self.console:
            self._start_console(cmd, env)
        else:
            cmd.append("serve")
            if self.output == "file":
                self._out = open(self.workdir / "serve.out", "wb")
                stdout = self._out
            else:
                stdout = subprocess.DEVNULL
            self._err = open(self.workdir / "serve.err", "wb")
            self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=self._err, stdin=subprocess.DEVNULL,
                                         cwd=self.code, env=env, start_new_session=True)

    def start(self, timeout: float = 120.0) -> None:
        self.launch()
        wait_port("127.0.0.1", self.smtp_port, timeout, self.proc)
        wait_port("127.0.0.1", self.pop3_port, timeout, self.proc)

    def control(self, op: str, timeout: float = 30.0) -> dict | None:
        """One verb on the control socket; None if this mailtui does not know it."""
        import json
        import socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.data_dir / "control.sock"))
            except OSError:
                return None
            sock.sendall(json.dumps({"op": op, "args": {}}).encode() + b"\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        reply = json.loads(raw or b"{}")
        return reply.get("result") if reply.get("ok") else None

    def _start_console(self, cmd: list[str], env: dict) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        env = dict(env, TERM="xterm-256color", COLORTERM="truecolor")

        def controlling_tty() -> None:  # runs in the child after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=self.code, env=env,
                                     start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self._pty_master = master
        self._screen = bytearray()

        def drain() -> None:  # a terminal that keeps reading, like a real one
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self._screen += chunk
                del self._screen[:-200_000]

        threading.Thread(target=drain, daemon=True).start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def loop_cpu(self) -> float:
        """CPU of the main thread, where the event loop runs."""
        return thread_cpu_seconds(self.pid, self.pid)

    def peak_rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmHWM")

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def error_output(self) -> str:
        try:
            return (self.workdir / "serve.err").read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return bytes(getattr(self, "_screen", b""))[-2000:].decode(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=30, group=True)
        if self._pty_master is not None:
            try:
                os.close(self._pty_master)
            except OSError:
                pass
            self._pty_master = None
        for fh in (self._out, getattr(self, "_err", None)):
            if fh is not None:
                fh.close()


class PostfixTarget:
    """A throwaway Postfix instance: own config, queue, data and mail directories in ``workdir``.

    smtpd on 127.0.0.1:free port, a virtual Maildir mailbox for rcpt@localhost,
    mynetworks 127.0.0.0/8, no relay domains, and mail for sink.test sent to
    the smtp-sink through transport_maps (Postfix asks the system resolver for
    MX records, which cannot be pointed at a loopback port). fsync as default.
    """

    name = "Postfix"

    def __init__(self, workdir: Path, *, sink_port: int | None = None):
        self.workdir = workdir
        self.etc = workdir / "etc"
        self.queue_dir = workdir / "queue"
        self.data_dir = workdir / "data"
        self.mail = workdir / "mail"
        self.smtp_port = free_port()
        self._master_pid = 0
        for d in (self.etc, self.data_dir, self.mail, self.queue_dir):
            d.mkdir(parents=True)
        # Postfix daemons (user postfix) and virtual(8) (uid 65534) must reach their folders.
        for folder in (workdir, *workdir.parents):
            if folder == Path("/"):
                break
            if folder.stat().st_mode & 0o005 != 0o005:
                folder.chmod(folder.stat().st_mode | 0o055)
        shutil.chown(self.mail, 65534, 65534)
        shutil.chown(self.data_dir, "postfix", "postfix")
        (self.etc / "main.cf").write_text("")
        master = Path("/usr/share/postfix/master.cf.dist")
        if not master.exists():
            master = Path("/etc/postfix/master.cf.proto")
        lines = []
        for line in master.read_text().splitlines():
            if line.startswith("smtp ") and " inet " in f" {line} ":
                line = f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd"
            lines.append(line)
        (self.etc / "master.cf").write_text("\n".join(lines) + "\n")
        (self.etc / "vmailbox").write_text(f"{MAILBOX} localhost/rcpt/\n")
        transport = f"{SINK_DOMAIN} smtp:[127.0.0.2]:{sink_port}\n" if sink_port else ""
        (self.etc / "transport").write_text(transport)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.bench.test",
            "mydomain": "bench.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "virtual_mailbox_domains": "localhost",
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": f"texthash:{self.etc / 'vmailbox'}",
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "transport_maps": f"texthash:{self.etc / 'transport'}",
            "maillog_file": str(workdir / "maillog"),
            "maillog_file_prefixes": f"{workdir}, /var, /dev/stdout",
            "biff": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
        }
        self._postconf("-e", *(f"{k}={v}" for k, v in settings.items()))
        self._postconf("-F", "*/*/chroot = n")

    def _postconf(self, *args: str) -> None:
        subprocess.run([which("postconf") or "postconf", "-c", str(self.etc), *args], check=True,
                       capture_output=True)

    def _postfix(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run([which("postfix") or "postfix", "-c", str(self.etc), action],
                              capture_output=True, text=True, timeout=60)

    @property
    def maildir_new(self) -> Path:
        return self.mail / "localhost" / "rcpt" / "new"

    def queued(self) -> int:
        return sum(count_tree(self.queue_dir / q) for q in ("maildrop", "incoming", "active", "deferred", "hold"))

    def start(self, timeout: float = 60.0) -> None:
        res = self._postfix("start")
        if res.returncode != 0:
            raise RuntimeError(f"postfix start failed: {res.stderr.strip() or res.stdout.strip()}")
        wait_port("127.0.0.1", self.smtp_port, timeout)
        pidfile = self.queue_dir / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._master_pid = int(pidfile.read_text().split()[0])
                break
            except (FileNotFoundError, ValueError, IndexError):
                time.sleep(0.05)
        if not self._master_pid:
            raise RuntimeError("postfix master.pid not found")

    @property
    def pid(self) -> int:
        return self._master_pid

    def cpu(self) -> float:
        return tree_cpu_seconds(self._master_pid)

    def peak_rss_kib(self) -> int:
        return 0  # many short-lived processes: see rss_kib for their sum

    def rss_kib(self) -> int:
        return tree_rss_kib(self._master_pid)

    def alive(self) -> bool:
        return self._master_pid > 0 and Path(f"/proc/{self._master_pid}").exists()

    def error_output(self) -> str:
        try:
            return (self.workdir / "maillog").read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if not self._master_pid:
            return
        self._postfix("stop")
        deadline = time.monotonic() + 20
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            log("postfix did not stop in time; aborting it")
            self._postfix("abort")
            try:
                os.kill(self._master_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._master_pid = 0
