"""After DATA (mailtui.receive.message): unstuffing, protocol checks, the check seam, our Received header."""

from __future__ import annotations

import re

import pytest

from mailtui.receive.message import (
    LINE_TOO_LONG,
    MAIL_LOOP,
    Arrival,
    Verdict,
    has_long_line,
    protocol_refusal,
    received_header,
    run_checks,
    unstuff_and_normalise,
    with_protocol,
)
from mailtui.receive.policy import Peer
from mailtui.replies import SmtpReply


@pytest.mark.parametrize("raw, body", [
    (b"", b""),
    (b"..x\r\n", b".x\r\n"),
    (b"a\r\n..b\r\n...c\r\n", b"a\r\n.b\r\n..c\r\n"),
    (b"a\nb\rc\r\n", b"a\r\nb\r\nc\r\n"),
    (b"a\n.\nb\r\n", b"a\r\n.\r\nb\r\n"),      # a bare-LF dot line stays content
])
def test_unstuff_and_normalise(raw, body):
    assert unstuff_and_normalise(raw) == body


def received(n: int) -> bytes:
    return b"".join(b"Received: from hop%d by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i for i in range(n))


@pytest.mark.parametrize("body, refusal", [
    (b"Subject: hi\r\n\r\nhello\r\n", None),
    (received(50) + b"\r\nbody\r\n", None),
    (received(51) + b"\r\nbody\r\n", MAIL_LOOP),
    (b"Subject: x\r\n\r\n" + received(60), None),              # Received lines in the body do not count
    (b"Subject: x\r\n\r\n" + b"x" * 998 + b"\r\n", None),
    (b"Subject: x\r\n\r\n" + b"x" * 999 + b"\r\n", LINE_TOO_LONG),
    (b"x" * 999, None),                                         # 998 and a CR
    (b"x" * 1000, LINE_TOO_LONG),
], ids=["plain", "50 hops", "51 hops", "hops in the body", "998", "999", "999 no LF", "1000 no LF"])
def test_protocol_refusal(body, refusal):
    assert protocol_refusal(body) == refusal


def test_has_long_line_counts_octets_before_the_line_feed():
    assert not has_long_line(b"x" * 998 + b"\r\n")
    assert has_long_line(b"x" * 999 + b"\r\n")
    assert not has_long_line(b"")


ARRIVAL = Arrival(Peer(ip="192.0.2.1"), "a@example.org", ("bob@localhost",), b"Subject: x\r\n\r\nhi\r\n")


def check(verdict: Verdict, seen: list):
    async def _check(message: Arrival) -> Verdict:
        seen.append(message)
        return verdict
    return _check


async def test_run_checks_collects_headers_and_stops_at_the_first_refusal():
    seen: list = []
    refuse = SmtpReply(550, "5.7.1", "SPF says no")
    checks = [check(Verdict(header=b"A: 1\r\n"), seen), check(Verdict(header=b"B: 2\r\n"), seen)]
    assert await run_checks(checks, ARRIVAL) == Verdict(header=b"A: 1\r\nB: 2\r\n")
    assert seen == [ARRIVAL, ARRIVAL]
    checks.insert(1, check(Verdict(refusal=refuse), seen))
    assert (await run_checks(checks, ARRIVAL)).refusal == refuse
    assert len(seen) == 4                     # the check after the refusal did not run
    assert await run_checks((), ARRIVAL) == Verdict()


@pytest.mark.parametrize("extended, tls, authenticated, proto", [
    (False, False, False, "SMTP"), (True, False, False, "ESMTP"), (True, True, False, "ESMTPS"),
    (True, True, True, "ESMTPSA"), (True, False, True, "ESMTPA"),
])
def test_with_protocol(extended, tls, authenticated, proto):
    assert with_protocol(extended=extended, tls=tls, authenticated=authenticated) == proto


@pytest.mark.parametrize("helo, ip, recipients, first_line, for_part", [
    ("client.test", "127.0.0.1", ["bob@localhost"], "Received: from client.test ([127.0.0.1])", True),
    ("", "::1", ["a@x.test", "b@x.test"], "Received: from unknown ([IPv6:::1])", False),
    ("bad helo\x00", "192.0.2.1", [], "Received: from bad?helo? ([192.0.2.1])", False),
])
def test_received_header(helo, ip, recipients, first_line, for_part):
    header = received_header(helo=helo, ip=ip, hostname="mail.test", protocol="ESMTPS", msg_id="Q1",
                             recipients=recipients).decode()
    lines = header.split("\r\n")
    assert lines[0] == first_line
    assert lines[1] == "\tby mail.test (mailtui) with ESMTPS id Q1" + ("" if for_part else ";")
    assert ("\tfor <bob@localhost>;" in lines) is for_part
    assert re.fullmatch(r"\t\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}", lines[-2])
    assert header.endswith("\r\n") and lines[-1] == ""


async def test_a_rewrite_is_what_the_next_check_sees_and_quarantine_carries_on():
    seen: list = []
    rewritten = b"Subject: x\r\n\r\nrewritten\r\n"
    checks = [check(Verdict(body=rewritten, header=b"A: 1\r\n"), seen),
              check(Verdict(quarantine=True), seen), check(Verdict(), seen)]
    verdict = await run_checks(checks, ARRIVAL)
    assert verdict == Verdict(header=b"A: 1\r\n", body=rewritten, quarantine=True)
    assert [m.body for m in seen] == [ARRIVAL.body, rewritten, rewritten]
    assert (await run_checks([check(Verdict(), [])], ARRIVAL)).body is None      # unchanged: no copy
