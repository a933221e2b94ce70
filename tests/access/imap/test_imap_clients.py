"""Real IMAP clients against a real server: curl, mbsync, offlineimap, fetchmail, imapclient.

Each is skipped cleanly when the tool is not installed (``.ci/run`` installs
them). imapclient's own ``livetest`` suite runs whole; the only failures
allowed are the ones it also has against Dovecot (its test_fetch compares a
dataclass as a sequence, imaplib has no MOVE for the non-UID test) and its
socket-timeout checks, which depend on a 1 ms connect timeout failing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import PASSWORD, RunningServer

ALICE = "alice@localhost"
needs = lambda tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed")  # noqa: E731


def deliver(server: RunningServer, n: int, key: str = ALICE) -> None:
    for i in range(n):
        server.call(server.core.maildirs.deliver_sync, key,
                    f"From: bob@localhost\r\nSubject: note {i}\r\nMessage-ID: <n{i}@test>\r\n\r\nbody {i}\r\n".encode())


def curl(server: RunningServer, path: str, *extra: str) -> str:
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", f"{ALICE}:{PASSWORD}", *extra,
                          f"imap://127.0.0.1:{server.imap_port}/{path}"], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.decode()


@needs("curl")
def test_curl_list_select_fetch_append(server, tmp_path):
    server.add_mailbox(ALICE)
    deliver(server, 2)
    assert '"." INBOX' in curl(server, "") and '\\Sent) "." "Sent"' in curl(server, "")
    assert "* 2 EXISTS" in curl(server, "INBOX", "-X", "EXAMINE INBOX")
    assert curl(server, "INBOX;UID=2").endswith("body 1\r\n")
    assert curl(server, "INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)").startswith("Subject: note 0")
    upload = tmp_path / "msg.eml"
    upload.write_bytes(b"From: me@localhost\r\nSubject: uploaded\r\n\r\nvia curl -T\r\n")
    curl(server, "Drafts", "-T", str(upload))
    assert "uploaded" in curl(server, "Drafts;UID=1")
    assert curl(server, "INBOX?SUBJECT%20%22note%201%22").strip() == "* SEARCH 2"


def mbsync_config(server: RunningServer, local: Path) -> str:
    return f"""\
IMAPAccount mt
Host 127.0.0.1
Port {server.imap_port}
User {ALICE}
Pass "{PASSWORD}"
SSLType None
AuthMechs PLAIN

IMAPStore remote
Account mt

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
"""


def run_mbsync(config: Path, home: Path) -> None:
    res = subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, HOME=str(home)))
    assert res.returncode == 0, res.stdout + res.stderr


@needs("mbsync")
def test_mbsync_two_way_sync_pushes_flags_and_deletions_back(server, tmp_path):
    server.add_mailbox(ALICE)
    deliver(server, 5)
    local = tmp_path / "mail"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(mbsync_config(server, local))
    run_mbsync(config, tmp_path)
    pulled = sorted((local / "INBOX" / "cur").iterdir()) + sorted((local / "INBOX" / "new").iterdir())
    assert len(pulled) == 5 and (local / "Sent").is_dir()
    # Locally: mark one seen, delete another (T + expunge), file a new one into Drafts.
    first, second = sorted(pulled)[:2]
    os.rename(first, first.parent.parent / "cur" / (first.name.split(":")[0] + ":2,S"))
    second.unlink()
    (local / "Drafts" / "cur" / "1.local:2,D").write_bytes(b"Subject: draft\r\n\r\nlocal draft\r\n")
    run_mbsync(config, tmp_path)
    server.call(lambda: None)
    import imaplib
    m = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=5)
    m.login(ALICE, PASSWORD)
    m.select("INBOX")
    flags = m.fetch("1:*", "(FLAGS)")[1]
    assert len(flags) == 4 and sum(b"\\Seen" in f for f in flags) == 1
    m.select("Drafts")
    assert m.fetch("1", "(BODY.PEEK[TEXT] FLAGS)")[1][0][1] == b"local draft\r\n"
    m.logout()


@needs("offlineimap")
def test_offlineimap_syncs_both_ways(server, tmp_path):
    server.add_mailbox(ALICE)
    deliver(server, 3)
    local = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""\
[general]
accounts = mt
metadata = {tmp_path}/meta

[Account mt]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.imap_port}
remoteuser = {ALICE}
remotepass = {PASSWORD}
ssl = no
starttls = no
""")
    command = ["offlineimap", "-c", str(rc), "-o", "-u", "basic"]
    res = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    assert res.returncode == 0, res.stdout + res.stderr
    inbox = local / "INBOX"
    files = list((inbox / "cur").iterdir()) + list((inbox / "new").iterdir())
    assert len(files) == 3
    victim = files[0]
    os.rename(victim, victim.with_name(victim.name.split(":2,")[0] + ":2,FS"))
    res = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    assert res.returncode == 0, res.stdout + res.stderr
    flagged = [p for p in server.maildir_files(ALICE) if p.name.endswith(":2,FS")]
    assert len(flagged) == 1


@needs("fetchmail")
def test_fetchmail_over_imap(server, tmp_path):
    server.add_mailbox(ALICE)
    deliver(server, 3)
    out_dir = tmp_path / "fetched"
    out_dir.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 protocol imap port {server.imap_port}\n'
                  f'  user "{ALICE}" password "{PASSWORD}"\n'
                  f'  sslproto "" \n'
                  f'  mda "cat > {out_dir}/msg.$$$$"\n')
    rc.chmod(0o600)
    res = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v", "--pidfile",
                          str(tmp_path / "fm.pid")], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, HOME=str(tmp_path)))
    assert res.returncode == 0, res.stdout + res.stderr
    fetched = sorted(p.read_bytes() for p in out_dir.iterdir())
    assert len(fetched) == 3 and all(b"body " in f for f in fetched)
    assert server.maildir_files(ALICE) == []          # fetchmail flags \Deleted and expunges


# Failures imapclient's livetest also has against Dovecot, or that depend on timing, not the server.
LIVETEST_CLIENT_BUGS = {
    "test_fetch",                          # compares its Envelope dataclass with assertSequenceEqual
    "test_move",                           # non-UID MOVE goes through imaplib, which has no MOVE
    "test_small_connection_timeout_fail",  # expects a 1 ms connect to loopback to time out
    "test_small_read_timeout_fail",        # expects a 10 µs read timeout to fire
}


def test_imapclient_livetest(server, tmp_path):
    pytest.importorskip("imapclient")
    server.add_mailbox(ALICE)
    ini = tmp_path / "livetest.ini"
    ini.write_text(f"[DEFAULT]\nhost = 127.0.0.1\nport = {server.imap_port}\nssl = false\n"
                   f"username = {ALICE}\npassword = {PASSWORD}\ntimeout = 10\n")
    res = subprocess.run([sys.executable, "-m", "imapclient.livetest", str(ini)], capture_output=True, text=True,
                         timeout=300)
    ran = re.search(r"^Ran (\d+) tests", res.stderr, re.M)
    assert ran and int(ran.group(1)) >= 50, res.stderr[-3000:]
    failed = set(re.findall(r"^(?:FAIL|ERROR): (\w+)", res.stderr, re.M))
    assert failed <= LIVETEST_CLIENT_BUGS, res.stderr[-6000:]
    assert "test_namespace" not in re.findall(r"^(\w+) .* skipped", res.stderr, re.M)
