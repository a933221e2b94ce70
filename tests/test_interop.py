"""Real third-party clients against a real server: swaks (SMTP), curl and fetchmail (POP3)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from harness import PASSWORD

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
