"""No passwords in clear, over real sockets: what loopback may do, and what TLS from the start changes.

A client on another host cannot be tested here (tests stay on loopback):
``test_pop3_session.py`` drives the session with a network peer's address.
"""

from __future__ import annotations

import asyncio
import poplib

import pytest
from harness import PASSWORD, tls_context

from mailtui.events import ConnectionClosed, SessionChanged

pytestmark = pytest.mark.timeout(60)

MSG = b"Subject: hi\r\n\r\nhello\r\n"


def test_loopback_logs_in_without_tls(server):
    server.add_mailbox("alice@localhost")
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    try:
        capa = client.capa()
        assert "USER" in capa and capa["SASL"] == ["PLAIN"] and "STLS" in capa
        client.user("alice@localhost")
        assert client.pass_(PASSWORD).startswith(b"+OK")
    finally:
        client.quit()


def test_a_session_on_an_implicit_tls_listener_starts_inside_tls(server):
    """POP3S (995-style): no STLS offered, passwords welcome, and the session says TLS from the start."""
    server.add_mailbox("alice@localhost")
    server.call(server.core.maildirs.deliver_sync, "alice@localhost", MSG)
    listener = server.run(asyncio.start_server(server.core.pop3.handle, "127.0.0.1", 0,
                                               ssl=server.core.tls_context))
    try:
        client = poplib.POP3_SSL("127.0.0.1", listener.sockets[0].getsockname()[1], timeout=10,
                                 context=tls_context())
        capa = client.capa()
        assert "USER" in capa and capa["SASL"] == ["PLAIN"] and "STLS" not in capa
        client.user("alice@localhost")
        client.pass_(PASSWORD)
        assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == MSG
        client.quit()
    finally:
        server.call(listener.close)   # on its own loop: asyncio servers are not thread-safe
    server.wait_for(lambda: server.events_of(ConnectionClosed), what="the session's end")
    assert all(e.tls for e in server.events_of(SessionChanged))
    assert server.call(server.core.store.recent, "connections")[0]["tls"] is True
