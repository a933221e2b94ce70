"""The guard of mailtui.receive.aiosmtpd_compat: what it takes from aiosmtpd 1.4 is still there.

If one of these fails after an aiosmtpd upgrade, fix aiosmtpd_compat.py (and
only it), or keep the pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl

import aiosmtpd
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, _AuthMechAttr
from harness import make_config, tls_context

from mailtui.receive.aiosmtpd_compat import (
    DATA_READ_LIMIT,
    IDENT,
    PRIVATE_ATTRIBUTES,
    PRIVATE_METHODS,
    READER_ATTRIBUTES,
    Engine,
)
from mailtui.receive.smtp import SmtpSession
from mailtui.server.core import Core
from mailtui.server.tls import make_self_signed

WAIT = 5.0


class Probe(Engine):
    """The smallest session: the engine with fast_init and no verbs of its own."""

    def __init__(self):
        self.fast_init(data_size_limit=1000, hostname="probe.test", tls_context=None, timeout=30,
                       auth_require_tls=False)


async def connected(factory, greeting: bool) -> tuple[object, asyncio.StreamReader, asyncio.StreamWriter,
                                                     asyncio.Server]:
    """A protocol instance from ``factory`` with a real loopback client (past the greeting)."""
    made: list = []

    def make():
        made.append(factory())
        return made[-1]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    if greeting:
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"220 ")
    return made[0], reader, writer, server


@pytest.fixture
async def sessions():
    """Connect protocol instances; close the clients and servers afterwards."""
    opened: list = []

    async def _connect(factory, *, greeting: bool = True):
        proto, reader, writer, server = await connected(factory, greeting)
        opened.append((writer, server))
        return proto, reader, writer

    yield _connect
    for writer, server in opened:
        writer.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)


def test_aiosmtpd_is_the_pinned_series():
    assert aiosmtpd.__version__.startswith("1.4."), aiosmtpd.__version__


async def test_the_private_names_exist_on_a_real_aiosmtpd_session(sessions):
    plain, _, _ = await sessions(lambda: SMTP(handler=object(), auth_require_tls=False))
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(plain, name)]
    assert not missing, f"aiosmtpd no longer has {missing}"
    assert [name for name in PRIVATE_METHODS if not callable(getattr(SMTP, name, None))] == []
    reader = plain._reader
    assert [name for name in READER_ATTRIBUTES if not hasattr(reader, name)] == []
    assert isinstance(reader._buffer, bytearray) and reader._limit == SMTP.line_length_limit
    assert plain._writer.transport is plain.transport
    assert plain._tls_protocol is None


def test_the_signatures_the_engine_overrides_or_calls():
    def params(func):
        return list(inspect.signature(func).parameters)

    assert params(SMTP._authenticate) == ["self", "mechanism", "auth_data"]
    assert params(SMTP.auth_PLAIN) == params(SMTP.auth_LOGIN) == ["self", "_", "args"]
    assert params(SMTP._timeout_cb) == params(SMTP._set_rset_state) == params(SMTP._handle_client) == ["self"]
    assert _AuthMechAttr._fields == ("method", "is_builtin")
    assert LoginPassword._fields == ("login", "password")
    result = AuthResult(success=False, handled=False, message="x", auth_data=1)
    assert (result.success, result.handled, result.message, result.auth_data) == (False, False, "x", 1)
    assert AuthResult(success=False).handled is True  # aiosmtpd already answered


async def test_fast_session_init_matches_aiosmtpd(tmp_path):
    """SmtpSession skips aiosmtpd's per-connection reflection; it must set up the same state."""
    core = Core(make_config(tmp_path / "data"))
    await core.start()
    try:
        fast = core.smtp.factory()
        slow = SmtpSession.__new__(SmtpSession)
        SMTP.__init__(slow, handler=slow, data_size_limit=fast.data_size_limit, enable_SMTPUTF8=True,
                      hostname=fast.hostname, ident=fast.__ident__, tls_context=fast.tls_context,
                      timeout=fast._timeout_duration, auth_require_tls=fast._auth_require_tls)
        missing = set(vars(slow)) - set(vars(fast))
        assert not missing, f"aiosmtpd sets attributes the fast init does not: {missing}"
        for table in ("_auth_methods", "_handle_hooks", "_smtp_methods"):
            assert getattr(fast, table).keys() == getattr(slow, table).keys(), table
            for name, method in getattr(fast, table).items():
                bound = method.method if table == "_auth_methods" else method
                assert bound.__self__ is fast
        for name, value in vars(slow).items():
            if not isinstance(value, (dict, asyncio.StreamReader)) and not callable(value) \
                    and name not in ("_stream_reader_wr", "_strong_reader", "_closed", "_loop", "loop"):
                expected = fast if value is slow else value
                assert getattr(fast, name) == expected, name
    finally:
        await core.stop()


async def test_data_stream_reads_in_chunks_puts_back_and_restores_the_limit(sessions):
    limits: list[int] = []

    class Reading(Probe):
        async def smtp_XDATA(self, arg):
            with self.data_stream() as stream:
                limits.append(self._reader._limit)
                data = b""
                while b"\r\n.\r\n" not in data:
                    data += await stream.read(1024)
                end = data.index(b"\r\n.\r\n") + 5
                stream.unread(data[end:])       # the pipelined NOOP goes back to the command loop
                stream.alive()
            limits.append(self._reader._limit)
            await self.push(f"250 read {end}")

    probe, reader, writer = await sessions(Reading)
    assert probe.__ident__ == IDENT and not probe.tls_active
    writer.write(b"XDATA\r\nsome body\r\n.\r\nNOOP\r\n")
    assert await asyncio.wait_for(reader.readline(), WAIT) == b"250 read 14\r\n"
    assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"250 OK")
    assert limits == [DATA_READ_LIMIT, SMTP.line_length_limit]


async def test_write_now_and_write_last_reach_the_client(sessions):
    probe, reader, _ = await sessions(Probe)
    probe.write_now(b"421 first\r\n")
    await probe.write_last(b"421 last\r\n", timeout=WAIT)
    assert await asyncio.wait_for(reader.read(), WAIT) == b"421 first\r\n421 last\r\n"


async def test_admit_can_end_a_connection_before_the_greeting(sessions):
    class Refusing(Probe):
        async def admit(self) -> bool:
            await self.write_last(b"421 not now\r\n", timeout=WAIT)
            return False

    _, reader, _ = await sessions(Refusing, greeting=False)
    assert await asyncio.wait_for(reader.read(), WAIT) == b"421 not now\r\n"


async def test_idle_timeout_and_reset_hooks(sessions):
    calls: list[str] = []

    class Hooked(Probe):
        def __init__(self):
            self.fast_init(data_size_limit=1000, hostname="probe.test", tls_context=None, timeout=0.3,
                           auth_require_tls=False)

        def on_reset(self) -> None:
            calls.append("reset")

        def on_idle_timeout(self) -> bool:
            calls.append("idle")
            return True                 # aiosmtpd closes the connection as usual

    _, reader, writer = await sessions(Hooked)
    writer.write(b"RSET\r\n")
    assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"250")
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    assert calls == ["reset", "reset", "idle"]   # connection_made, RSET, then the timer


async def test_a_connection_that_began_in_tls_is_tls_active_to_its_end(tmp_path):
    """Implicit TLS (RFC 8314): no STARTTLS offered, AUTH at once, and tls_active even after the hang-up."""
    cert, key = make_self_signed("probe.test")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    made: list[Probe] = []

    class Ehlo(Probe):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            return responses

    server = await asyncio.get_running_loop().create_server(lambda: made.append(Ehlo()) or made[-1],
                                                            "127.0.0.1", 0, ssl=server_tls)
    try:
        port = server.sockets[0].getsockname()[1]
        connecting = asyncio.open_connection("127.0.0.1", port, ssl=tls_context())
        reader, writer = await asyncio.wait_for(connecting, WAIT)
        assert (await asyncio.wait_for(reader.readline(), WAIT)).startswith(b"220 ")
        writer.write(b"EHLO client.test\r\n")
        lines = [await asyncio.wait_for(reader.readline(), WAIT)]
        while lines[-1][3:4] == b"-":
            lines.append(await asyncio.wait_for(reader.readline(), WAIT))
        assert b"250-AUTH LOGIN PLAIN\r\n" in lines and not any(b"STARTTLS" in line for line in lines)
        probe = made[0]
        assert probe.tls_active and probe.began_in_tls and probe._tls_protocol is None
        writer.close()
        for _ in range(200):
            if probe.transport is None:
                break
            await asyncio.sleep(0.01)
        assert probe.transport is None and probe.tls_active   # connection_lost ran; the answer stays
    finally:
        server.close()
