"""Run a throwaway Dovecot on loopback as an oracle for the IMAP message layer.

Dovecot is the reference we compare ENVELOPE, BODYSTRUCTURE and section bytes
against. It runs from a temporary directory with its own config, a
passwd-file user and a Maildir holding the given messages (stored as mailtui
stores them: files in ``cur/`` with CRLF line ends), listens on 127.0.0.1
only, and is stopped within a few seconds whatever happens.

Dovecot refuses to run its login process or mail processes as root, so when
the tests run as root we use the package's own unprivileged users
(``dovecot``/``dovenull``) and hand the mail directory to ``dovecot``.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
USER, PASSWORD = "oracle", "oracle-pass"


@dataclass(frozen=True)
class Running:
    host: str
    port: int
    user: str
    password: str

    def connect(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        client.login(self.user, self.password)
        return client


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    return found


def _accounts() -> tuple[str, str, int, int]:
    """(internal user, login user, mail uid, mail gid) Dovecot will accept."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me, os.geteuid(), os.getegid()
    internal = pwd.getpwnam("dovecot")        # KeyError: the package did not create its users
    pwd.getpwnam("dovenull")
    return "dovecot", "dovenull", internal.pw_uid, internal.pw_gid


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(root: Path, port: int, internal: str, login: str, uid: int, gid: int) -> str:
    group = grp.getgrgid(gid).gr_name
    return f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = 0
first_valid_gid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home
}}
mail_location = maildir:{root}/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def _write_maildir(root: Path, messages: list[bytes], uid: int, gid: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / "Maildir" / sub).mkdir(parents=True)
    (root / "home").mkdir()
    for number, data in enumerate(messages, 1):
        # Dovecot may pick up files in directory order; the tests identify
        # messages by their bytes, never by UID.
        (root / "Maildir" / "cur" / f"{1000000000 + number}.M{number}P1.oracle:2,").write_bytes(data)
    for path in [root / "Maildir", root / "home", *root.joinpath("Maildir").rglob("*")]:
        os.chown(path, uid, gid)


def _wait_for_greeting(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.recv(200).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.1)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    raise RuntimeError(f"Dovecot did not start on port {port}:\n{text[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def running_dovecot(messages: list[bytes]) -> Iterator[Running]:
    """Start Dovecot serving ``messages`` in INBOX; stop it and clean up on exit."""
    binary = dovecot_binary()
    if binary is None:
        raise FileNotFoundError("dovecot is not installed")
    internal, login, uid, gid = _accounts()
    root = Path(tempfile.mkdtemp(prefix="dvo-"))     # short: Dovecot's unix sockets live under it
    process = None
    try:
        os.chmod(root, 0o755)
        _write_maildir(root, messages, uid, gid)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        port = _free_port()
        (root / "dovecot.conf").write_text(_config(root, port, internal, login, uid, gid))
        process = subprocess.Popen([binary, "-F", "-c", str(root / "dovecot.conf")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for_greeting(port, process, root / "dovecot.log")
        yield Running("127.0.0.1", port, USER, PASSWORD)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)
