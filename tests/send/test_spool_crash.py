"""kill -9 around the spool's one write: a message is delivered exactly once, or was never acknowledged.

A real ``mailtui serve`` is started with one hook (a few lines run before
``mailtui`` itself, see ``HOOKS``) that stops it at an exact moment:

*between write and fsync*: the ``.msg`` file is written whole (the page
cache has it) and the server dies in its fsync, before the 250. The client
sees the connection drop; the next start finds a complete file and delivers
it - once (the client, not told 250, may send it again: SMTP is at least
once; this test's client does not).

*after the 250*: the first delivery attempt is held; the test kills the
server there. The next start delivers the message once, from the ``.msg``
alone (no state file was written: no attempt ended).

The remote MX is tests/send/sink.py, which counts a message once it has
written its 250.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time

import pytest
from dnsworld import MX_HOST_2, free_port
from sink import ThreadedSink
from test_crash import wait_port
from test_faults import Serve

from mailtui.store.spoolfile import read_head

pytestmark = pytest.mark.timeout(120)

WAIT = 20.0
MESSAGE = b"Message-ID: <once@crash.test>\r\nSubject: once\r\n\r\nexactly once\r\n"

HOOKS = {
    "between write and fsync": """
import os, signal
real_fsync = os.fsync
def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".msg"):
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
""",
    "after the 250": """
import asyncio, pathlib, sys
from mailtui.send.attempt import TransferAgent
async def attempt(self, item, bounce_requested):
    pathlib.Path(MARKER).write_text(item.id)
    await asyncio.Event().wait()
TransferAgent.attempt = attempt
""",
}


PRELUDE = "import sys\nCONFIG, MARKER = sys.argv[1:3]\n"
LAUNCH = ("import runpy\nsys.argv = ['mailtui', '--config', CONFIG, 'serve']\n"
          "runpy.run_module('mailtui', run_name='__main__')\n")


def start_hooked(serve: Serve, hook: str, marker) -> None:
    """``mailtui serve`` with ``hook`` run first (``MARKER``: a file the hook may write)."""
    with open(serve.output, "ab") as out:
        serve.proc = subprocess.Popen([sys.executable, "-c", PRELUDE + hook + LAUNCH, str(serve.config), str(marker)],
                                      stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    wait_port(serve.port, serve.proc)


def send(serve: Serve) -> bool:
    """Send MESSAGE to far@mx.test; whether the server said 250."""
    try:
        with smtplib.SMTP("127.0.0.1", serve.port, timeout=10) as client:
            client.sendmail("a@crash.test", ["far@mx.test"], MESSAGE)
        return True
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        return False


@pytest.mark.parametrize("moment", list(HOOKS))
def test_kill9_around_the_spool_write_delivers_exactly_once(moment, tmp_path, dns_world):
    mx_port = free_port(("127.0.0.1", "127.0.0.2", MX_HOST_2))
    serve = Serve(tmp_path, f'[dns]\nnameservers = ["{dns_world.endpoint}"]\ntimeout = 1.0\n'
                            f'[delivery]\nremote_port = {mx_port}\nretry_intervals = [0.3]\n'
                            f'connect_timeout = 2.0\ncommand_timeout = 5.0\n').setup()
    marker = tmp_path / "attempt-started"
    with ThreadedSink(MX_HOST_2, mx_port) as sink:
        try:
            start_hooked(serve, HOOKS[moment], marker)
            acknowledged = send(serve)
            if moment == "between write and fsync":
                assert not acknowledged and serve.proc.wait(WAIT) == -signal.SIGKILL
            else:
                assert acknowledged
                deadline = time.monotonic() + WAIT
                while not marker.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert marker.exists(), "the delivery attempt never started"
                serve.kill()
            [spooled] = serve.spool()
            assert read_head(spooled) is not None, "the .msg file is not whole"
            assert [p.suffix for p in spooled.parent.iterdir() if p.is_file()] == [".msg"]
            assert sink.messages == []

            serve.start()
            deadline = time.monotonic() + WAIT
            while (serve.spool() or not sink.messages) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not serve.spool(), f"the queue did not drain ({moment})"
            time.sleep(0.5)                    # a second copy would be on its way by now
            assert serve.stop() == 0
        finally:
            serve.kill()
    assert [m.body.endswith(b"\r\n\r\nexactly once\r\n") for m in sink.messages] == [True]
    assert "Traceback" not in serve.text()
