"""Durability: a server killed with SIGKILL mid-stream loses no message it acknowledged."""

from __future__ import annotations

import json
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
    return [tag_of(p.read_bytes()) for p in paths]


def tag_of(message: bytes) -> str:
    return message_from_bytes(message)["Message-ID"].strip("<>").split("@")[0]


def spooled(spool: Path) -> dict[str, bytes]:
    """Queue id -> body of every complete entry, in either format, read as the server reads them.

    A one-file message cut short, or an old-format body without its envelope,
    was never acknowledged (and is removed at the next start): it is not here.
    """
    from mailtui.store.spoolfile import SpoolFiles
    from mailtui.store.spoolscan import SpoolScan

    scan, files = SpoolScan(spool, dict), SpoolFiles(spool)
    found = []
    while not scan.done:
        found += [f.msg_id for f in scan.next_batch() if f.kind == "entry"]
    return {msg_id: files.read_body(msg_id) for msg_id in found}


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
    spooled_tags = [tag_of(body) for body in spooled(data / "spool").values()]
    assert len(spooled_tags) == len(set(spooled_tags)), "a message was spooled twice"
    for tag, rcpt in acked:
        if rcpt == "bob@localhost":
            assert tag in local_ids, f"acknowledged {tag} lost from the mailbox"
        else:
            assert tag in spooled_tags, f"acknowledged {tag} lost from the spool"

    # After a restart every spooled message is back in the queue.
    proc = start_serve(cfg_path)
    try:
        wait_port(port, proc)
        res = mailtui("queue", "list", "--json", config=cfg_path)
        assert res.returncode == 0, res.stderr
        queued = {row["id"] for row in json.loads(res.stdout)}
        assert queued == set(spooled(data / "spool"))
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


def fill_deferred(spool: Path, count: int) -> set[str]:
    """``count`` messages deferred for a week, in the two-file format of earlier versions."""
    from mailtui.store.queue import QueueItem, RecipientState

    spool.mkdir(parents=True, exist_ok=True)
    now = time.time()
    ids = set()
    for n in range(count):
        msg_id = f"OLD{n:07d}"
        item = QueueItem(id=msg_id, sender="a@example.org",
                         recipients=[RecipientState(f"u{n}@unreachable.test", state="deferred", attempts=1)],
                         arrival=now - 600, next_attempt=now + 7 * 86400, size=30, attempts=1)
        (spool / f"{msg_id}.eml").write_bytes(f"Message-ID: <{msg_id}@crash.test>\r\n\r\nold\r\n".encode())
        (spool / f"{msg_id}.json").write_text(json.dumps(item.to_json()))
        ids.add(msg_id)
    return ids


def test_sigkill_during_the_spool_scan_and_the_index_writes_loses_nothing(tmp_path):
    """kill -9 while a big spool is still being scanned, then while its index is being written."""
    from mailtui.admin.control import ControlError, call
    from mailtui.store.index import read_index

    data = tmp_path / "data"
    port = free_port()
    cfg_path = write_config(tmp_path / "c.toml", data, '[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n'
                            '[delivery]\nretry_intervals = [3600]\n[logs]\nflush_interval = 0.1\n')
    cfg_path.write_text(cfg_path.read_text().replace('[smtp]\nlisten = ["127.0.0.1:0"]',
                                                     f'[smtp]\nlisten = ["127.0.0.1:{port}"]'))
    assert mailtui("client", "add", "loop", "--network", "127.0.0.0/8", config=cfg_path).returncode == 0
    assert mailtui("mailbox", "add", "bob@localhost", "--password-stdin", config=cfg_path,
                   stdin="crash test password\n").returncode == 0
    old = fill_deferred(data / "spool", 20_000)

    acked: list = []
    for rnd, kill_after in enumerate((0.3, 2.5)):  # mid-scan; then while 20,000 rows reach the index
        proc = start_serve(cfg_path)
        stop = threading.Event()
        workers = [threading.Thread(target=sender, args=(port, acked, stop, 10 * rnd + w)) for w in range(3)]
        try:
            wait_port(port, proc)
            for w in workers:
                w.start()
            time.sleep(kill_after)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            stop.set()
            for w in workers:
                w.join(10)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert len(acked) >= 10, "too few messages were sent before the kills to prove anything"

    box = data / "mail" / "localhost" / "bob"
    local_ids = message_ids(p for sub in ("new", "cur") for p in (box / sub).glob("*"))
    assert len(local_ids) == len(set(local_ids)), "a message was delivered twice"
    entries = spooled(data / "spool")
    assert old <= set(entries), "a message of the earlier run was lost from the spool"
    spooled_tags = {tag_of(body) for msg_id, body in entries.items() if msg_id not in old}
    for tag, rcpt in acked:
        assert tag in (local_ids if rcpt == "bob@localhost" else spooled_tags), f"acknowledged {tag} lost"

    proc = start_serve(cfg_path)
    try:
        wait_port(port, proc)
        deadline = time.monotonic() + 60
        while True:                  # (the control socket opens just after the SMTP port)
            try:
                if not call(data, "queue_status")["scanning"]:
                    break
            except ControlError:
                pass
            assert time.monotonic() < deadline, "the scan did not end"
            time.sleep(0.1)
        queued = {row["id"] for row in json.loads(mailtui("queue", "list", "--json", config=cfg_path).stdout)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    on_disk = set(spooled(data / "spool"))
    assert queued == on_disk == set(entries)
    assert {row["id"] for row in read_index(data / "queue-index")} == on_disk
