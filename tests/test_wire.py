"""The one home of each small wire helper: replies, CRLF, scrubbing, endpoints."""

from __future__ import annotations

import pytest

from mailtui.admin.throttle import MAX_DELAY, LoginThrottle
from mailtui.replies import enhanced_status
from mailtui.wire import header_section, hostport, is_loopback, normalize_crlf, peer_ip, peer_of, printable


@pytest.mark.parametrize("code, message, status", [
    (550, "5.1.1 no such user", "5.1.1"),
    (550, "no such user", "5.0.0"),
    (451, "4.7.1 greylisted", "4.7.1"),
    (451, "5.7.1 mismatched class", "4.0.0"),
    (250, "2.0.0 Ok: queued", "2.0.0"),
    (421, "", "4.0.0"),
])
def test_enhanced_status(code, message, status):
    assert enhanced_status(code, message) == status


@pytest.mark.parametrize("raw, wire", [
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\r\nb", b"a\r\nb\r\n"),
    (b"a\rb\r\n", b"a\r\nb\r\n"),
    (b"a\r\n\nb\n", b"a\r\n\r\nb\r\n"),
])
def test_normalize_crlf(raw, wire):
    assert normalize_crlf(raw, final=True) == wire



def test_normalize_crlf_leaves_the_end_alone_unless_asked():
    assert normalize_crlf(b"a\nb") == b"a\r\nb"
    assert normalize_crlf(b"a\r\nb\r\n") == b"a\r\nb\r\n"


@pytest.mark.parametrize("text, shown, kept", [
    ("plain", "plain", "plain"),
    ("bell\x07", "bell?", "bell?"),
    ("two\nlines\tok", "two?lines?ok", "two\nlines\tok"),
    ("esc\x1b[31m", "esc?[31m", "esc?[31m"),
    ("c1\x9b", "c1?", "c1?"),
    ("bad\udcff", "bad?", "bad?"),
])
def test_printable(text, shown, kept):
    assert printable(text) == shown
    assert printable(text, keep_lines=True) == kept


@pytest.mark.parametrize("message, head", [
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2"),
    (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2"),
    (b"A: 1\r\n", b"A: 1"),
])
def test_header_section(message, head):
    assert header_section(message) == head


def test_header_section_cuts_huge_headers_at_a_line():
    message = b"X: " + b"y" * 70 + b"\r\n"
    head = header_section(message * 2000)
    assert len(head) <= 64 * 1024 and head.endswith(b"y") and b"\r\n\r\n" not in head


def test_hostport_and_peer_of():
    assert hostport("192.0.2.1", 25) == "192.0.2.1:25"
    assert hostport("::1", 25) == "[::1]:25"
    assert peer_of(("::1", 1100, 0, 0)) == ("::1", "[::1]:1100")
    assert peer_of(None) == ("?", "?")


@pytest.mark.parametrize("ip, loopback", [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("192.0.2.1", False), ("10.0.0.1", False), ("::ffff:192.0.2.1", False), ("2001:db8::1", False),
    ("::", False), ("0.0.0.0", False), ("fe80::1%lo", False), ("?", False), ("", False), ("localhost", False),
])
def test_is_loopback(ip, loopback):
    assert is_loopback(ip) is loopback


@pytest.mark.parametrize("ip, address", [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),        # an IPv4 peer on a dual-stack socket
    ("fe80::1%eth0", "fe80::1"),              # the scope of a link-local peer
    ("2001:db8::1", "2001:db8::1"),
    ("not an address", None),
    ("", None),
])
def test_peer_ip(ip, address):
    found = peer_ip(ip)
    assert (str(found) if found is not None else None) == address


def test_login_throttle_doubles_up_to_a_cap_and_forgets():
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    assert throttle.delay("192.0.2.1", 1.0) == 0.0
    assert [throttle.failed("192.0.2.1") for _ in range(3)] == [1, 2, 3]
    assert throttle.delay("192.0.2.1", 1.0) == 4.0
    assert throttle.delay("192.0.2.2", 1.0) == 0.0       # per IP
    for _ in range(10):
        throttle.failed("192.0.2.1")
    assert throttle.delay("192.0.2.1", 1.0) == MAX_DELAY
    now[0] += 901
    assert throttle.recent("192.0.2.1") == 0 and throttle.delay("192.0.2.1", 1.0) == 0.0
    throttle.failed("192.0.2.1")
    throttle.succeeded("192.0.2.1")
    assert throttle.recent("192.0.2.1") == 0
