"""Real third-party clients against a real server: swaks (SMTP), curl (POP3 and IMAP) and fetchmail (POP3)."""

from __future__ import annotations

import os
import shutil
import subprocess
from email import message_from_bytes

import pytest
from harness import PASSWORD, RunningServer, make_config
from test_crash import free_port

needs = lambda tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed")  # noqa: E731


@needs("swaks")
def test_swaks_starttls_auth_and_local_delivery(server):
    server.add_mailbox("alice@localhost")
    server.add_mailbox("bob@example.test")
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.smtp_port), "--tls",
         "--auth", "PLAIN", "--auth-user", "alice@localhost", "--auth-password", PASSWORD,
         "--from", "alice@localhost", "--to", "bob@example.test", "--helo", "swaks.test",
         "--header", "Subject: from swaks", "--body", "hello from swaks", "--timeout", "10"],
        capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "250 2.0.0 OK: queued as" in res.stdout
    files = server.maildir_files("bob@example.test")
    assert len(files) == 1
    data = files[0].read_bytes()
    assert b"Subject: from swaks" in data and b"with ESMTPSA id" in data


@needs("swaks")
def test_swaks_unregistered_is_refused_with_5xx(server):
    server.add_mailbox("bob@example.test")
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.smtp_port), "--from", "x@example.org",
         "--to", "bob@example.test", "--timeout", "10"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "550 5.7.1" in res.stdout
    assert server.maildir_files("bob@example.test") == []


@needs("fetchmail")
def test_fetchmail_retrieves_and_deletes(server, tmp_path):
    server.add_mailbox("alice@localhost")
    for i in range(3):
        server.core.maildirs.deliver_sync("alice@localhost", f"Subject: n{i}\r\n\r\nbody {i}\r\n".encode())
    out_dir = tmp_path / "fetched"
    out_dir.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 protocol pop3 port {server.pop3_port}\n'
        f'  user "alice@localhost" password "{PASSWORD}"\n'
        f'  sslproto "" \n'
        f'  mda "cat > {out_dir}/msg.$$$$"\n')
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path))
    res = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v", "--pidfile",
                          str(tmp_path / "fm.pid")], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    fetched = sorted(p.read_bytes() for p in out_dir.iterdir())
    assert len(fetched) == 3
    assert all(b"body " in f for f in fetched)
    assert server.maildir_files("alice@localhost") == []  # deleted at QUIT


def curl(url: str, *args: str) -> str:
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", f"alice@localhost:{PASSWORD}", url, *args],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


@needs("curl")
def test_curl_pop3_and_imap_on_one_mailbox_delete_in_one_gone_in_the_other(server):
    server.add_mailbox("alice@localhost")
    for subject in ("one", "two", "three"):
        server.call(server.core.maildirs.deliver_sync, "alice@localhost",
                    f"Subject: {subject}\r\n\r\n{subject}\r\n".encode())
    pop3, imap = f"pop3://127.0.0.1:{server.pop3_port}", f"imap://127.0.0.1:{server.imap_port}"
    # Deleted over IMAP: gone from POP3's listing.
    curl(f"{imap}/INBOX", "-X", "UID STORE 1 +FLAGS (\\Deleted)")
    curl(f"{imap}/INBOX", "-X", "EXPUNGE")
    assert len(curl(f"{pop3}/").splitlines()) == 2
    assert "Subject: two" in curl(f"{pop3}/1")
    # Deleted over POP3 (DELE, then curl's QUIT): gone from IMAP.
    curl(f"{pop3}/1", "-X", "DELE", "-I")
    assert curl(f"{imap}/INBOX", "-X", "UID SEARCH ALL").strip() == "* SEARCH 3"
    assert "Subject: three" in curl(f"{imap}/INBOX;UID=3")


@needs("fetchmail")
def test_fetchmail_keep_uidl_downloads_nothing_twice_across_a_restart(tmp_path):
    port = free_port()
    config = make_config(tmp_path / "data", pop3={"listen": [f"127.0.0.1:{port}"]})
    out_dir = tmp_path / "fetched"
    out_dir.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 protocol pop3 port {port} uidl\n'
                  f'  user "alice@localhost" password "{PASSWORD}" keep\n'
                  f'  sslproto "" \n'
                  f'  mda "cat > {out_dir}/msg.$$$$"\n')
    rc.chmod(0o600)

    def fetch() -> subprocess.CompletedProcess:
        return subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v", "--pidfile",
                               str(tmp_path / "fm.pid")], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, HOME=str(tmp_path)))

    def deliver(server: RunningServer, *subjects: str) -> None:
        for subject in subjects:
            server.call(server.core.maildirs.deliver_sync, "alice@localhost",
                        f"Subject: {subject}\r\n\r\n{subject}\r\n".encode())

    first = RunningServer(config).start()
    try:
        first.add_mailbox("alice@localhost")
        deliver(first, "one", "two")
        res = fetch()
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(list(out_dir.iterdir())) == 2
    finally:
        first.stop()
    second = RunningServer(config).start()      # a restart: same data directory, same UIDLs
    try:
        res = fetch()
        assert res.returncode == 1, res.stdout + res.stderr        # 1: no new mail
        deliver(second, "three")
        res = fetch()
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(second.maildir_files("alice@localhost")) == 3      # "keep": all still on the server
    finally:
        second.stop()
    fetched = sorted(message_from_bytes(p.read_bytes())["Subject"] for p in out_dir.iterdir())
    assert fetched == ["one", "three", "two"]
