"""kill -9 in the middle of a reused outbound connection loses nothing and sends nothing twice.

A real ``mailtui serve`` relays three messages for mx.test (dnsmasq: its best
MX is down, the second is a loopback sink, tests/send/sink.py) one after the
other over one cached connection (``max_per_domain = 1``). The sink holds the
second message's transaction at a chosen moment, the test sends SIGKILL, the
sink lets go, and a restarted server finishes the queue. Then the sink's
count of each message must be exactly one.

What the test can see: every message the sink took (it counts a message when
it has written its 250, as an MTA that has stored it). The moments: *between*
transactions (the second one's RSET has arrived, nothing answered yet) and
*mid-DATA* (the body has arrived, no 250 yet). In both, the first message's
spool files are gone before the kill (checked), so it must not come again;
the second never got its 250, so it must come again, once.

What it cannot see: the window after the remote's 250 and before the spool
is updated. A kill there sends that message again after the restart (SMTP
is at least once, for mailtui as for any MTA); the test never kills there.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from email import message_from_bytes

import pytest
from dnsworld import MX_HOST_2, free_port
from sink import Link, Message, ThreadedSink
from test_faults import Serve

pytestmark = pytest.mark.timeout(120)

WAIT = 20.0


def tag_of(message: Message) -> str:
    return message_from_bytes(message.body)["Message-ID"].strip("<>").split("@")[0]


class Trap:
    """A sink hook that holds the second transaction of a connection at ``verb``, once."""

    def __init__(self, verb: str):
        self.verb = verb
        self.reached = threading.Event()
        self.release = threading.Event()

    async def __call__(self, link: Link, verb: str) -> str | None:
        second = link.transactions >= 2 or verb == "RSET"
        if second and verb == self.verb and not self.reached.is_set():
            self.reached.set()
            await asyncio.to_thread(self.release.wait, WAIT)
        return None


@pytest.mark.parametrize("moment, verb", [("between transactions", "RSET"), ("mid-DATA", ".")])
def test_kill9_on_a_reused_connection(moment, verb, tmp_path, dns_world):
    mx_port = free_port(("127.0.0.1", "127.0.0.2", MX_HOST_2))
    trap = Trap(verb)
    serve = Serve(tmp_path, f'[dns]\nnameservers = ["{dns_world.endpoint}"]\ntimeout = 1.0\n'
                            f'[delivery]\nremote_port = {mx_port}\nretry_intervals = [0.3]\n'
                            f'max_per_domain = 1\nconnect_timeout = 2.0\ncommand_timeout = 5.0\n'
                            f'connection_cache_time = 30.0\n').setup()
    with ThreadedSink(MX_HOST_2, mx_port, hook=trap) as sink:
        try:
            serve.start()
            with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as client:
                for n in (1, 2, 3):
                    client.sendmail("a@crash.test", [f"far{n}@mx.test"],
                                    f"Message-ID: <m{n}@crash.test>\r\n\r\nmessage {n}\r\n")
            assert trap.reached.wait(WAIT), f"the second transaction never reached {verb}"
            assert [tag_of(m) for m in sink.messages] == ["m1"]
            spooled = [p.read_text() for p in serve.spool()]
            assert not any("far1@mx.test" in text for text in spooled), "m1 not settled yet"
            assert sum("far2@mx.test" in text for text in spooled) == 1
            serve.kill()
            trap.release.set()

            serve.start()
            deadline = time.monotonic() + WAIT
            while (serve.spool() or len(sink.messages) < 3) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not serve.spool(), f"the queue did not drain ({moment})"
            assert serve.stop() == 0
        finally:
            trap.release.set()
            serve.kill()
    tags = sorted(tag_of(m) for m in sink.messages)
    assert tags == ["m1", "m2", "m3"], f"taken by the sink: {tags} ({moment})"
    assert sink.links[0].transactions == 2      # m1, then m2 on the same (reused) connection
    assert "Traceback" not in serve.text()
