"""A real ``mailtui serve``: SIGTERM ends it quickly with sessions in IDLE; a restart keeps UIDs and flags."""

from __future__ import annotations

import imaplib
import signal
import smtplib
import time

from imap_raw import Raw
from harness import mailtui, write_config
from test_crash import free_port, start_serve, wait_port

ALICE = "alice@localhost"
SECRET = "restart test password"


def send(port: int, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.sendmail("bob@example.org", [ALICE], f"Subject: {subject}\r\n\r\n{subject}\r\n".encode())


def state(port: int) -> tuple[int, list[tuple[int, bytes]]]:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=5)
    m.login(ALICE, SECRET)
    m.select("INBOX")
    validity = int(m.response("UIDVALIDITY")[1][0])
    rows = [line for line in m.uid("FETCH", "1:*", "(UID FLAGS)")[1]]
    m.logout()
    return validity, [(int(r.split(b"UID ")[1].split()[0]), r.split(b"FLAGS (")[1].split(b")")[0]) for r in rows]


def test_sigterm_with_idle_sessions_then_restart_keeps_uids_and_flags(tmp_path):
    smtp_port, imap_port = free_port(), free_port()
    cfg = write_config(tmp_path / "c.toml", tmp_path / "data").read_text()
    cfg = cfg.replace('[smtp]\nlisten = ["127.0.0.1:0"]', f'[smtp]\nlisten = ["127.0.0.1:{smtp_port}"]')
    cfg = cfg.replace('[imap]\nlisten = ["127.0.0.1:0"]', f'[imap]\nlisten = ["127.0.0.1:{imap_port}"]')
    cfg += '[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n'
    config = tmp_path / "serve.toml"
    config.write_text(cfg)
    assert mailtui("client", "add", "loop", "--network", "127.0.0.0/8", config=config).returncode == 0
    assert mailtui("mailbox", "add", ALICE, "--password-stdin", config=config, stdin=SECRET + "\n").returncode == 0

    proc = start_serve(config)
    try:
        wait_port(imap_port, proc)
        for subject in ("one", "two", "three"):
            send(smtp_port, subject)
        m = imaplib.IMAP4("127.0.0.1", imap_port, timeout=5)
        m.login(ALICE, SECRET)
        m.select("INBOX")
        m.uid("STORE", "2", "+FLAGS", "(\\Seen $Work)")
        m.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.logout()
        before = state(imap_port)
        idlers = [Raw(imap_port) for _ in range(3)]
        for c in idlers:
            c.login(ALICE, SECRET)
            c.cmd("s", "SELECT INBOX")
            c.send(b"i IDLE\r\n")
            assert c.line() == b"+ idling\r\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - started < 5
        for c in idlers:
            assert c.line() == b"* BYE Server shutting down\r\n"
            c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    proc = start_serve(config)
    try:
        wait_port(imap_port, proc)
        validity, rows = state(imap_port)
        assert (validity, rows) == before
        assert [uid for uid, _ in rows] == [2, 3] and b"\\Seen $Work" in rows[0][1]
        send(smtp_port, "four")
        validity, rows = state(imap_port)
        assert validity == before[0] and [uid for uid, _ in rows] == [2, 3, 4]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
