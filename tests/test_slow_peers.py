"""Slow and greedy peers: timeouts, connection limits, and nobody stalling anybody.

Clients that drip, idle or never read are cut off on time and give their
connection slot back; many clients at once each get their message stored
exactly once; a remote MX that takes the TCP connection and then says nothing
delays only the mail for its own domain.
"""

from __future__ import annotations

import select
import smtplib
import socket
import threading
import time
from email import message_from_bytes

import pytest
from dnsworld import (
    DNSMASQ,
    MX_HOST_2,
    STANDARD_HOSTS,
    STANDARD_MX,
    DnsWorld,
    free_port,
)
from harness import RunningServer, make_config
from wire import Dialog, RawMX, SilentMX

from mailtui.events import Bounced, ConnectionClosed, Deferred, DeliveredRemote

pytestmark = pytest.mark.timeout(60)

SILENT_HOST = "127.0.0.5"


def start(tmp_path, **smtp) -> RunningServer:
    srv = RunningServer(make_config(tmp_path / "data", smtp={"listen": ["127.0.0.1:0"]} | smtp)).start()
    srv.add_client("loopback", "127.0.0.0/8")
    srv.add_mailbox("bob@localhost")
    return srv


@pytest.fixture
def quick(tmp_path):
    srv = start(tmp_path, idle_timeout=1.0, data_timeout=1.5)
    try:
        yield srv
    finally:
        srv.stop()


def closed_sessions(srv: RunningServer) -> list[ConnectionClosed]:
    return [e for e in srv.events_of(ConnectionClosed) if e.proto == "smtp"]


def test_dripping_a_command_line_does_not_keep_the_connection(quick):
    began = time.monotonic()
    with Dialog(quick.smtp_port) as c:
        c.sock.settimeout(5)
        reply = b""
        try:
            for byte in b"NOOP\r\n":              # 2.4 s for one line; the timeout is 1 s
                c.send(bytes([byte]))
                time.sleep(0.4)
        except OSError:
            pass
        reply = c.reply()
        assert reply.startswith(b"421 4.4.2"), reply
        assert c.closed(timeout=3)
    assert time.monotonic() - began < 3.5


def test_commands_in_time_keep_the_connection(quick):
    with Dialog(quick.smtp_port) as c:
        for _ in range(4):                          # 1.6 s in all, never 1 s idle
            time.sleep(0.4)
            assert c.cmd("NOOP").startswith(b"250")


def test_dripping_data_is_cut_off_and_nothing_stored(quick):
    began = time.monotonic()
    with Dialog(quick.smtp_port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        assert [c.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        c.send(b"Subject: slow\r\n\r\n")
        reply = b""
        for i in range(20):                         # a line every 0.3 s: never idle, never done
            try:
                c.send(b"line %d\r\n" % i)
            except OSError:
                break
            time.sleep(0.3)
            if select.select([c.sock], [], [], 0)[0]:
                reply = c.reply()
                break
        assert reply.startswith(b"421 4.4.2"), reply
    assert 1.4 < time.monotonic() - began < 3.5
    assert quick.maildir_files("bob@localhost") == []


def test_connection_limits_total_and_per_address(tmp_path):
    srv = start(tmp_path, max_connections=3, max_connections_per_ip=2)
    open_: list[Dialog] = []
    try:
        def connect(ip: str) -> Dialog:
            c = Dialog(srv.smtp_port, source=ip)
            open_.append(c)
            return c

        assert connect("127.0.0.2").greeting.startswith(b"220")
        assert connect("127.0.0.2").greeting.startswith(b"220")
        third = connect("127.0.0.2")
        assert third.greeting.startswith(b"421 4.7.0 Too many connections from [127.0.0.2]")
        assert third.closed()
        srv.wait_for(lambda: len(srv.core.smtp.sessions) == 2, what="the refused session to go")
        assert connect("127.0.0.3").greeting.startswith(b"220")       # 3 of 3
        over = connect("127.0.0.4")
        assert over.greeting.startswith(b"421 4.7.0 Too many connections")
        assert over.closed()
        open_[0].cmd("QUIT")
        srv.wait_for(lambda: len(srv.core.smtp.sessions) == 2, what="a slot to free up")
        assert connect("127.0.0.4").greeting.startswith(b"220")       # slots come back
        assert srv.core.smtp.per_ip == {"127.0.0.2": 1, "127.0.0.3": 1, "127.0.0.4": 1}
    finally:
        for c in open_:
            c.close()
        srv.stop()


def test_a_client_that_never_reads_stalls_nobody_and_loses_its_slot(tmp_path):
    # Long enough that the other session is served, on a loaded machine, well before
    # the hog's timeout: "stalls nobody" is then seen as order, not as a stopwatch.
    quick = start(tmp_path, idle_timeout=5.0, data_timeout=5.0)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(("127.0.0.1", quick.smtp_port))
    hog.settimeout(10)

    def stuff_it() -> None:
        try:
            for _ in range(200):
                hog.sendall(b"HELP\r\n" * 10_000)
        except OSError:
            pass

    thread = threading.Thread(target=stuff_it, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        began = time.monotonic()
        with Dialog(quick.smtp_port) as c:           # someone else is served meanwhile
            c.ehlo()
            c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
            [c.reply() for _ in range(3)]
            assert c.cmd(b"Subject: meanwhile\r\n\r\nx\r\n.").startswith(b"250")
        hog_dropped = [e for e in closed_sessions(quick) if "stopped reading" in e.result or "timeout" in e.result]
        assert not hog_dropped                          # served while the hog still held its connection
        # The hog is still connected, but the server has dropped it and freed its slot.
        quick.wait_for(lambda: any("stopped reading" in e.result or "timeout" in e.result
                                   for e in closed_sessions(quick)), timeout=15, what="the hog to be dropped")
        quick.wait_for(lambda: not quick.core.smtp.sessions and not quick.core.smtp.per_ip,
                       timeout=2, what="its slot to be freed")
    finally:
        hog.close()
        thread.join(10)
        quick.stop()


def test_many_concurrent_senders_each_stored_exactly_once(tmp_path):
    srv = start(tmp_path, max_connections_per_ip=40)
    senders, per_sender = 30, 3
    acked: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(senders)

    def send(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=20) as c:
                c.ehlo("sender.test")
                barrier.wait(10)
                for i in range(per_sender):
                    tag = f"s{n}-{i}"
                    rcpts = ["bob@localhost"] + ([f"far{n}@remote.test"] if i == 0 else [])
                    c.sendmail("a@remote.test", rcpts, f"Message-ID: <{tag}@test>\r\n\r\n{tag}\r\n")
                    acked.append(tag)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        assert not errors, errors[:3]
        assert len(acked) == senders * per_sender
        stored = [message_from_bytes(p.read_bytes())["Message-ID"] for p in srv.maildir_files("bob@localhost")]
        assert sorted(stored) == sorted(f"<{tag}@test>" for tag in acked)
        queued = srv.call(srv.core.queue.items)
        assert sorted(r.address for item in queued for r in item.recipients) == \
            sorted(f"far{n}@remote.test" for n in range(senders))
    finally:
        srv.stop()


# -- a remote MX that never answers -------------------------------------------------------

@pytest.fixture(scope="module")
def dns_world():
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    world = DnsWorld(mx=STANDARD_MX + (("silent.test", "quiet.silent.test", 10),),
                     hosts=STANDARD_HOSTS + (("quiet.silent.test", SILENT_HOST),)).start()
    try:
        yield world
    finally:
        world.close()


def test_a_silent_remote_mx_stalls_neither_the_queue_nor_local_delivery(tmp_path, dns_world):
    port = free_port(("127.0.0.1", "127.0.0.2", MX_HOST_2, SILENT_HOST))
    config = make_config(tmp_path / "data",
                         dns={"nameservers": [str(dns_world.endpoint)], "timeout": 1.0},
                         delivery={"remote_port": port, "retry_intervals": [0.5], "max_attempts": 50,
                                   "connect_timeout": 3.0, "command_timeout": 3.0, "max_per_domain": 4})
    with SilentMX(SILENT_HOST, port), RawMX(MX_HOST_2, port) as mx2:
        srv = RunningServer(config).start()
        try:
            srv.add_client("loopback", "127.0.0.0/8")
            srv.add_mailbox("bob@localhost")
            with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
                for i in range(4):
                    c.sendmail("a@remote.test", [f"u{i}@silent.test"], f"Subject: to silent {i}\r\n\r\nx\r\n")
                time.sleep(0.2)                       # the silent deliveries are under way
                began = time.monotonic()
                c.sendmail("a@remote.test", ["bob@localhost"], "Subject: local\r\n\r\nx\r\n")
                c.sendmail("a@remote.test", ["far@mx.test"], "Subject: remote\r\n\r\nx\r\n")
                assert time.monotonic() - began < 2.0
            assert len(srv.maildir_files("bob@localhost")) == 1
            # Not held up behind silent.test, whose hosts take 3 s each to give up on.
            [tx] = mx2.wait_for(1, timeout=max(0.1, 2.5 - (time.monotonic() - began)))
            assert tx.rcpts == ["far@mx.test"]
            deferred = srv.wait_for(lambda: {e.recipient for e in srv.events_of(Deferred)
                                             if e.recipient.endswith("@silent.test")} >= {
                                                 f"u{i}@silent.test" for i in range(4)},
                                    timeout=15, what="the silent deliveries to time out")
            assert deferred
            errors = {e.error for e in srv.events_of(Deferred)}
            assert any("timed out" in e or "timeout" in e for e in errors), errors
            assert not srv.events_of(Bounced)
            assert [e.recipient for e in srv.events_of(DeliveredRemote)] == ["far@mx.test"]
        finally:
            srv.stop()
