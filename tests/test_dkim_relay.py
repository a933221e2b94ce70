"""DKIM signing at intake: relayed mail leaves signed once, and verifies with dkimpy's own verifier.

A real mailtui relays for 127.0.0.1 through a dnsmasq world that publishes
the server's own DKIM record (the key is made in the data directory before
the server starts, as ``mailtui dns`` would); a FakeMX on 127.0.0.2 is the
remote host. What arrives there is checked by ``dkim.verify`` with its DNS
answers from dnsmasq.
"""

from __future__ import annotations

import re
import smtplib
import time

import dkim
import dns.resolver
import pytest
from dnsworld import DNSMASQ, DnsWorld, FakeMX, free_port
from harness import RunningServer, make_config

from mailtui.events import Deferred, DeliveredRemote, Notice, Queued
from mailtui.mailauth.dkimkeys import RECHECK, DkimKeys
from mailtui.mailauth import workers

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed")]

REMOTE = "127.0.0.2"
SIGNATURE = re.compile(rb"^DKIM-Signature:.*?\r\n(?![ \t])", re.MULTILINE | re.DOTALL | re.IGNORECASE)


def message(sender: str, subject: str) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: carol@remote.test\r\nSubject: {subject}\r\n"
            f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello Carol,\r\n\r\n"
            "  two spaces, a trailing one \r\n.dot-stuffed line\r\n").encode()


@pytest.fixture
def relay(tmp_path):
    """(server, remote MX, DNS world): the server's key for example.test is published before it starts."""
    data_dir = tmp_path / "data"
    key = DkimKeys(data_dir).active("example.test")
    world = DnsWorld(mx=(("remote.test", "mx.remote.test", 10),), hosts=(("mx.remote.test", REMOTE),),
                     null_mx=(), txt=((key.record_name, key.record),)).start()
    port = free_port((REMOTE,))
    srv = RunningServer(make_config(data_dir, dns={"nameservers": [str(world.endpoint)]},
                                    delivery={"remote_port": port, "retry_intervals": [0.3],
                                              "retry_jitter": 0.0})).start()
    srv.add_client("loopback", "127.0.0.1/32")
    srv.add_mailbox("bob@example.test")
    mx = FakeMX(REMOTE, port)
    srv.run(mx.start())
    try:
        yield srv, mx, world
    finally:
        srv.run(mx.stop())
        srv.stop()
        world.close()


def send(srv: RunningServer, sender: str, rcpts: list[str], raw: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=10) as client:
        client.sendmail(sender, rcpts, raw)
        return client.noop()[1].decode()


def verifier(world: DnsWorld):
    plain = dns.resolver.Resolver(configure=False)
    plain.nameservers, plain.port = ["127.0.0.1"], world.port

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:   # dkimpy asks; dnsmasq answers
        answer = plain.resolve(name.decode(), "TXT", lifetime=2)
        return b"".join(answer[0].strings)

    return lambda content: dkim.verify(content, dnsfunc=dnsfunc)


def signatures(content: bytes) -> list[bytes]:
    head = content.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return SIGNATURE.findall(head)


def test_relayed_mail_from_a_local_domain_verifies_at_the_remote_host(relay):
    srv, mx, world = relay
    send(srv, "alice@example.test", ["carol@remote.test"], message("alice@example.test", "first"))
    srv.wait_for(lambda: mx.messages, timeout=10, what="the delivery")
    content = mx.messages[0].content
    [field] = signatures(content)
    assert content.startswith(b"DKIM-Signature:")              # on top, above our Received header
    compact = re.sub(rb"\s+", b"", field)
    for tag in (b"a=rsa-sha256;", b"c=relaxed/relaxed;", b"d=example.test;", b"s=mailtui;"):
        assert tag in compact
    assert verifier(world)(content)
    assert not verifier(world)(content.replace(b"Hello Carol", b"Hello Carl"))


def test_a_large_message_is_signed_in_a_thread_and_verifies(relay, monkeypatch):
    srv, mx, world = relay
    jobs: list = []
    pool = workers._pool
    monkeypatch.setattr(workers, "_pool", type("Spy", (), {
        "submit": lambda self, fn, *args: jobs.append(fn) or pool.submit(fn, *args)})())
    raw = message("alice@example.test", "large").replace(b"Hello Carol,", b"Hello Carol," + b"\r\nla la la" * 8000)
    assert len(raw) > workers.INLINE_MAX
    send(srv, "alice@example.test", ["carol@remote.test"], raw)
    send(srv, "alice@example.test", ["carol@remote.test"], message("alice@example.test", "small"))
    srv.wait_for(lambda: len(mx.messages) == 2, timeout=10, what="the deliveries")
    assert [fn.__name__ for fn in jobs] == ["sign"]                 # the large one; the small one on the loop
    for received in mx.messages:
        assert len(signatures(received.content)) == 1 and verifier(world)(received.content)


def test_signed_once_when_queued_never_again_per_attempt(relay):
    srv, mx, world = relay
    mx.handler.rules = {"carol": "451 4.2.0 mailbox busy, try again later"}
    send(srv, "alice@example.test", ["carol@remote.test"], message("alice@example.test", "deferred"))
    [queued] = srv.wait_for(lambda: srv.events_of(Queued), what="the queue entry")
    srv.wait_for(lambda: srv.events_of(Deferred), timeout=10, what="the first attempt's deferral")
    spooled = srv.core.queue.read_body(queued.msg_id)
    assert queued.size == len(spooled)
    mx.handler.rules = {}
    srv.wait_for(lambda: srv.events_of(DeliveredRemote), timeout=10, what="the delivery")
    content = mx.messages[0].content
    assert len(srv.events_of(Deferred)) >= 1
    assert signatures(content) == signatures(spooled) and len(signatures(content)) == 1
    assert content == spooled
    assert verifier(world)(content)


def test_a_rotation_by_another_process_signs_from_then_on(relay):
    srv, mx, world = relay
    send(srv, "alice@example.test", ["carol@remote.test"], message("alice@example.test", "before"))
    new = DkimKeys(srv.data_dir).rotate("example.test")           # as `mailtui dkim rotate` does
    time.sleep(RECHECK + 0.1)
    send(srv, "alice@example.test", ["carol@remote.test"], message("alice@example.test", "after"))
    srv.wait_for(lambda: len(mx.messages) == 2, timeout=10, what="both deliveries")
    selectors = [re.search(rb"s=([\w-]+);", re.sub(rb"\s+", b"", signatures(m.content)[0])).group(1).decode()
                 for m in mx.messages]
    assert selectors == ["mailtui", new.selector]


def test_what_is_not_ours_or_stays_here_is_not_signed(relay):
    srv, mx, world = relay
    # A registered client relaying someone else's mail: no key of ours can sign for it.
    send(srv, "x@elsewhere.test", ["carol@remote.test"], message("x@elsewhere.test", "foreign"))
    # Local and remote recipients: the local copy is stored as received, the remote one signed.
    send(srv, "alice@example.test", ["bob@example.test", "carol@remote.test"],
         message("alice@example.test", "mixed"))
    srv.wait_for(lambda: len(mx.messages) == 2, timeout=10, what="both deliveries")
    by_subject = {m.content.split(b"Subject: ")[1].split(b"\r\n")[0]: m.content for m in mx.messages}
    assert signatures(by_subject[b"foreign"]) == []
    assert len(signatures(by_subject[b"mixed"])) == 1 and verifier(world)(by_subject[b"mixed"])
    [local] = srv.maildir_files("bob@example.test")
    assert signatures(local.read_bytes()) == []


def test_keys_are_made_at_first_start_for_every_local_domain_but_localhost(tmp_path):
    srv = RunningServer(make_config(tmp_path / "data")).start()
    try:
        key = tmp_path / "data" / "dkim" / "example.test" / "mailtui.pem"
        assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
        assert not (tmp_path / "data" / "dkim" / "localhost").exists()
    finally:
        srv.stop()


def test_an_unreadable_key_refuses_relayed_mail_with_451_and_local_mail_still_arrives(tmp_path):
    folder = tmp_path / "data" / "dkim" / "example.test"
    folder.mkdir(parents=True)
    (folder / "mailtui.pem").write_bytes(b"not a key")
    (folder / "active").write_bytes(b"mailtui\n")
    srv = RunningServer(make_config(tmp_path / "data")).start()
    try:
        assert any("DKIM key" in e.text for e in srv.events_of(Notice))
        srv.add_client("loopback", "127.0.0.1/32")
        srv.add_mailbox("bob@example.test")
        for n in range(2):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(srv, "alice@example.test", ["carol@remote.test"], message("alice@example.test", f"nokey{n}"))
            assert refused.value.smtp_code == 451 and b"DKIM" in refused.value.smtp_error
        assert len([e for e in srv.events_of(Notice) if "DKIM signing failed" in e.text]) == 1   # not one a message
        assert len(srv.core.queue) == 0 and not list((srv.data_dir / "spool").glob("*.msg"))
        send(srv, "alice@example.test", ["bob@example.test"], message("alice@example.test", "local"))
        assert len(srv.maildir_files("bob@example.test")) == 1
    finally:
        srv.stop()
