"""Sender authentication on the DATA path: real SMTP from loopback peers, real DNS (dnsmasq).

mailtui runs in its MX role with the auth world of tests/authworld.py as its
DNS. Messages come over smtplib from unregistered loopback addresses
(127.0.0.10 is allowed by the test domains' SPF records, 127.0.0.66 by
none), signed by the test with its own keys; what is judged is the copy in
the Maildir.
"""

from __future__ import annotations

import imaplib
import smtplib
import threading
import time
from email import message_from_bytes

import pytest
from authworld import BAD_IP, GOOD_IP, HOSTNAME, keys_fixture, message, signed, world_fixture  # noqa: F401 (the fixtures)
from harness import PASSWORD, RunningServer, make_config, tls_context

from mailtui.events import ClientRefused
from mailtui.mailauth.workers import INLINE_MAX

pytestmark = pytest.mark.timeout(60)

BOB = "bob@example.test"          # reads over POP3: has no Junk folder
CAROL = "carol@example.test"      # uses IMAP: has one
CHECK_TIMEOUT = 3.0


def start_mx(data_dir, world, dns_timeout: float = 1.0, **sections) -> RunningServer:
    config = make_config(data_dir, server={"hostname": HOSTNAME, "data_dir": str(data_dir),
                                           "local_domains": ["localhost", "example.test"]},
                         policy={"accept_unregistered_for_local": True},
                         dns={"nameservers": [str(world.endpoint)], "timeout": dns_timeout}, **sections)
    srv = RunningServer(config).start()
    srv.add_mailbox(BOB)
    srv.add_mailbox(CAROL)
    srv.add_mailbox("alice@example.test")
    return srv


@pytest.fixture(scope="module")
def mx(tmp_path_factory, world):
    srv = start_mx(tmp_path_factory.mktemp("mx") / "data", world, auth={"check_timeout": CHECK_TIMEOUT})
    try:
        yield srv
    finally:
        srv.stop()


def send(srv: RunningServer, raw: bytes, sender: str, *, ip: str = BAD_IP, helo: str = "client.test",
         login: str = "", rcpt: str = BOB) -> None:
    """One message over SMTP from ``ip``; raises what smtplib raises for a refusal."""
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname=helo, source_address=(ip, 0),
                      timeout=20) as client:
        if login:
            client.starttls(context=tls_context())
            client.login(login, PASSWORD)
        client.sendmail(sender, [rcpt], raw)


def stored(srv: RunningServer, raw: bytes, box: str = BOB) -> bytes | None:
    """The INBOX copy of ``raw`` (found by its Message-ID), or None."""
    msg_id = message_from_bytes(raw)["Message-ID"].encode()
    for path in srv.maildir_files(box):
        data = path.read_bytes()
        if msg_id in data:
            return data
    return None


def headers(data: bytes, name: str) -> list[str]:
    return [" ".join(v.split()) for v in message_from_bytes(data).get_all(name, [])]


def results_of(data: bytes) -> str:
    [field] = headers(data, "Authentication-Results")
    return field


def arrive(srv, raw, sender, **kw) -> bytes:
    send(srv, raw, sender, **kw)
    data = stored(srv, raw)
    assert data is not None
    return data


# -- what the header says ----------------------------------------------------------------------

@pytest.mark.parametrize("sender, ip, spf", [
    ("alice@pass.test", GOOD_IP, "spf=pass smtp.mailfrom=alice@pass.test"),
    ("alice@fail.test", GOOD_IP, "spf=fail"),
    ("alice@soft.test", GOOD_IP, "spf=softfail"),
    ("alice@neutral.test", GOOD_IP, "spf=neutral"),
    ("alice@nothing.test", GOOD_IP, "spf=none"),
])
def test_spf_results_reach_the_stored_copy(mx, sender, ip, spf):
    raw = message(sender)
    data = arrive(mx, raw, sender, ip=ip)
    field = results_of(data)
    assert field.startswith(f"{HOSTNAME}; ") and spf in field
    assert "dkim=none" in field and "dmarc=none" in field          # all three, always
    # Our Received header first, then our results, then the message as sent.
    assert data.index(b"Received: from client.test") < data.index(b"Authentication-Results:") < data.index(b"From:")


def test_a_signature_made_by_the_sender_passes_and_dmarc_rests_on_it(mx, keys):
    raw = signed(keys, "signed.test", sender="alice@signed.test")
    field = results_of(arrive(mx, raw, "alice@signed.test"))           # signed.test's SPF is -all
    assert "spf=fail" in field
    assert "dkim=pass header.d=signed.test header.s=mailtui" in field
    assert "dmarc=pass (p=reject dis=none) header.from=signed.test" in field


def test_a_large_signed_message_is_verified_in_a_thread_and_passes(mx, keys):
    body = b"".join(b"line %d of a long letter  \r\n" % n for n in range(3000))     # 90 KiB
    raw = signed(keys, "signed.test", sender="alice@signed.test", body=body)
    assert len(raw) > INLINE_MAX
    field = results_of(arrive(mx, raw, "alice@signed.test"))
    assert "dkim=pass header.d=signed.test" in field and "dmarc=pass" in field


def test_a_changed_signed_message_fails_dkim_and_quarantine_tags_it_in_inbox_without_junk(mx, keys):
    raw = signed(keys, "quarantine.test", sender="alice@quarantine.test").replace(b"bye", b"BYE")
    data = arrive(mx, raw, "alice@quarantine.test")
    field = results_of(data)
    assert "dkim=fail" in field and "header.d=quarantine.test" in field
    assert "dmarc=fail (p=quarantine dis=quarantine)" in field
    assert headers(data, "X-Mailtui-Quarantine") == ["dmarc=fail policy=quarantine header.from=quarantine.test"]


def test_quarantine_files_in_junk_once_imap_made_it(mx, keys):
    with imaplib.IMAP4("127.0.0.1", mx.imap_port, timeout=10) as imap:
        imap.login(CAROL, PASSWORD)                       # the first login makes Sent, Drafts, Trash, Junk
        raw = signed(keys, "quarantine.test", sender="alice@quarantine.test").replace(b"bye", b"BYE")
        send(mx, raw, "alice@quarantine.test", rcpt=CAROL)
        assert stored(mx, raw, CAROL) is None             # not in INBOX
        assert imap.select("Junk")[1] == [b"1"]
        _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (X-Mailtui-Quarantine Message-ID)])")
        assert b"dmarc=fail policy=quarantine" in data[0][1]
        assert message_from_bytes(raw)["Message-ID"].encode() in data[0][1]
        imap.logout()


def test_the_null_sender_is_checked_on_its_helo_name(mx):
    raw = message("mailer-daemon@pass.test")
    field = results_of(arrive(mx, raw, "", ip=GOOD_IP, helo="pass.test"))
    assert "spf=pass smtp.helo=pass.test" in field


def test_dmarc_reject_is_550_at_data_and_nothing_is_stored(mx):
    raw = message("alice@reject.test")
    before = len(mx.events_of(ClientRefused))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(mx, raw, "alice@reject.test", ip=BAD_IP)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ") and b"reject.test" in refused.value.smtp_error
    assert stored(mx, raw) is None
    refusal = mx.events_of(ClientRefused)[before]
    assert refusal.stage == "data" and refusal.reply.startswith("550 5.7.1")
    # The same domain's mail from an address its SPF allows passes.
    assert "dmarc=pass" in results_of(arrive(mx, message("alice@reject.test"), "alice@reject.test", ip=GOOD_IP))


# -- forged results --------------------------------------------------------------------------

def test_a_forged_result_claiming_our_name_is_removed_and_others_kept(mx):
    forged = (f"Authentication-Results: {HOSTNAME.upper()}.; dmarc=pass header.from=reject.test\r\n"
              f"Authentication-Results: (comment) {HOSTNAME};\r\n\tspf=pass\r\n"
              "Authentication-Results: other.test; spf=pass smtp.mailfrom=alice@pass.test\r\n").encode()
    raw = message("alice@pass.test", extra=forged)
    data = arrive(mx, raw, "alice@pass.test", ip=GOOD_IP)
    fields = headers(data, "Authentication-Results")
    assert len(fields) == 2
    assert fields[0].startswith(f"{HOSTNAME}; spf=pass")
    assert fields[1] == "other.test; spf=pass smtp.mailfrom=alice@pass.test"
    assert b"header.from=reject.test" not in data


def test_with_checks_off_forged_results_are_still_removed_and_none_added(tmp_path, world):
    srv = start_mx(tmp_path / "data", world, auth={"check_inbound": False})
    try:
        raw = message("alice@reject.test", extra=f"Authentication-Results: {HOSTNAME}; dmarc=pass\r\n".encode())
        data = arrive(srv, raw, "alice@reject.test", ip=BAD_IP)      # DMARC would have rejected it
        assert headers(data, "Authentication-Results") == []
        assert not any(e.purpose in ("SPF", "DKIM", "DMARC") for e in srv.events if hasattr(e, "purpose"))
    finally:
        srv.stop()


# -- who is not checked ------------------------------------------------------------------------

def test_a_registered_client_is_not_checked(mx):
    mx.add_client("lab", "127.0.0.20/32")
    ours = f"Authentication-Results: {HOSTNAME}; dmarc=pass\r\n".encode()
    raw = message("alice@reject.test", extra=ours)
    data = arrive(mx, raw, "alice@reject.test", ip="127.0.0.20")      # would fail DMARC p=reject
    assert headers(data, "Authentication-Results") == [f"{HOSTNAME}; dmarc=pass"]   # inside the boundary: kept


def test_an_authenticated_user_is_not_checked(mx):
    raw = message("alice@example.test")
    data = arrive(mx, raw, "alice@example.test", ip=BAD_IP, login="alice@example.test")
    assert headers(data, "Authentication-Results") == []
    assert b"with ESMTPSA" in data


# -- a DNS that does not answer ----------------------------------------------------------------

def test_a_dns_that_never_answers_gives_temperror_within_the_bound_and_the_loop_runs_on(mx):
    raw = message("alice@spf.slow.test")
    other: dict[str, float] = {}

    def meanwhile():                           # another session while the checks wait on the DNS
        time.sleep(0.3)
        start = time.monotonic()
        with smtplib.SMTP("127.0.0.1", mx.smtp_port, timeout=5) as client:
            client.ehlo("other.test")
            client.noop()
        other["took"] = time.monotonic() - start

    thread = threading.Thread(target=meanwhile)
    thread.start()
    start = time.monotonic()
    data = arrive(mx, raw, "alice@spf.slow.test", ip=GOOD_IP)
    took = time.monotonic() - start
    thread.join(10)
    field = results_of(data)
    assert "spf=temperror" in field and "dmarc=temperror" in field and "dkim=none" in field
    assert 0.9 < took < CHECK_TIMEOUT + 1.5
    assert other["took"] < 0.5


def test_the_check_timeout_bounds_a_dns_slower_than_it(tmp_path, world):
    srv = start_mx(tmp_path / "data", world, dns_timeout=8.0, auth={"check_timeout": 1.0})
    try:
        raw = message("alice@spf.slow.test")
        start = time.monotonic()
        data = arrive(srv, raw, "alice@spf.slow.test", ip=GOOD_IP)
        assert time.monotonic() - start < 1.0 + 1.5
        field = results_of(data)
        assert "spf=temperror" in field and "dmarc=temperror" in field
    finally:
        srv.stop()
