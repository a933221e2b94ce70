"""Durability: a server killed with SIGKILL mid-stream loses no message it acknowledged."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email import message_from_bytes
from pathlib import Path

from harness import mailtui, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, "mailtui serve exited during start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server did not listen on {port}")


def start_serve(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(cfg), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def sender(port: int, acked: list, stop: threading.Event, worker: int) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as c:
                c.ehlo("crash.test")
                while not stop.is_set():
                    n += 1
                    tag = f"w{worker}-{n}"
                    rcpt = "bob@localhost" if n % 3 else "far@unreachable.test"
                    msg = f"Message-ID: <{tag}@crash.test>\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n"
                    c.sendmail("a@example.org", [rcpt], msg.encode())
                    acked.append((tag, rcpt))  # only reached after the 250
        except (smtplib.SMTPException, OSError):
            if stop.is_set():
                return
            time.sleep(0.05)


def message_ids(paths) -> list[str]:
    return [message_from_bytes(p.read_bytes())["Message-ID"].strip("<>").split("@")[0] for p in paths]


def test_sigkill_during_a_stream_loses_nothing_acknowledged(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", data).read_text().replace(
        '[smtp]\nlisten = ["127.0.0.1:0"]', f'[smtp]\nlisten = ["127.0.0.1:{port}"]')
    cfg += '[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n[delivery]\nretry_intervals = [3600]\n'
    cfg_path = tmp_path / "crash.toml"
    cfg_path.write_text(cfg)
    assert mailtui("client", "add", "loop", "--network", "127.0.0.0/8", config=cfg_path).returncode == 0
    assert mailtui("mailbox", "add", "bob@localhost", "--password-stdin", config=cfg_path,
                   stdin="crash test password\n").returncode == 0

    proc = start_serve(cfg_path)
    try:
        wait_port(port, proc)
        acked: list = []
        stop = threading.Event()
        workers = [threading.Thread(target=sender, args=(port, acked, stop, w)) for w in range(4)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 20
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert len(acked) >= 50, "too few messages were sent before the kill to prove anything"

    box = data / "mail" / "localhost" / "bob"
    local_ids = message_ids(p for sub in ("new", "cur") for p in (box / sub).glob("*"))
    assert len(local_ids) == len(set(local_ids)), "a message was delivered twice"
    # A body without its envelope was cut off before the 250 (and is removed at
    # the next start): only complete entries count as queued.
    spooled = message_ids(p for p in (data / "spool").glob("*.eml") if p.with_suffix(".json").exists())
    for tag, rcpt in acked:
        if rcpt == "bob@localhost":
            assert tag in local_ids, f"acknowledged {tag} lost from the mailbox"
        else:
            assert tag in spooled, f"acknowledged {tag} lost from the spool"

    # After a restart every spooled message is back in the queue.
    proc = start_serve(cfg_path)
    try:
        wait_port(port, proc)
        res = mailtui("queue", "list", "--json", config=cfg_path)
        assert res.returncode == 0, res.stderr
        import json
        queued = {row["id"] for row in json.loads(res.stdout)}
        assert len(queued) == len(list((data / "spool").glob("*.json")))
        remote_acked = sum(1 for _, r in acked if r != "bob@localhost")
        assert len(queued) >= remote_acked
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
