"""The control socket: admin commands reach the running server; consoles attach.

The server is the single owner of its state files. While it runs, the CLI's
``client``, ``mailbox`` and ``queue`` commands are sent here (one JSON line
each way over a Unix socket in the data directory, mode 0600) so they take
effect at once and never race the server's own writes. Two requests are not
admin verbs: ``snapshot`` (the state an attached console shows, in parts)
and ``attach`` (a snapshot, then the live event stream: see
:mod:`.attach`). Only the server's own user (or root) is answered: the
socket's mode says so, and the peer's credentials are checked too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from .attach import AttachHub
from .verbs import Admin, AdminError

log = logging.getLogger(__name__)
MAX_REQUEST = 1 << 20


class ControlError(Exception):
    pass


class Unreachable(ControlError):
    """Nothing answers on the socket: no server runs (or it is starting, or stopping)."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / "control.sock"


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a Unix socket (None where the OS cannot say)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[1]


def allowed(uid: int | None) -> bool:
    return uid is None or uid in (0, os.getuid())


class ControlServer:
    def __init__(self, admin: Admin, path: Path, hub: AttachHub | None = None):
        self.admin = admin
        self.path = Path(path)
        self.hub = hub
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self.hub is not None:
            await self.hub.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):          # (not wait_for: see open_stream)
                line = await reader.readline()
            if not allowed(peer_uid(writer.get_extra_info("socket"))):
                writer.write(json.dumps({"ok": False, "error": "not the server's user"}).encode() + b"\n")
                return
            try:
                request = json.loads(line)
                op, args = str(request["op"]), dict(request.get("args") or {})
                if op == "attach" and self.hub is not None:
                    await self.hub.serve(reader, writer)
                    return
                reply: dict[str, Any] = {"ok": True, "result": await self._answer(op, args)}
            except AdminError as exc:
                reply = {"ok": False, "error": str(exc)}
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": f"bad control request: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except Exception:
            log.exception("control request failed")
        finally:
            writer.close()

    async def _answer(self, op: str, args: dict[str, Any]) -> Any:
        if op == "snapshot" and self.hub is not None:
            return self.hub.snapshot(args.get("parts"))
        return await self.admin.call(op, args)


def call(data_dir: Path, op: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one request to the running server; raises ControlError with its answer."""
    path = socket_path(data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlError(f"cannot reach the running server at {path}: {exc.strerror}") from None
        sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError("the server gave no answer") from None
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "request failed"))
    return reply.get("result")


STREAM_LIMIT = 64 << 20    # the longest line an attached console reads (a snapshot is one line)


async def request(data_dir: Path, op: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """:func:`call`, for a client on an event loop; a refusal raises AdminError with the server's words."""
    path = socket_path(data_dir)

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=STREAM_LIMIT)
        try:
            writer.write(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()

    try:
        async with asyncio.timeout(timeout):   # (not wait_for: see open_stream)
            answer = await exchange()
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach the running server at {path}: "
                           f"{getattr(exc, 'strerror', None) or 'no answer'}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise ControlError("the server gave no answer") from None
    if not reply.get("ok"):
        raise AdminError(reply.get("error", "request failed"))
    return reply.get("result")


async def open_stream(data_dir: Path, timeout: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict]:
    """Attach: the stream's reader and writer, and the snapshot that opens it (raises ControlError).

    The waits are bounded with ``asyncio.timeout``, not ``wait_for``: on Python
    3.11 ``wait_for`` drops a cancellation that comes just as the snapshot
    arrives, and a console told to detach then followed the stream for ever.
    """
    path = socket_path(data_dir)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=STREAM_LIMIT)
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach the running server at {path}: "
                           f"{getattr(exc, 'strerror', None) or 'no answer'}") from None
    try:
        writer.write(b'{"op":"attach"}\n')
        async with asyncio.timeout(timeout):
            first = json.loads(await reader.readline())
        return reader, writer, first["snapshot"]
    except (OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
        writer.close()
        raise ControlError(f"the server at {path} did not attach this console ({exc!r})") from None
    except asyncio.CancelledError:   # told to stop while attaching: leave no half-open stream behind
        writer.close()
        raise
