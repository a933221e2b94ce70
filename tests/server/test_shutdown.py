"""Stopping with sessions open in every protocol, inside TLS: quick, clean, nothing left pending.

A TLS connection closes only when the peer answers our close_notify; a
client that is not reading never does, and asyncio waits up to 30 s for it.
The servers drop such connections after ``wire.SHUTDOWN_WAIT``, and every
session task is finished before the core says it has stopped (a task left
waiting is "destroyed but it is pending" when the process exits).
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import poplib
import signal
import smtplib
import socket
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest
from conftest import start_server
from harness import PASSWORD, mailtui, tls_context
from test_crash import free_port, wait_port

pytestmark = pytest.mark.timeout(60)
ALICE = "alice@localhost"
BOB = "bob@localhost"          # a second maildrop: POP3 allows one session on each
TIMEOUT = 5


def open_sessions(stack: ExitStack, ports: dict[str, int], *, half_open: bool = True) -> imaplib.IMAP4:
    """One session per protocol and listener, each inside TLS and left idle; returns the IMAP one in IDLE.

    The clients are not reading when the server stops: nobody answers its close_notify.
    """
    ctx = tls_context()

    def opened(client, close):
        stack.callback(close)      # the socket only: no QUIT or LOGOUT to a server that is gone
        return client

    pop = opened(poplib.POP3("127.0.0.1", ports["pop3"], timeout=TIMEOUT), lambda: pop.close())
    pop.stls(ctx)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    pops = opened(poplib.POP3_SSL("127.0.0.1", ports["pop3s"], timeout=TIMEOUT, context=ctx), lambda: pops.close())
    pops.user(BOB)
    pops.pass_(PASSWORD)
    imap = opened(imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=TIMEOUT), lambda: imap.shutdown())
    imap.starttls(ctx)
    imap.login(ALICE, PASSWORD)
    imap.select("INBOX")
    imap.send(b"i1 IDLE\r\n")
    assert imap.readline() == b"+ idling\r\n"
    imaps = opened(imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], timeout=TIMEOUT, ssl_context=ctx),
                   lambda: imaps.shutdown())
    imaps.login(ALICE, PASSWORD)
    smtp = opened(smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=TIMEOUT), lambda: smtp.close())
    smtp.starttls(context=ctx)
    smtp.ehlo("shutdown.test")
    smtps = opened(smtplib.SMTP_SSL("127.0.0.1", ports["submissions"], timeout=TIMEOUT, context=ctx),
                   lambda: smtps.close())
    smtps.ehlo("shutdown.test")
    if half_open:       # and one client that connects to an implicit-TLS port and never starts its handshake
        stack.enter_context(socket.create_connection(("127.0.0.1", ports["imaps"]), timeout=TIMEOUT))
    return imap


def serve_config(tmp_path, ports: dict[str, int]):
    ep = {name: f'["127.0.0.1:{port}"]' for name, port in ports.items()}
    path = tmp_path / "serve.toml"
    path.write_text(
        f'[server]\nhostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\nlocal_domains = ["localhost"]\n'
        f'[smtp]\nlisten = {ep["smtp"]}\n[submission]\ntls_listen = {ep["submissions"]}\n'
        f'[pop3]\nlisten = {ep["pop3"]}\ntls_listen = {ep["pop3s"]}\n'
        f'[imap]\nlisten = {ep["imap"]}\ntls_listen = {ep["imaps"]}\n'
        f'[dns]\nnameservers = ["127.0.0.1:1"]\ntimeout = 0.5\n')
    return path


@pytest.mark.parametrize("loop", ["asyncio", "auto"])     # auto: uvloop where it is installed
def test_sigterm_ends_serve_quickly_and_cleanly_with_tls_sessions_open(tmp_path, loop):
    ports = {name: free_port() for name in ("smtp", "submissions", "pop3", "pop3s", "imap", "imaps")}
    config = serve_config(tmp_path, ports)
    for address in (ALICE, BOB):
        added = mailtui("mailbox", "add", address, "--password-stdin", config=config, stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
    proc = subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(config), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ, MAILTUI_LOOP=loop))
    try:
        for port in ports.values():
            wait_port(port, proc)
        with ExitStack() as stack:
            imap = open_sessions(stack, ports)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            took = time.monotonic() - started
            assert imap.readline() == b"* BYE Server shutting down\r\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    errors = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, errors
    assert took < 5, f"SIGTERM took {took:.1f} s"
    for sign in ("Task was destroyed", "Traceback", "never retrieved", "ERROR"):
        assert sign not in errors, errors


def test_stop_finishes_every_session_task(tmp_path):
    """In process: once Core.stop() returns, no task of any session is still pending, and it was quick."""
    listeners = {"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"]}
    server = start_server(tmp_path, submission=listeners, pop3=listeners, imap=listeners)
    core = server.core
    try:
        server.add_mailbox(ALICE)
        server.add_mailbox(BOB)
        ports = {name: core.port(name) for name in ("smtp", "submissions", "pop3", "pop3s", "imap", "imaps")}
        with ExitStack() as stack:
            # No half-open client here: until its handshake ends a connection has no session, only
            # asyncio's own accept task, which asyncio.run() cancels at exit (uvloop has none).
            open_sessions(stack, ports, half_open=False)

            async def stop_and_look() -> tuple[float, list[asyncio.Task]]:
                started = time.monotonic()
                await core.stop()
                took = time.monotonic() - started
                return took, [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]

            took, pending = server.run(stop_and_look(), timeout=15)
        assert pending == []
        assert took < 3, f"Core.stop() took {took:.1f} s"
    finally:
        server.stop()
