"""The control socket: admin commands reach the running server.

The server is the single owner of its state files. While it runs, the CLI's
``client``, ``mailbox`` and ``queue`` commands are sent here (one JSON line
each way over a Unix socket in the data directory, mode 0600) so they take
effect at once and never race the server's own writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from .verbs import Admin, AdminError

log = logging.getLogger(__name__)
MAX_REQUEST = 1 << 20


class ControlError(Exception):
    pass


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / "control.sock"


class ControlServer:
    def __init__(self, admin: Admin, path: Path):
        self.admin = admin
        self.path = Path(path)
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
            line = await asyncio.wait_for(reader.readline(), 30)
            try:
                request = json.loads(line)
                result = await self.admin.call(str(request["op"]), dict(request.get("args") or {}))
                reply: dict[str, Any] = {"ok": True, "result": result}
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
