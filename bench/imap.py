#!/usr/bin/env python3
"""IMAP rows of the benchmark, side by side with a throwaway Dovecot in the same run.

    python bench/imap.py [--quick] [--rounds 3]        (or: python bench/run.py --imap)

* ``imap-open``: ``SELECT INBOX`` + ``UID FETCH 1:* (UID FLAGS)`` (login not
  timed) on a 50,000-message INBOX, the *second* open (the first builds UIDs and
  indexes on both servers); median of 9 opens, alternating between the two; mailtui's RSS after them
  minus its RSS idle before any IMAP. Targets: ≤ 1.5× Dovecot's time,
  ≤ 50 MiB over idle.
* ``imap-mbsync``: mbsync pulling 10,000 messages of 4 KiB into an empty
  local Maildir (both servers warmed by one SELECT). Target ≥ 0.8× Dovecot.
* ``imap-idle``: local SMTP delivery (smtp-source, 10 sessions, 4 KiB) with
  20 clients idling in IMAP IDLE on the receiving INBOX, against the same
  load with none. Target ≥ 0.9×.

Dovecot runs from a temporary directory as the tests' oracle does
(tests/access/imap/imap_dovecot.py), on a copy of the same Maildir.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "access" / "imap"))

from common import count_files, log, settle_disk, wait_port, which  # noqa: E402

KiB = 1024


# -- a minimal IMAP client: fast enough that it is not what we measure ---------------------------
class Wire:
    def __init__(self, port: int, timeout: float = 120.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.read_until(b"\r\n")

    def read_until(self, end: bytes) -> bytes:
        while not self.buf.endswith(end):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(self.buf[-200:])
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out

    def cmd(self, tag: str, text: str) -> bytes:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        return self.read_tagged(tag.encode())

    def read_tagged(self, tag: bytes) -> bytes:
        chunks: list[bytes] = []
        tail = b""
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(tail[-200:])
            chunks.append(chunk)
            tail = (tail + chunk)[-300:]
            if tail.endswith(b"\r\n") and (b"\r\n" + tag + b" " in tail or
                                           (len(chunks) == 1 and chunk.startswith(tag + b" "))):
                return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


def open_inbox(port: int, user: str, password: str) -> tuple[float, int]:
    """Seconds from SELECT sent to the end of ``UID FETCH 1:* (UID FLAGS)``; and the FETCH lines seen.

    The login is not timed: mailtui checks an scrypt hash (tens of ms on
    purpose), the oracle Dovecot a plain-text password file.
    """
    w = Wire(port)
    w.cmd("l", f'LOGIN "{user}" "{password}"')
    t0 = time.perf_counter()
    w.cmd("s", "SELECT INBOX")
    data = w.cmd("f", "UID FETCH 1:* (UID FLAGS)")
    elapsed = time.perf_counter() - t0
    w.cmd("o", "LOGOUT")
    w.close()
    return elapsed, data.count(b" FETCH (")


# -- Dovecot ------------------------------------------------------------------------------------
class Dovecot:
    """Dovecot on a copy of ``maildir`` (its own config, passwd-file user, loopback only)."""

    def __init__(self, workdir: Path, maildir: Path):
        import imap_dovecot as d
        self.d = d
        self.root = Path(tempfile.mkdtemp(prefix="dvb-"))    # short: Dovecot's sockets live here
        os.chmod(self.root, 0o755)
        internal, login, uid, gid = d._accounts()
        shutil.copytree(maildir, self.root / "Maildir")
        (self.root / "home").mkdir()
        for path in [self.root / "Maildir", self.root / "home", *self.root.joinpath("Maildir").rglob("*")]:
            os.chown(path, uid, gid)
        (self.root / "passwd").write_text(f"{d.USER}:{{PLAIN}}{d.PASSWORD}\n")
        self.port = d._free_port()
        (self.root / "dovecot.conf").write_text(d._config(self.root, self.port, internal, login, uid, gid))
        self.user, self.password = d.USER, d.PASSWORD
        self.proc = subprocess.Popen([d.dovecot_binary(), "-F", "-c", str(self.root / "dovecot.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        d._wait_for_greeting(self.port, self.proc, self.root / "dovecot.log")

    def stop(self) -> None:
        self.d._stop(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


# -- the loads ---------------------------------------------------------------------------------------
def start_mailtui(workdir: Path, registry_state: Path, prefill: int = 0, size: int = 4 * KiB):
    from loads import fill_maildir
    from targets import MailtuiTarget
    target = MailtuiTarget(workdir, registry_state)
    if prefill:
        fill_maildir(target.maildir_new, prefill, size=size)
    settle_disk()
    target.start()
    wait_port("127.0.0.1", target.imap_port, 60, target.proc)
    time.sleep(1.0)
    return target


def load_open(base: Path, registry_state: Path, messages: int, opens: int) -> dict:
    """Both servers up on the same messages; second opens alternate between them (noise hits both)."""
    from targets import MAILBOX, PASSWORD
    target = start_mailtui(base / "open-mailtui", registry_state, messages)
    dovecot = None
    try:
        idle_kib = target.rss_kib()
        first, seen = open_inbox(target.imap_port, MAILBOX, PASSWORD)
        assert seen == messages, f"mailtui returned {seen} FETCH lines, expected {messages}"
        dovecot = Dovecot(base / "open-dovecot", target.maildir)
        d_first, d_seen = open_inbox(dovecot.port, dovecot.user, dovecot.password)
        assert d_seen == messages, f"Dovecot returned {d_seen} FETCH lines"
        ours, theirs = [], []
        for _ in range(opens):
            ours.append(open_inbox(target.imap_port, MAILBOX, PASSWORD)[0])
            theirs.append(open_inbox(dovecot.port, dovecot.user, dovecot.password)[0])
        rss_kib = target.rss_kib()
    finally:
        target.stop()
        if dovecot is not None:
            dovecot.stop()
    return {"ours_first": first, "ours": statistics.median(ours), "theirs_first": d_first,
            "theirs": statistics.median(theirs), "rss_over_idle_mib": (rss_kib - idle_kib) / 1024,
            "rss_mib": rss_kib / 1024}


def mbsync_pull(port: int, user: str, password: str, workdir: Path) -> float:
    local = workdir / "local"
    local.mkdir(parents=True)
    rc = workdir / "mbsyncrc"
    rc.write_text(f"IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass \"{password}\"\n"
                  f"SSLType None\nAuthMechs PLAIN\n\nIMAPStore r\nAccount a\n\nMaildirStore l\n"
                  f"Path {local}/\nInbox {local}/INBOX\n\nChannel c\nFar :r:INBOX\nNear :l:INBOX\n"
                  f"Create Near\nSync Pull\nSyncState *\n")
    t0 = time.perf_counter()
    res = subprocess.run([which("mbsync") or "mbsync", "-c", str(rc), "-a"], capture_output=True, text=True,
                         timeout=900, env=dict(os.environ, HOME=str(workdir)))
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"mbsync failed: {res.stderr[-500:]}")
    return elapsed


def load_mbsync(base: Path, registry_state: Path, messages: int, rounds: int) -> dict:
    from targets import MAILBOX, PASSWORD
    target = start_mailtui(base / "mbsync-mailtui", registry_state, messages)
    dovecot = None
    ours, theirs = [], []
    try:
        open_inbox(target.imap_port, MAILBOX, PASSWORD)                   # UIDs given, index built
        dovecot = Dovecot(base / "mbsync-dovecot", target.maildir)
        open_inbox(dovecot.port, dovecot.user, dovecot.password)
        for rnd in range(rounds):
            settle_disk()
            ours.append(mbsync_pull(target.imap_port, MAILBOX, PASSWORD, base / f"mbsync-ours-{rnd}"))
            settle_disk()
            theirs.append(mbsync_pull(dovecot.port, dovecot.user, dovecot.password, base / f"mbsync-dv-{rnd}"))
            log(f"imap-mbsync round {rnd + 1}: mailtui {ours[-1]:.2f}s, Dovecot {theirs[-1]:.2f}s")
    finally:
        target.stop()
        if dovecot is not None:
            dovecot.stop()
    return {"ours": statistics.median(ours), "theirs": statistics.median(theirs)}


class Idlers:
    """``count`` clients in IDLE on INBOX; a thread reads (and counts) what the server pushes."""

    def __init__(self, port: int, user: str, password: str, count: int):
        self.socks = []
        for _ in range(count):
            w = Wire(port)
            w.cmd("l", f'LOGIN "{user}" "{password}"')
            w.cmd("s", "SELECT INBOX")
            w.sock.sendall(b"i IDLE\r\n")
            w.read_until(b"+ idling\r\n")
            w.sock.setblocking(False)
            self.socks.append(w.sock)
        self.exists = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        sel = selectors.DefaultSelector()
        for sock in self.socks:
            sel.register(sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(0.2):
                try:
                    self.exists += key.fileobj.recv(1 << 16).count(b" EXISTS\r\n")
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


def load_idle(base: Path, registry_state: Path, messages: int, rounds: int, idlers: int) -> dict:
    from loads import measure_smtp
    from targets import MAILBOX, PASSWORD
    rates: dict[int, list[float]] = {0: [], idlers: []}
    for rnd in range(rounds):
        for count in (0, idlers):
            target = start_mailtui(base / f"idle-{count}-r{rnd}", registry_state)
            clients = None
            try:
                if count:
                    clients = Idlers(target.imap_port, MAILBOX, PASSWORD, count)
                sample = measure_smtp(target, messages=messages, sessions=10, size=4 * KiB, rcpt=MAILBOX,
                                      done=lambda t=target: count_files(t.maildir_new) + count_files(
                                          t.maildir / "cur") >= messages, timeout=max(180.0, messages / 15))
                if sample.error:
                    raise RuntimeError(sample.error + " | " + target.error_output()[-300:])
                rates[count].append(sample.rate)
                pushed = ""
                if clients is not None:
                    time.sleep(1.0)
                    pushed = f", {clients.exists} EXISTS pushed to {count} idlers"
                log(f"imap-idle round {rnd + 1}, {count} idlers: {sample.rate:,.0f} msg/s{pushed}")
            finally:
                if clients is not None:
                    clients.close()
                target.stop()
    return {"none": statistics.median(rates[0]), "idle": statistics.median(rates[idlers]), "idlers": idlers}


# -- the table -------------------------------------------------------------------------------------------
def rows(results: dict) -> list[list[str]]:
    out = []
    if "open" in results:
        r = results["open"]
        ratio = r["ours"] / r["theirs"]
        out.append([f"SELECT + UID FETCH 1:* (UID FLAGS), {r['messages']:,} msgs, 2nd open",
                    f"{r['ours'] * 1000:.0f} ms (1st {r['ours_first']:.1f} s)",
                    f"{r['theirs'] * 1000:.0f} ms (1st {r['theirs_first']:.1f} s)",
                    f"{ratio:.2f}× Dovecot's time", "≤ 1.5× " + ("✓" if ratio <= 1.5 else "✗")])
        out.append(["  mailtui RSS after those opens, over idle", f"+{r['rss_over_idle_mib']:.1f} MiB "
                    f"({r['rss_mib']:.0f} MiB)", "", "", "≤ 50 MiB " + ("✓" if r["rss_over_idle_mib"] <= 50 else "✗")])
    if "mbsync" in results:
        r = results["mbsync"]
        ratio = r["theirs"] / r["ours"]
        out.append([f"mbsync pull, {r['messages']:,} × 4 KiB", f"{r['messages'] / r['ours']:,.0f} msg/s",
                    f"{r['messages'] / r['theirs']:,.0f} msg/s", f"{ratio:.2f}× Dovecot",
                    "≥ 0.8× " + ("✓" if ratio >= 0.8 else "✗")])
    if "idle" in results:
        r = results["idle"]
        ratio = r["idle"] / r["none"]
        out.append([f"SMTP local 10×4 KiB, {r['idlers']} clients in IDLE", f"{r['idle']:,.0f} msg/s",
                    f"{r['none']:,.0f} msg/s (no IDLE)", f"{ratio:.2f}× none",
                    "≥ 0.9× " + ("✓" if ratio >= 0.9 else "✗")])
    return out


def run(args: argparse.Namespace, base: Path) -> dict:
    from targets import make_registry_template
    registry = make_registry_template(base / "imap-registry")
    results: dict = {}
    keys = set(args.imap_only.split(",")) if args.imap_only else {"open", "mbsync", "idle"}
    if "open" in keys:
        results["open"] = load_open(base, registry, args.open_messages, 9) | {"messages": args.open_messages}
        log(f"imap-open: {results['open']}")
    if "mbsync" in keys:
        results["mbsync"] = load_mbsync(base, registry, args.mbsync_messages, args.rounds) | {
            "messages": args.mbsync_messages}
    if "idle" in keys:
        results["idle"] = load_idle(base, registry, args.idle_messages, args.rounds, 20)
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imap-only", metavar="KEYS", help="comma-separated: open,mbsync,idle")
    p.add_argument("--open-messages", type=int, default=50_000)
    p.add_argument("--mbsync-messages", type=int, default=10_000)
    p.add_argument("--idle-messages", type=int, default=3_000)


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="mailtui IMAP benchmark (vs Dovecot, same run)", title_justify="left")
    for column in ("load", "mailtui", "Dovecot / baseline", "ratio", "target"):
        table.add_column(column)
    for row in rows(results):
        table.add_row(*row)
    Console(width=200).print(table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round; 10,000 / 2,000 / 1,000 messages")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", action="store_true")
    add_arguments(p)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.open_messages, args.mbsync_messages, args.idle_messages = 1, 10_000, 2_000, 1_000
    base = Path(tempfile.mkdtemp(prefix="mailtui-imap-bench-", dir="/var/tmp"))
    log(f"work folder {base}; load average {os.getloadavg()[0]:.2f}")
    try:
        results = run(args, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print_table(results)
    log(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
