"""An SMTP service's listeners: bound plain (STARTTLS offered) or implicit TLS; their sessions ended at stop.

On an implicit-TLS listener (port 465 for submission) asyncio does the TLS
handshake before the session sees the connection, so the greeting is the
first thing said inside TLS. A client that connects and never finishes the
handshake is dropped after :func:`handshake_timeout`; until it finishes it
has no session, takes no connection slot and is in no event.
"""

from __future__ import annotations

import asyncio

from ..wire import SHUTDOWN_WAIT
from .smtp import SmtpContext

HANDSHAKE_TIMEOUT = 30.0   # seconds, at most; a real client needs well under one on any network


def handshake_timeout(ctx: SmtpContext) -> float:
    """How long an implicit-TLS client may take to finish its handshake: never longer than it may idle."""
    return min(ctx.config.smtp.idle_timeout, HANDSHAKE_TIMEOUT)


async def listen(ctx: SmtpContext, host: str, port: int, *, implicit_tls: bool = False) -> asyncio.AbstractServer:
    """Listen on ``host:port`` for ``ctx``'s service (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    if not implicit_tls:
        return await loop.create_server(ctx.factory, host, port, reuse_address=True)
    if ctx.tls_context is None:
        raise ValueError("implicit TLS needs a TLS context")
    return await loop.create_server(ctx.tls_factory, host, port, reuse_address=True, ssl=ctx.tls_context,
                                    ssl_handshake_timeout=handshake_timeout(ctx))


async def end_smtp_sessions(services: list[SmtpContext]) -> None:
    """Close every SMTP session; drop those still open after ``SHUTDOWN_WAIT``; wait for their tasks.

    aiosmtpd ends a session's task only when its connection is lost, and a
    TLS connection (STARTTLS, or port 465) is only lost once the peer answers
    our close_notify, or after asyncio's 30 s: a server stopping before that
    left the tasks pending ("Task was destroyed but it is pending!").
    """
    sessions = [session for service in services for session in list(service.sessions)]
    tasks = [s.handler_task for s in sessions if s.handler_task is not None and not s.handler_task.done()]
    for session in sessions:
        if session.transport is not None:
            session.transport.close()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT)
    if pending:
        for session in sessions:
            if session.transport is not None:
                session.transport.abort()
        await asyncio.wait(pending, timeout=SHUTDOWN_WAIT)
