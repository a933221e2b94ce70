"""The loads: smtp-source into a target, the relay sink and its DNS, POP3 retrieval, history.

Each measuring function returns a :class:`Sample`: messages, wall seconds
(from the first connection to the last message being where it belongs), the
server's CPU seconds over the same window, and its peak RSS.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common import count_files, free_port, log, wait_port, which

SENDER = "bench@example.org"


@dataclass
class Sample:
    messages: int
    seconds: float
    cpu: float
    peak_rss_kib: int = 0
    error: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 and not self.error else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.messages if self.messages and not self.error else 0.0


# -- SMTP load ----------------------------------------------------------------------------

def smtp_source(port: int, *, messages: int, sessions: int, size: int, rcpt: str,
                reuse: bool = False) -> subprocess.Popen:
    cmd = [which("smtp-source") or "smtp-source", "-l", str(size), "-m", str(messages), "-s", str(sessions),
           "-M", "client.bench.test", "-f", SENDER, "-t", rcpt]
    if reuse:
        cmd.append("-d")
    cmd.append(f"127.0.0.1:{port}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def measure_smtp(target, *, messages: int, sessions: int, size: int, rcpt: str, done: Callable[[int], bool],
                 timeout: float, reuse: bool = False, poll: float = 0.01, probe: bool = True) -> Sample:
    """Run smtp-source against ``target`` until ``done(extra)`` says every message arrived.

    With ``probe``, one more session (:class:`probes.SmtpProbe`) sends a
    message every 10 ms while smtp-source runs and times end of DATA -> 250;
    ``extra`` is how many it sent. ``done`` is polled only after smtp-source
    has exited (every 250 has been received), so the polling costs nothing
    while the load runs; its time resolution is ``poll`` seconds.
    """
    from probes import SmtpProbe
    cpu0 = target.cpu()
    loop0 = _loop_cpu(target)
    t0 = time.perf_counter()
    proc = smtp_source(target.smtp_port, messages=messages, sessions=sessions, size=size, rcpt=rcpt,
                       reuse=reuse)
    latency = SmtpProbe(target.smtp_port, rcpt, size).start() if probe else None
    deadline = t0 + timeout
    error = ""
    try:
        while proc.poll() is None:
            if time.perf_counter() > deadline:
                error = "timeout while sending"
                break
            time.sleep(0.005)
        t_sent = time.perf_counter()
        if latency is not None:
            latency.stop()
            error = error or (f"250-latency probe: {latency.error}" if latency.error else "")
        extra_sent = latency.sent if latency is not None else 0
        if not error and proc.returncode != 0:
            error = (proc.stderr.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]
        while not error and not done(extra_sent):
            if time.perf_counter() > deadline:
                error = "timeout waiting for delivery"
                break
            if not target.alive():
                error = "server died"
                break
            time.sleep(poll)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    t1 = time.perf_counter()
    cpu1 = target.cpu()
    extra = {"sent_s": round(t_sent - t0, 3)}
    if latency is not None:
        extra["latency"] = latency.figures()
        extra["probe_messages"] = extra_sent
    if hasattr(target, "loop_cpu"):
        extra["loop_busy"] = (target.loop_cpu() - loop0) / (t1 - t0)
    return Sample(messages, t1 - t0, cpu1 - cpu0, target.peak_rss_kib(), error, extra)


def _loop_cpu(target) -> float:
    return target.loop_cpu() if hasattr(target, "loop_cpu") else 0.0


def maildir_reached(new_dir: Path, count: int) -> Callable[[int], bool]:
    """``done`` for local loads: ``count`` messages (plus the probe's) in the Maildir."""
    return lambda extra: count_files(new_dir) >= count + extra


# -- relay: DNS and sink ------------------------------------------------------------------

class Dnsmasq:
    """dnsmasq on 127.0.0.1:free port answering for .test: MX sink.test -> mx.sink.test -> 127.0.0.2."""

    def __init__(self, domain: str = "sink.test", host: str = "127.0.0.2", ttl: int = 3600,
                 extra: tuple[str, ...] = ()):
        self.domain, self.host, self.ttl, self.extra = domain, host, ttl, extra
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Dnsmasq":
        for _ in range(3):
            self.port = free_port(udp=True)
            self._log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(
                [which("dnsmasq") or "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                 "--conf-file=/dev/null", "--listen-address=127.0.0.1", "--bind-interfaces",
                 f"--port={self.port}", "--local=/test/", f"--local-ttl={self.ttl}", "--pid-file=",
                 f"--mx-host={self.domain},mx.{self.domain},10",
                 f"--host-record=mx.{self.domain},{self.host}", *self.extra],
                stdout=self._log, stderr=self._log)
            if self._ready():
                return self
            self.stop()
        self._log.seek(0)
        raise RuntimeError(f"dnsmasq did not start: {self._log.read().decode(errors='replace')}")

    def _ready(self, timeout: float = 5.0) -> bool:
        import dns.message
        import dns.query
        query = dns.message.make_query(f"mx.{self.domain}", "A")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return bool(answer.answer)
            except Exception:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        from common import stop_process
        stop_process(self.proc, timeout=5)
        self.proc = None


class Sink:
    """Postfix's smtp-sink on 127.0.0.2:free port; counts the messages it received."""

    _MESG = re.compile(rb"mesg=(\d+)")

    def __init__(self, workdir: Path):
        self.host = "127.0.0.2"
        self.port = free_port(self.host)
        self.out = workdir / "smtp-sink.out"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sink":
        self._fh = open(self.out, "wb")
        self.proc = subprocess.Popen([which("smtp-sink") or "smtp-sink", "-u", "nobody", "-c",
                                      f"{self.host}:{self.port}", "1024"],
                                     stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.host, self.port, 10, self.proc)
        return self

    def count(self) -> int:
        try:
            with open(self.out, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 256))
                found = self._MESG.findall(fh.read())
        except FileNotFoundError:
            return 0
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        from common import stop_process
        stop_process(self.proc, timeout=5)
        self.proc = None
        self._fh.close()


# -- POP3 ---------------------------------------------------------------------------------

class _Pop3:
    """A small POP3 client that reads multi-line answers in large chunks (a fast client,
    so the figure is the server's)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.octets = 0

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("POP3 server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        out = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return out

    def multi(self) -> None:
        """Skip a multi-line body up to and including CRLF.CRLF (after its status line)."""
        start = 0
        while (end := self.buf.find(b"\r\n.\r\n", start)) < 0:
            start = max(0, len(self.buf) - 4)
            self._fill()
        self.octets += end
        del self.buf[:end + 5]

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+"):
            raise RuntimeError(f"POP3 {text.split()[0]}: {reply.decode(errors='replace')}")
        return reply

    def close(self) -> None:
        self.sock.close()


def measure_pop3(target, *, user: str, password: str, expect: int, timeout: float,
                 limit: int | None = None) -> Sample:
    """Log in, RETR and DELE every message (the first ``limit``), QUIT: messages per second
    of the whole session, login and QUIT included."""
    cpu0 = target.cpu()
    loop0 = _loop_cpu(target)
    t0 = time.perf_counter()
    error = ""
    count = 0
    client = None
    try:
        client = _Pop3(target.pop3_port)
        client.sock.settimeout(timeout)
        client.line()  # greeting
        client.cmd(f"USER {user}")
        client.cmd(f"PASS {password}")
        t_login = time.perf_counter()
        count = int(client.cmd("STAT").split()[1])
        if limit is not None:
            count = min(count, limit)
        for n in range(1, count + 1):
            client.cmd(f"RETR {n}")
            client.multi()
            client.cmd(f"DELE {n}")
        client.cmd("QUIT")
        if count < expect:
            error = f"only {count} messages in the maildrop, expected {expect}"
    except Exception as exc:  # noqa: BLE001 - reported in the table
        error = f"{type(exc).__name__}: {exc}"
        t_login = t0
    finally:
        if client is not None:
            client.close()
    t1 = time.perf_counter()
    extra = {"login_s": round(t_login - t0, 3), "octets": client.octets if client else 0}
    if hasattr(target, "loop_cpu"):
        extra["loop_busy"] = (target.loop_cpu() - loop0) / (t1 - t0)
    return Sample(count, t1 - t0, target.cpu() - cpu0, target.peak_rss_kib(), error, extra)


# -- pre-filled data ----------------------------------------------------------------------

def message_bytes(i: int, size: int, rcpt: str) -> bytes:
    """A message shaped like what smtp-source sends, as mailtui stores it."""
    head = (f"Received: from client.bench.test ([127.0.0.1])\r\n\tby mail.bench.test (mailtui) with SMTP "
            f"id H{i:010d};\r\n\tThu, 01 Jan 2026 00:00:00 +0000\r\n"
            f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
            f"Message-Id: <{i}.history@client.bench.test>\r\n\r\n").encode()
    line = b"X" * 78 + b"\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return head + body


def fill_maildir(new_dir: Path, count: int, *, size: int = 4096, rcpt: str = "rcpt@localhost",
                 tag: str = "prefill") -> None:
    """Write ``count`` messages straight into a Maildir's new/ (no fsync: a sync follows)."""
    new_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("tmp", "cur"):
        (new_dir.parent / sub).mkdir(exist_ok=True, mode=0o700)
    base = int(time.time()) - 86400
    for i in range(count):
        data = message_bytes(i, size, rcpt)
        name = f"{base + i // 1000}.M{i % 1000:06d}P1Q{i}.{tag},S={len(data)}"
        fd = os.open(new_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)


def spool_envelope(msg_id: str, rcpt: str, size: int, now: float) -> dict:
    """A deferred entry as mailtui's queue writes ``<id>.json`` (QueueItem.to_json).

    Spelled out here rather than imported, so the same spool serves every
    mailtui tree a run compares (--tree).
    """
    return {"id": msg_id, "sender": SENDER,
            "recipients": [{"address": rcpt, "state": "deferred", "attempts": 1,
                            "last_error": "connection refused", "status": "4.4.1", "diagnostic": "",
                            "remote_mta": "", "updated": now - 600}],
            "arrival": now - 3600, "next_attempt": now + 7 * 86400, "size": size, "attempts": 1,
            "last_error": "connection refused", "peer": "127.0.0.1", "helo": "client.bench.test",
            "smtputf8": False, "body_8bit": False, "dsn_sent": False}


def fill_spool(spool: Path, count: int, *, size: int = 4096) -> None:
    """``count`` deferred messages for an unreachable domain, next try a week away (no fsync)."""
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    stamp = f"{int(now * 1000) - 86_400_000:011X}"
    for i in range(count):
        rcpt = f"user{i}@history.test"
        data = message_bytes(i, size, rcpt)
        msg_id = f"{stamp}{i:07X}"
        envelope = json.dumps(spool_envelope(msg_id, rcpt, len(data), now)).encode()
        for name, blob in ((f"{msg_id}.eml", data), (f"{msg_id}.json", envelope)):
            fd = os.open(spool / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, blob)
            os.close(fd)


def fill_logs(data_dir: Path, per_table: int = 2000) -> None:
    """logs.json at its caps (connections, dns, deliveries), as after a long run."""
    now = time.time()
    tables = {
        "connections": lambda i: {"at": now - i, "session": f"S{i}", "proto": "smtp", "peer": "127.0.0.1",
                                  "client": "bench", "helo": "client.bench.test", "tls": False,
                                  "messages": 1, "result": "1 accepted"},
        "deliveries": lambda i: {"at": now - i, "id": f"H{i:010d}", "sender": SENDER,
                                 "recipient": "rcpt@localhost", "result": "delivered", "where": "local"},
        "dns": lambda i: {"at": now - i, "name": f"d{i}.history.test", "rtype": "MX",
                          "answer": ["10 mx.history.test"], "rcode": "NOERROR", "duration": 0.001,
                          "cached": False},
    }
    doc = {name: {str(i + 1): make(i) for i in range(per_table)} for name, make in tables.items()}
    (data_dir / "logs.json").write_bytes(json.dumps(doc, separators=(",", ":")).encode())


def fill_history(target, count: int) -> None:
    """A data_dir that has seen a lot: ``count`` messages in the mailbox, ``count`` deferred
    in the queue, and full logs."""
    t0 = time.perf_counter()
    fill_maildir(target.maildir_new, count, tag="history")
    fill_spool(target.spool, count)
    fill_logs(target.data_dir)
    os.sync()
    log(f"history of {count} mailbox + {count} queued messages written in {time.perf_counter() - t0:.1f}s")
