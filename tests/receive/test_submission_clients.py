"""Real mail clients on both submission ports: swaks (STARTTLS and implicit TLS, PLAIN and LOGIN)
and aiosmtplib, the way Thunderbird-style settings use them: full address as username."""

from __future__ import annotations

import shutil
import subprocess
from email.message import EmailMessage

import aiosmtplib
import pytest
from harness import PASSWORD, SUBMISSION, RunningServer, make_config, tls_context

pytestmark = pytest.mark.timeout(60)
needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")


@pytest.fixture(scope="module")
def sub(tmp_path_factory):
    """One server for the module: submission on both ports, remote mail kept in the queue."""
    config = make_config(tmp_path_factory.mktemp("submission") / "data", submission=SUBMISSION,
                         delivery={"retry_intervals": [3600]})
    srv = RunningServer(config).start()
    srv.add_client("loopback", "127.0.0.0/8")
    for box in ("alice@localhost", "bob@example.test"):
        srv.add_mailbox(box)
    try:
        yield srv
    finally:
        srv.stop()


def swaks(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "swaks.test",
                           "--timeout", "10", *args], capture_output=True, text=True, timeout=30)


def as_alice(mechanism: str) -> list[str]:
    return ["--auth", mechanism, "--auth-user", "alice@localhost", "--auth-password", PASSWORD]


@needs_swaks
@pytest.mark.parametrize("tls, port_of, mechanism", [
    ("--tls", "submission_port", "PLAIN"),
    ("--tls", "submission_port", "LOGIN"),
    ("--tlsc", "submissions_port", "PLAIN"),
    ("--tlsc", "submissions_port", "LOGIN"),
])
def test_swaks_sends_on_both_ports(sub, tls, port_of, mechanism):
    before = len(sub.maildir_files("bob@example.test"))
    subject = f"swaks {tls} {mechanism}"
    res = swaks(getattr(sub, port_of), tls, *as_alice(mechanism), "--from", "alice@localhost",
                "--to", "bob@example.test", "--header", f"Subject: {subject}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "250 2.0.0 OK: queued as" in res.stdout
    files = sub.maildir_files("bob@example.test")
    assert len(files) == before + 1
    data = max(files, key=lambda p: p.stat().st_mtime_ns).read_bytes()
    assert subject.encode() in data and b"with ESMTPSA id" in data


@needs_swaks
@pytest.mark.parametrize("tls, port_of", [("--tls", "submission_port"), ("--tlsc", "submissions_port")])
def test_swaks_wrong_sender_is_553_and_no_auth_is_530(sub, tls, port_of):
    port = getattr(sub, port_of)
    wrong = swaks(port, tls, *as_alice("PLAIN"), "--from", "bob@example.test", "--to", "bob@example.test")
    assert wrong.returncode == 23       # swaks: "error in MAIL transaction"
    assert "553 5.7.1 Sender <bob@example.test> is not owned by alice@localhost" in wrong.stdout
    anonymous = swaks(port, tls, "--from", "alice@localhost", "--to", "bob@example.test")
    assert anonymous.returncode == 23 and "530 5.7.0 Authentication required" in anonymous.stdout


@needs_swaks
def test_swaks_auth_without_starttls_finds_no_auth_offered(sub):
    """On the plain port a client that skips STARTTLS is never asked for its password."""
    res = swaks(sub.submission_port, *as_alice("PLAIN"), "--from", "alice@localhost", "--to", "bob@example.test")
    assert res.returncode == 28, res.stdout      # swaks: "error in AUTH transaction"
    assert "250-STARTTLS" in res.stdout and "250-AUTH" not in res.stdout
    assert "AUTH PLAIN" not in res.stdout        # nothing of the password went out


@needs_swaks
def test_swaks_remote_recipient_is_queued(sub):
    res = swaks(sub.submissions_port, "--tlsc", *as_alice("PLAIN"), "--from", "alice@localhost",
                "--to", "friend@elsewhere.test")
    assert res.returncode == 0, res.stdout + res.stderr
    queued = [item for item in sub.call(sub.core.queue.items) if item.sender == "alice@localhost"]
    assert [r.address for item in queued for r in item.recipients] == ["friend@elsewhere.test"]


def message(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@localhost", "bob@example.test", subject
    msg.set_content("sent by aiosmtplib\n")
    return msg


@pytest.mark.parametrize("port_of, tls", [("submission_port", {"start_tls": True}),
                                          ("submissions_port", {"use_tls": True})],
                         ids=["587 STARTTLS", "465 implicit TLS"])
async def test_aiosmtplib_on_both_ports(sub, port_of, tls):
    subject = f"aiosmtplib {port_of}"
    errors, reply = await aiosmtplib.send(message(subject), hostname="127.0.0.1", port=getattr(sub, port_of),
                                          username="alice@localhost", password=PASSWORD,
                                          tls_context=tls_context(), timeout=10, **tls)
    assert errors == {} and reply.startswith("2.0.0 OK: queued as")
    assert any(subject.encode() in p.read_bytes() for p in sub.maildir_files("bob@example.test"))


async def test_aiosmtplib_without_login_is_refused(sub):
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await aiosmtplib.send(message("no login"), hostname="127.0.0.1", port=sub.submissions_port,
                              use_tls=True, tls_context=tls_context(), timeout=10)
    assert refused.value.code == 530
