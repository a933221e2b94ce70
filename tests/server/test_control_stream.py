"""The control socket's ``attach``: a snapshot, then the live events; a console that falls behind is dropped.

Real server, real Unix socket, plain blocking clients: what an attached
console reads, without Textual.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import smtplib
import socket
import threading
import tempfile
import time
from pathlib import Path

import pytest

from mailtui import events as ev
from mailtui.admin import attach
from mailtui.admin.control import socket_path
from mailtui.eventcodec import decode

MSG = b"Subject: attach test\r\n\r\nhello\r\n"
pytestmark = pytest.mark.timeout(60)


class Stream:
    """A console's end of the stream, read line by line with a deadline."""

    def __init__(self, data_dir, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(str(socket_path(data_dir)))
        self.sock.sendall(b'{"op": "attach"}\n')
        self.file = self.sock.makefile("rb")
        self.snapshot = json.loads(self.file.readline())["snapshot"]

    def next(self) -> dict:
        line = self.file.readline()
        return json.loads(line) if line else {}

    def until(self, predicate, what: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.next()
            if not data:
                raise AssertionError(f"the stream ended before {what}")
            if predicate(data):
                return data
        raise AssertionError(f"timed out waiting for {what}")

    def read_all(self) -> list[dict]:
        """Read on in a thread, as a console that keeps up does; the list grows as lines come."""
        got: list[dict] = []

        def run() -> None:
            with contextlib.suppress(OSError, ValueError):
                while (data := self.next()):
                    got.append(data)

        threading.Thread(target=run, daemon=True).start()
        return got

    def close(self) -> None:
        self.sock.close()
        self.file.close()


def send(port: int, sender: str = "a@example.org", rcpt: str = "postmaster@example.test",
         source: str = "127.0.0.1") -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        try:
            client.sendmail(sender, [rcpt], MSG)
        except smtplib.SMTPException as exc:
            return f"refused: {exc}"
    return "accepted"


def test_the_snapshot_holds_what_a_console_shows(server):
    server.add_client("lab", "127.0.0.1/32")
    server.add_mailbox("bob@example.test")
    assert send(server.smtp_port) == "accepted"
    assert send(server.smtp_port, source="127.0.0.9").startswith("refused")
    server.wait_for(lambda: len(server.core.store.recent("connections")) == 2, what="the stored connections")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10, local_hostname="open.example") as open_session:
        open_session.ehlo()
        server.wait_for(lambda: len(server.core.sessions) == 1, what="the open session")
        stream = Stream(server.data_dir)
        snap = stream.snapshot
        stream.close()
    assert snap["protocol"] == 1
    assert [(row["peer"], row["helo"], row["client"]) for row in snap["sessions"]] == \
        [("127.0.0.1", "open.example", "lab")]
    peers = [(row["peer"], row["result"]) for row in snap["history"]["connections"]]
    assert peers[0] == ("127.0.0.1", "1 accepted") and peers[1][0] == "127.0.0.9"
    assert peers[1][1].startswith("refused: 550 5.7.1")
    assert [d["result"] for d in snap["history"]["deliveries"]] == ["delivered"]
    assert snap["registry"]["clients"][0] | {"created": 0} == \
        {"name": "lab", "networks": ["127.0.0.1/32"], "note": "", "created": 0}
    assert [m["address"] for m in snap["registry"]["mailboxes"]] == ["bob@example.test"]
    assert snap["queue"] == {"size": 0, "items": []}
    status = snap["status"]
    assert status["pid"] == os.getpid() and status["totals"]["accepted"] == 1 and status["totals"]["refused"] == 1
    assert {li["proto"] for li in status["listeners"] if li["ok"]} == {"smtp", "pop3", "imap"}


def test_events_follow_the_snapshot_to_every_console(server):
    server.add_client("lab", "127.0.0.1/32")
    first, second = Stream(server.data_dir), Stream(server.data_dir)
    try:
        assert send(server.smtp_port) == "accepted"
        for stream in (first, second):
            opened = stream.until(lambda d: d.get("type") == "ConnectionOpened", "the session")
            accepted = stream.until(lambda d: d.get("type") == "MessageAccepted", "the message")
            closed = stream.until(lambda d: d.get("type") == "ConnectionClosed", "the end of the session")
            assert decode(json.dumps(opened)).peer == "127.0.0.1"
            assert isinstance(decode(json.dumps(accepted)), ev.MessageAccepted)
            assert closed["result"] == "1 accepted"
        assert len(server.core.control.hub.consoles) == 2
    finally:
        first.close()
        second.close()
    server.wait_for(lambda: not server.core.control.hub.consoles, what="the consoles to go")
    assert server.core.control.hub._sub is None     # no console, no subscription: nothing to pay


def test_a_console_that_stops_reading_is_dropped_and_never_slows_the_server(server):
    server.add_client("lab", "127.0.0.1/32")
    hub = server.core.control.hub
    hub.max_buffer = 256 << 10
    slow = Stream(server.data_dir, rcvbuf=4096)    # attaches, then never reads
    reader = Stream(server.data_dir)
    got = reader.read_all()
    try:
        text = "x" * 2000
        for _ in range(20):   # ~2 MB in 20 batches, far past the slow console's buffer
            server.call(lambda: [server.bus.publish(ev.Notice(level="info", text=text)) for _ in range(50)])
            time.sleep(0.06)
        server.wait_for(lambda: hub.resyncs == 1, what="the slow console to be dropped")
        started = time.monotonic()
        assert send(server.smtp_port) == "accepted"
        assert time.monotonic() - started < 2.0
        server.wait_for(lambda: any(d.get("type") == "MessageAccepted" for d in got),
                        what="the message, on the console that reads")
        assert sum(d.get("type") == "Notice" for d in got) == 1000
        assert len(hub.consoles) == 1 and not any("resync" in d for d in got)
        lines = []
        while (data := slow.next()):
            lines.append(data)
        assert lines[-1] == {"resync": "this console fell behind"}
        assert len(lines) < 1000
    finally:
        slow.close()
        reader.close()


def test_every_console_resyncs_when_the_hub_itself_fell_behind(server, monkeypatch):
    monkeypatch.setattr(attach, "BUS_QUEUE", 10)
    streams = [Stream(server.data_dir), Stream(server.data_dir)]
    try:
        server.call(lambda: [server.bus.publish(ev.Notice(level="info", text=str(n))) for n in range(100)])
        for stream in streams:
            assert stream.until(lambda d: "resync" in d, "the resync") == \
                {"resync": "the server's stream to consoles fell behind"}
            assert stream.next() == {}
        fresh = Stream(server.data_dir)    # and a console that comes back gets a new snapshot
        assert fresh.snapshot["status"]["pid"] == os.getpid()
        fresh.close()
    finally:
        for stream in streams:
            stream.close()


def test_a_stopping_server_says_goodbye(config):
    from harness import RunningServer

    srv = RunningServer(config).start()
    stream = Stream(srv.data_dir)
    srv.stop()
    assert stream.until(lambda d: "bye" in d, "the goodbye") == {"bye": "the server is stopping"}
    stream.close()


def test_a_snapshot_can_be_asked_for_in_parts(server):
    from mailtui.admin.control import call

    part = call(server.data_dir, "snapshot", parts=["queue"])
    assert part == {"protocol": 1, "queue": {"size": 0, "items": []}}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_only_the_servers_user_is_answered():
    from harness import RunningServer, make_config

    folder = Path(tempfile.mkdtemp(prefix="mailtui-peercred-"))   # a path another user may walk
    folder.chmod(0o755)
    srv = RunningServer(make_config(folder / "data")).start()
    try:
        path = socket_path(srv.data_dir)
        srv.data_dir.chmod(0o755)
        path.chmod(0o666)           # even when the modes let anyone in
        assert answer_as(65534, path) == {"ok": False, "error": "not the server's user"}
        assert answer_as(0, path) == {"ok": True, "result": []}
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


def answer_as(uid: int, path: Path) -> dict:
    """The control socket's answer to ``client_list`` asked by a process running as ``uid``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(b'{"op": "client_list"}\n')
                os.write(write, sock.recv(4096))
        finally:
            os._exit(0)
    os.close(write)
    answer = b""
    while chunk := os.read(read, 4096):
        answer += chunk
    os.waitpid(pid, 0)
    os.close(read)
    return json.loads(answer or b"{}")
